"""RGB-D dataset formats (torch-free): the edgedepth folder format, NYU Depth v2 labeled .mat, KITTI depth.

Folder format (what `edgedepth data synth` and later stages write)::

    ROOT/rgb/NAME.png|jpg       RGB image (any 8-bit colour PNG/JPEG)
    ROOT/depth/NAME.png         uint16 millimetres, 0 = invalid      (or)
    ROOT/depth/NAME.npy         float32 metres, 0 / NaN / inf = invalid
    ROOT/meta.json              optional: {"source", "domain", "intrinsics": 3x3,
                                 "frames": {NAME: {"domain", "pose": 4x4, "intrinsics": 3x3, "t", ...}}}
A folder without depth/ holds unlabelled frames (what `edgedepth data import` writes from a video or an
image folder): its Samples have depth None; training and evaluation refuse them, labelling reads them.

NYU Depth v2 labeled (nyu_depth_v2_labeled.mat, MATLAB v7.3 = HDF5): `images` (N,3,W,H) uint8 and
`depths` (N,W,H) float metres as h5py sees them; transposed here to HxWx3 / HxW.

KITTI depth (uint16 PNG, metres = value / 256, 0 = invalid), two layouts:
  * official depth_selection: ROOT/image/*.png + ROOT/groundtruth_depth/*.png where the depth stem is the
    image stem with its first "_image_" replaced by "_groundtruth_depth_"
    (..._sync_image_0000000005_image_02 <-> ..._sync_groundtruth_depth_0000000005_image_02), optional
    ROOT/intrinsics/<image stem>.txt (9 numbers, 3x3 row-major). ROOT may also be the depth_selection
    folder itself, in which case its val_selection_cropped/ is used.
  * simple pairs: ROOT/image/NAME.png + ROOT/depth/NAME.png (same stems).
Invalid depth (0, NaN, inf, negative) is 0 in every Sample.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import cv2
import numpy as np

from edgedepth.errors import DataError
from edgedepth.fsutil import write_bytes_atomic as _atomic_write

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
# Kinect intrinsics of the NYU Depth v2 RGB camera at 640x480 (from the dataset's toolbox).
NYU_INTRINSICS = np.array([[518.857901, 0, 325.582449], [0, 519.469611, 253.736166], [0, 0, 1]], np.float64)


@dataclass
class Sample:
    rgb: np.ndarray  # uint8 HxWx3 RGB
    depth: Optional[np.ndarray]  # float32 HxW metres, 0 = invalid; None in an unlabelled folder
    name: str
    domain: Optional[str] = None
    intrinsics: Optional[np.ndarray] = None
    pose: Optional[np.ndarray] = None
    path: str = ""

    @property
    def valid(self) -> np.ndarray:
        if self.depth is None:
            return np.zeros(self.rgb.shape[:2], bool)
        return np.isfinite(self.depth) & (self.depth > 0)


def clean_depth(depth: np.ndarray) -> np.ndarray:
    """float32 copy with every invalid value (0, NaN, inf, negative) set to 0."""
    d = np.asarray(depth, dtype=np.float32)
    return np.where(np.isfinite(d) & (d > 0), d, 0).astype(np.float32)


# -- readers ---------------------------------------------------------------------------------------
def read_rgb(path: Union[str, Path]) -> np.ndarray:
    data = _read_bytes(path)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot decode image {path}: not a valid PNG/JPEG (re-export or remove it)")
    return np.ascontiguousarray(img[..., ::-1])


def read_depth(path: Union[str, Path], png_scale: float = 1000.0) -> np.ndarray:
    """Depth in metres from a uint16 PNG (value / png_scale) or a float .npy file; invalid -> 0."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        try:
            d = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"cannot read depth {p}: {exc}") from exc
        if d.ndim == 3 and d.shape[2] == 1:
            d = d[..., 0]
        if d.ndim != 2:
            raise DataError(f"depth {p} has shape {d.shape}; expected HxW metres")
        return clean_depth(d)
    raw = cv2.imdecode(np.frombuffer(_read_bytes(p), np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DataError(f"cannot decode depth PNG {p} (corrupt or not a PNG)")
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise DataError(
            f"depth PNG {p} is {raw.dtype} with shape {raw.shape}; expected single-channel 16-bit "
            f"(millimetres for the folder format, value/256 for KITTI)"
        )
    return (raw.astype(np.float32) / np.float32(png_scale)).astype(np.float32)


def _read_bytes(path: Union[str, Path]) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _check_pair(rgb: np.ndarray, depth: np.ndarray, rgb_path, depth_path) -> None:
    if rgb.shape[:2] != depth.shape[:2]:
        raise DataError(
            f"size mismatch: {rgb_path} is {rgb.shape[1]}x{rgb.shape[0]} but {depth_path} is "
            f"{depth.shape[1]}x{depth.shape[0]} (width x height); fix or remove the pair"
        )


# -- writers ---------------------------------------------------------------------------------------
def write_sample(
    out_dir: Union[str, Path],
    name: str,
    rgb: np.ndarray,
    depth: Optional[np.ndarray],
    depth_format: str = "png",
    image_format: str = "png",
    encoded_rgb: Optional[bytes] = None,
) -> Tuple[Path, Optional[Path]]:
    """Write rgb/NAME.(png|jpg) and depth/NAME.(png mm | npy metres) atomically; returns both paths.

    encoded_rgb: the image file's bytes in image_format, written as they are (a JPEG passed through
    without re-encoding); `rgb` is then only used for its shape."""
    out = Path(out_dir)
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"rgb for {name} must be uint8 HxWx3, got {rgb.dtype} {rgb.shape}")
    if image_format not in ("png", "jpg") or depth_format not in ("png", "npy"):
        raise DataError(
            f"unsupported formats image={image_format!r} depth={depth_format!r}; "
            "use image png|jpg and depth png|npy"
        )
    if encoded_rgb is None:
        ok, enc = cv2.imencode("." + image_format, np.ascontiguousarray(rgb[..., ::-1]))
        if not ok:
            raise DataError(f"cannot encode image {name}")
        encoded_rgb = enc.tobytes()
    rgb_path = out / "rgb" / f"{name}.{image_format}"
    _atomic_write(rgb_path, encoded_rgb)
    if depth is None:
        return rgb_path, None
    d = clean_depth(depth)
    if d.shape != rgb.shape[:2]:
        raise DataError(f"depth for {name} is {d.shape} but rgb is {rgb.shape[:2]}")
    depth_path = out / "depth" / f"{name}.{depth_format}"
    if depth_format == "png":
        if d.max(initial=0) > 65.535:
            raise DataError(
                f"depth for {name} exceeds 65.5 m, the uint16-millimetre PNG limit; use depth_format='npy'"
            )
        ok, enc = cv2.imencode(".png", np.round(d * 1000).astype(np.uint16))
        if not ok:
            raise DataError(f"cannot encode depth {name}")
        _atomic_write(depth_path, enc.tobytes())
    else:
        import io

        buf = io.BytesIO()
        np.save(buf, d, allow_pickle=False)
        _atomic_write(depth_path, buf.getvalue())
    return rgb_path, depth_path


def write_meta(out_dir: Union[str, Path], meta: Dict[str, Any]) -> Path:
    path = Path(out_dir) / "meta.json"
    _atomic_write(path, json.dumps(meta, indent=1, default=_json_default).encode())
    return path


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def read_meta(root: Union[str, Path]) -> Dict[str, Any]:
    path = Path(root) / "meta.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot parse {path}: {exc}; fix or delete it") from exc
    if not isinstance(meta, dict):
        raise DataError(f"{path} must hold a JSON object")
    return meta


