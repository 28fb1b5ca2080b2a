"""Opening RGB-D datasets by spec, concatenating them, and summarising them (torch-free).

A spec is a folder (auto-detected: edgedepth folder format or a KITTI layout), a .mat/.h5 file (NYU
Depth v2 labeled), or an explicit "nyu:PATH", "kitti:PATH", "folder:PATH". `open_datasets` takes a
comma-separated list of specs and concatenates them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from edgedepth.data.formats import FolderDataset, KittiDataset, NYUDataset, Sample
from edgedepth.errors import DataError

try:  # typing.Protocol is Python 3.8+
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object

KINDS = ("folder", "kitti", "nyu")


class RGBDDataset(Protocol):
    """What every dataset here provides."""

    root: str
    skipped: int

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Sample: ...

    @property
    def domains(self) -> List[str]: ...


def detect_kind(path: Path) -> str:
    """Which format a path holds ('folder', 'kitti', 'nyu'); DataError saying what was expected."""
    if path.is_file():
        if path.suffix.lower() in (".mat", ".h5", ".hdf5"):
            return "nyu"
        raise DataError(f"{path} is a file but not an NYU .mat/.h5; give a dataset folder or a .mat file")
    if not path.is_dir():
        raise DataError(f"dataset {path} does not exist")
    if (path / "rgb").is_dir():
        return "folder"
    if (path / "image").is_dir() or (path / "val_selection_cropped").is_dir():
        return "kitti"
    raise DataError(
        f"cannot tell the format of {path}: expected rgb/+depth/ (folder format), image/+"
        "groundtruth_depth/ or image/+depth/ (KITTI), or an NYU .mat file; or prefix the path "
        "with folder:, kitti: or nyu:"
    )


def resolve_spec(spec: str) -> Tuple[str, Path]:
    """(kind, path) of one dataset spec (DIR, FILE.mat, folder:/kitti:/nyu:PATH) without reading it;
    DataError when the path does not exist or its format cannot be told. Every command that takes
    datasets (data info, train, eval, ...) checks its specs with this, so they accept the same ones."""
    spec = str(spec).strip()
    kind = None
    for k in KINDS:
        if spec.startswith(k + ":"):
            kind, spec = k, spec[len(k) + 1 :]
            break
    if not spec:
        raise DataError("empty dataset path")
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"dataset {path} does not exist; create one with `edgedepth data synth`, or give "
                        "a folder with rgb/ and depth/, a KITTI folder or an NYU .mat file")
    if kind is None:
        kind = detect_kind(path)
    return kind, path


def open_dataset(spec: str, skip_bad: bool = False) -> RGBDDataset:
    """Open one dataset. skip_bad=True skips (and counts in .skipped) bad or unpaired files."""
    kind, path = resolve_spec(spec)
    if kind == "nyu":
        return NYUDataset(path, skip_bad=skip_bad)
    if kind == "kitti":
        return KittiDataset(path, skip_bad=skip_bad)
    return FolderDataset(path, skip_bad=skip_bad)


class ConcatDataset:
    """Several datasets as one; index i runs through them in order."""

    def __init__(self, parts: Sequence[RGBDDataset]):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.root = ",".join(str(p.root) for p in self.parts)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> Sample:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.parts[k][i - int(self.offsets[k])]

    @property
    def skipped(self) -> int:
        return sum(p.skipped for p in self.parts)

    @property
    def domains(self) -> List[str]:
        return [d for p in self.parts for d in p.domains]


def open_datasets(specs: str, skip_bad: bool = False) -> ConcatDataset:
    """Open a comma-separated list of dataset specs as one concatenated dataset."""
    items = [s.strip() for s in str(specs).split(",") if s.strip()]
    if not items:
        raise DataError("no dataset given; pass DIR or DIR,DIR,...")
    return ConcatDataset([open_dataset(s, skip_bad=skip_bad) for s in items])


def dataset_info(ds: RGBDDataset, max_samples: int = 2000) -> Dict[str, Any]:
    """Count, domains, resolutions and depth statistics (over up to max_samples evenly spaced samples)."""
    n = len(ds)
    domains: Dict[str, int] = {}
    for d in ds.domains:
        domains[d] = domains.get(d, 0) + 1
    idx = np.unique(np.linspace(0, n - 1, min(n, max_samples)).astype(int)) if n else []
    sizes: Dict[str, int] = {}
    valid_frac, lo, hi, med = [], [], [], []
    for i in idx:
        s = ds[int(i)]
        key = f"{s.rgb.shape[0]}x{s.rgb.shape[1]}"
        sizes[key] = sizes.get(key, 0) + 1
        v = s.valid
        valid_frac.append(float(v.mean()))
        if v.any():
            dv = s.depth[v]
            lo.append(float(dv.min()))
            hi.append(float(dv.max()))
            med.append(float(np.median(dv)))
    info = {
        "root": str(ds.root),
        "count": n,
        "skipped": int(ds.skipped),
        "domains": domains,
        "resolutions": sizes,
        "sampled": len(idx),
    }
    if lo:
        info["depth"] = {
            "min": min(lo),
            "max": max(hi),
            "median_of_medians": float(np.median(med)),
            "valid_fraction": float(np.mean(valid_frac)),
        }
    return info