def _matrix(value, shape, where: str) -> Optional[np.ndarray]:
    if value is None:
        return None
    m = np.asarray(value, np.float64)
    if m.shape != shape or not np.all(np.isfinite(m)):
        raise DataError(f"{where} must be a finite {shape[0]}x{shape[1]} matrix, got shape {m.shape}")
    return m


# -- datasets --------------------------------------------------------------------------------------
class PairDataset:
    """Shared logic of the file-pair formats: a list of (name, rgb path, depth path) and lazy loading."""

    kind = "pairs"

    def __init__(self, root: Union[str, Path], skip_bad: bool = False):
        self.root = str(root)
        self.skip_bad = skip_bad
        self.skipped = 0
        self.problems: List[str] = []
        self.items: List[Tuple[str, Path, Path]] = []

    def _add_pairs(self, pairs: List[Tuple[str, Path, Optional[Path]]], partner: str) -> None:
        for name, rgb_path, depth_path in pairs:
            if depth_path is None:
                self._bad(DataError(f"{rgb_path} has no {partner} partner"))
                continue
            self.items.append((name, rgb_path, depth_path))
        if self.skip_bad:  # validate every pair up front so len() counts only good samples
            good = []
            for item in self.items:
                try:
                    self._load(*item)
                    good.append(item)
                except DataError as exc:
                    self._bad(exc)
            self.items = good

    def _bad(self, exc: DataError) -> None:
        if not self.skip_bad:
            raise exc
        self.skipped += 1
        self.problems.append(str(exc))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self.items) <= i < len(self.items):
            raise IndexError(i)
        return self._load(*self.items[i])

    @property
    def domains(self) -> List[str]:
        return [self.domain_of(n) for n, _, _ in self.items]

    def domain_of(self, name: str) -> str:
        return self.kind

    def _load(self, name: str, rgb_path: Path, depth_path: Path) -> Sample:
        raise NotImplementedError


class FolderDataset(PairDataset):
    kind = "folder"

    def __init__(self, root: Union[str, Path], skip_bad: bool = False):
        super().__init__(root, skip_bad)
        r = Path(root)
        if not (r / "rgb").is_dir():
            raise DataError(f"{root} is not a folder dataset: it needs rgb/ (and depth/) subfolders")
        self.meta = read_meta(r)
        self.frames_meta = self.meta.get("frames") or {}
        if not isinstance(self.frames_meta, dict):
            raise DataError(f"{r / 'meta.json'}: 'frames' must map frame names to objects")
        self.intrinsics = _matrix(self.meta.get("intrinsics"), (3, 3), f"{r / 'meta.json'} intrinsics")
        depths = {}
        self.labelled = (r / "depth").is_dir()  # without depth/: unlabelled frames (depth None)
        if self.labelled:
            for p in sorted((r / "depth").iterdir()):
                if p.suffix.lower() in (".png", ".npy") and not p.name.startswith("."):
                    depths.setdefault(p.stem, p)
        pairs = []
        for p in sorted((r / "rgb").iterdir()):
            if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."):
                pairs.append((p.stem, p, depths.get(p.stem)))
        if not self.labelled:
            self.items = [(name, p, None) for name, p, _ in pairs]
            return
        self._add_pairs(pairs, "depth/<name>.png|npy")

    def domain_of(self, name: str) -> str:
        fm = self.frames_meta.get(name) or {}
        return str(fm.get("domain") or self.meta.get("domain") or "unknown")

    def _load(self, name: str, rgb_path: Path, depth_path: Optional[Path]) -> Sample:
        rgb = read_rgb(rgb_path)
        depth = None
        if depth_path is not None:
            depth = read_depth(depth_path, 1000.0)
            _check_pair(rgb, depth, rgb_path, depth_path)
        fm = self.frames_meta.get(name) or {}
        where = f"{Path(self.root) / 'meta.json'} frame {name}"
        K = _matrix(fm.get("intrinsics"), (3, 3), where + " intrinsics")
        return Sample(
            rgb,
            depth,
            name,
            self.domain_of(name),
            K if K is not None else self.intrinsics,
            _matrix(fm.get("pose"), (4, 4), where + " pose"),
            str(rgb_path),
        )


class KittiDataset(PairDataset):
    kind = "kitti"

    def __init__(self, root: Union[str, Path], skip_bad: bool = False):
        super().__init__(root, skip_bad)
        r = Path(root)
        if (r / "val_selection_cropped").is_dir() and not (r / "image").is_dir():
            r = r / "val_selection_cropped"
            self.root = str(r)
        if not (r / "image").is_dir():
            raise DataError(
                f"{root} is not a KITTI depth folder: expected image/ with groundtruth_depth/ or depth/"
            )
        official = (r / "groundtruth_depth").is_dir()
        depth_dir = r / ("groundtruth_depth" if official else "depth")
        if not depth_dir.is_dir():
            raise DataError(f"{root} has image/ but neither groundtruth_depth/ nor depth/")
        self.intr_dir = r / "intrinsics"
        pairs = []
        for p in sorted((r / "image").iterdir()):
            if p.suffix.lower() not in IMAGE_EXTS or p.name.startswith("."):
                continue
            stem = p.stem.replace("_image_", "_groundtruth_depth_", 1) if official else p.stem
            d = depth_dir / f"{stem}.png"
            pairs.append((p.stem, p, d if d.exists() else None))
        self._add_pairs(pairs, f"{depth_dir.name}/ PNG")

    def _load(self, name: str, rgb_path: Path, depth_path: Path) -> Sample:
        rgb = read_rgb(rgb_path)
        depth = read_depth(depth_path, 256.0)
        _check_pair(rgb, depth, rgb_path, depth_path)
        K = None
        kp = self.intr_dir / f"{name}.txt"
        if kp.exists():
            try:
                vals = np.array(kp.read_text().split(), np.float64)
            except (OSError, ValueError) as exc:
                raise DataError(f"cannot read intrinsics {kp}: {exc}") from exc
            if vals.size != 9:
                raise DataError(f"intrinsics {kp} must hold 9 numbers (3x3 row-major), found {vals.size}")
            K = vals.reshape(3, 3)
        return Sample(rgb, depth, name, "kitti", K, None, str(rgb_path))


class NYUDataset:
    """NYU Depth v2 labeled .mat (HDF5). Samples are read lazily from the open file."""

    kind = "nyu"

    def __init__(self, path: Union[str, Path], skip_bad: bool = False):
        from edgedepth.errors import require

        h5py = require("h5py", "train")
        self.root = str(path)
        self.skipped = 0
        self.problems: List[str] = []
        try:
            self.file = h5py.File(str(path), "r")
        except OSError as exc:
            raise DataError(f"cannot open {path} as an HDF5 (MATLAB v7.3) file: {exc}") from exc
        if "images" not in self.file or "depths" not in self.file:
            raise DataError(f"{path} lacks the 'images' and 'depths' datasets of nyu_depth_v2_labeled.mat")
        self.images, self.depths = self.file["images"], self.file["depths"]
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.depths.ndim != 3:
            raise DataError(
                f"{path}: images {self.images.shape} / depths {self.depths.shape} are not the NYU "
                "layout (N,3,W,H) / (N,W,H)"
            )
        n_img, n_dep = self.images.shape[0], self.depths.shape[0]
        n = min(n_img, n_dep)
        if self.images.shape[2:] != self.depths.shape[1:]:  # every frame is unusable
            self._bad(
                DataError(
                    f"{path}: image size {self.images.shape[2:]} and depth size "
                    f"{self.depths.shape[1:]} differ (W,H)"
                ),
                skip_bad,
                max(n_img, n_dep),
            )
            n = 0
        elif n_img != n_dep:  # frames without a partner
            self._bad(
                DataError(f"{path}: {n_img} images but {n_dep} depth maps"), skip_bad, abs(n_img - n_dep)
            )
        self.index = list(range(n))
        h, w = self.images.shape[3], self.images.shape[2]
        self.intrinsics = NYU_INTRINSICS.copy()
        self.intrinsics[0] *= w / 640.0
        self.intrinsics[1] *= h / 480.0

    def _bad(self, exc: DataError, skip_bad: bool, count: int) -> None:
        if not skip_bad:
            self.file.close()
            raise exc
        self.skipped += count
        self.problems.append(str(exc))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def domains(self) -> List[str]:
        return ["nyu"] * len(self.index)

    def __getitem__(self, i: int) -> Sample:
        j = self.index[i]
        rgb = np.ascontiguousarray(np.asarray(self.images[j]).transpose(2, 1, 0)).astype(np.uint8)
        depth = clean_depth(np.asarray(self.depths[j]).T)
        return Sample(rgb, depth, f"{j:05d}", "nyu", self.intrinsics.copy(), None, f"{self.root}#{j}")


# What an uploaded label is, as a round's meta.json records it (label -> label kind); the teacher kinds
# (teacher-metric, teacher-aligned, teacher-relative) are recorded as themselves (edgedepth.teachers).
LABEL_KIND = {"depth_gt": "sensor", "depth_sensor": "sensor", "selfsup": "self-supervised"}


def dataset_depth_units(root) -> str:
    """'relative' for a folder of relative labels, else 'metres'."""
    p = Path(root)
    if not p.is_dir():
        return "metres"
    try:
        return str(read_meta(p).get("depth_units") or "metres")
    except DataError:
        return "metres"
