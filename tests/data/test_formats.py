"""Dataset formats: folder, NYU .mat (HDF5), KITTI; invalid depth masking; bad files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgedepth.data.dataset import dataset_info, open_dataset, open_datasets
from edgedepth.data.formats import Sample, write_meta, write_sample
from edgedepth.errors import DataError

rng = np.random.default_rng(0)


def _rgb(h=6, w=8):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _depth(h=6, w=8, hi=9.0):
    return rng.uniform(0.5, hi, (h, w)).astype(np.float32)


def test_folder_round_trip_with_meta(tmp_path):
    rgb0, d0 = _rgb(), _depth()
    d0[0, 0] = 0
    rgb1, d1 = _rgb(), _depth()
    d1[1, 1], d1[2, 2], d1[3, 3] = np.nan, np.inf, -1.0
    write_sample(tmp_path, "a", rgb0, d0)
    write_sample(tmp_path, "b", rgb1, d1, depth_format="npy")
    pose = np.eye(4)
    pose[:3, 3] = [1, 2, 3]
    K = [[5.0, 0, 4], [0, 5, 3], [0, 0, 1]]
    write_meta(
        tmp_path,
        {
            "source": "test",
            "domain": "indoor",
            "intrinsics": K,
            "frames": {"b": {"domain": "night", "pose": pose}},
        },
    )
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files
    ds = open_dataset(str(tmp_path))
    assert len(ds) == 2 and ds.domains == ["indoor", "night"] and ds.skipped == 0
    a, b = ds[0], ds[1]
    assert isinstance(a, Sample) and a.name == "a" and a.rgb.dtype == np.uint8
    np.testing.assert_array_equal(a.rgb, rgb0)
    np.testing.assert_allclose(a.depth, np.round(d0 * 1000) / 1000, atol=1e-6)  # uint16 millimetres
    assert not a.valid[0, 0] and a.valid.sum() == a.depth.size - 1
    np.testing.assert_array_equal(b.rgb, rgb1)
    assert b.depth.dtype == np.float32 and b.depth[1, 1] == 0 and b.depth[2, 2] == 0 and b.depth[3, 3] == 0
    assert b.valid.sum() == b.depth.size - 3
    np.testing.assert_allclose(b.pose, pose)
    np.testing.assert_allclose(a.intrinsics, K)
    assert a.pose is None


def test_folder_jpg_and_prefix(tmp_path):
    write_sample(tmp_path, "x", _rgb(), _depth(), image_format="jpg")
    ds = open_dataset(f"folder:{tmp_path}")
    assert len(ds) == 1 and ds[0].rgb.shape == (6, 8, 3) and ds.domains == ["unknown"]


def test_corrupt_png_with_and_without_skip_bad(tmp_path):
    write_sample(tmp_path, "good", _rgb(), _depth())
    write_sample(tmp_path, "bad", _rgb(), _depth())
    (tmp_path / "rgb" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = open_dataset(str(tmp_path))
    assert len(ds) == 2
    with pytest.raises(DataError, match="bad.png"):
        ds[0]
    ds = open_dataset(str(tmp_path), skip_bad=True)
    assert len(ds) == 1 and ds.skipped == 1 and ds[0].name == "good"


def test_size_mismatch_and_missing_partner(tmp_path):
    write_sample(tmp_path, "ok", _rgb(), _depth())
    write_sample(tmp_path, "small", _rgb(), _depth())
    cv2.imwrite(str(tmp_path / "depth" / "small.png"), np.ones((3, 4), np.uint16))
    ds = open_dataset(str(tmp_path))
    with pytest.raises(DataError, match="size mismatch.*small"):
        ds[1]
    cv2.imwrite(str(tmp_path / "rgb" / "lonely.png"), _rgb())
    with pytest.raises(DataError, match="lonely.png"):
        open_dataset(str(tmp_path))
    ds = open_dataset(str(tmp_path), skip_bad=True)
    assert len(ds) == 1 and ds.skipped == 2 and ds[0].name == "ok"


def test_depth_png_must_be_16_bit(tmp_path):
    write_sample(tmp_path, "a", _rgb(), _depth())
    cv2.imwrite(str(tmp_path / "depth" / "a.png"), np.ones((6, 8), np.uint8))
    with pytest.raises(DataError, match="16-bit"):
        open_dataset(str(tmp_path))[0]


def test_nyu_mat_transposed_layout(tmp_path):
    h5py = pytest.importorskip("h5py")
    n, h, w = 3, 6, 8
    rgbs = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.0, (n, h, w)).astype(np.float32)
    depths[1, 2, 3] = 0
    depths[2, 0, 0] = np.nan
    path = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(path, "w") as f:  # MATLAB v7.3 as h5py sees it: column-major, so axes reversed
        f["images"] = rgbs.transpose(0, 3, 2, 1)  # (N, 3, W, H)
        f["depths"] = depths.transpose(0, 2, 1)  # (N, W, H)
    for spec in (str(path), f"nyu:{path}"):
        ds = open_dataset(spec)
        assert len(ds) == n and ds.domains == ["nyu"] * n
        for i in range(n):
            s = ds[i]
            np.testing.assert_array_equal(s.rgb, rgbs[i])
            np.testing.assert_allclose(s.depth, np.nan_to_num(depths[i], nan=0.0))
            assert s.intrinsics.shape == (3, 3)
        assert not ds[1].valid[2, 3] and not ds[2].valid[0, 0]
        ds.file.close()
    bad = tmp_path / "bad.mat"
    with h5py.File(bad, "w") as f:
        f["images"] = np.zeros((2, 3, 8, 6), np.uint8)
        f["depths"] = np.zeros((2, 7, 5), np.float32)
    with pytest.raises(DataError, match="bad.mat"):
        open_dataset(str(bad))
    ds = open_dataset(str(bad), skip_bad=True)
    assert len(ds) == 0 and ds.skipped == 2
    uneven = tmp_path / "uneven.mat"
    with h5py.File(uneven, "w") as f:
        f["images"] = np.zeros((3, 3, 8, 6), np.uint8)
        f["depths"] = np.ones((2, 8, 6), np.float32)
    with pytest.raises(DataError, match="3 images but 2 depth"):
        open_dataset(str(uneven))
    ds = open_dataset(str(uneven), skip_bad=True)
    assert len(ds) == 2 and ds.skipped == 1 and ds[1].depth.shape == (6, 8)
    (tmp_path / "junk.mat").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="junk.mat"):
        open_dataset(str(tmp_path / "junk.mat"))


def _kitti_png(path, metres):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.round(metres * 256).astype(np.uint16))


def test_kitti_official_layout(tmp_path):
    root = tmp_path / "depth_selection" / "val_selection_cropped"
    stem = "2011_09_26_drive_0002_sync_{}_0000000005_image_02"
    rgb = _rgb(5, 12)
    (root / "image").mkdir(parents=True)
    cv2.imwrite(str(root / "image" / (stem.format("image") + ".png")), rgb[..., ::-1])
    gt = rng.uniform(1, 80, (5, 12)).astype(np.float32)
    gt[0, :] = 0
    _kitti_png(root / "groundtruth_depth" / (stem.format("groundtruth_depth") + ".png"), gt)
    (root / "intrinsics").mkdir()
    (root / "intrinsics" / (stem.format("image") + ".txt")).write_text("721.5 0 609.5 0 721.5 172.8 0 0 1")
    for spec in (str(root), str(tmp_path / "depth_selection"), f"kitti:{root}"):
        ds = open_dataset(spec)
        assert len(ds) == 1 and ds.domains == ["kitti"]
        s = ds[0]
        np.testing.assert_array_equal(s.rgb, rgb)
        np.testing.assert_allclose(s.depth, np.round(gt * 256) / 256, atol=1e-6)
        assert s.valid[0].sum() == 0 and s.valid[1:].all()
        assert s.intrinsics[0, 0] == pytest.approx(721.5)
    # a second image without ground truth
    cv2.imwrite(str(root / "image" / (stem.replace("0005", "0009").format("image") + ".png")), rgb)
    with pytest.raises(DataError, match="0000000009"):
        open_dataset(str(root))
    ds = open_dataset(str(root), skip_bad=True)
    assert len(ds) == 1 and ds.skipped == 1


def test_kitti_simple_layout_and_concat(tmp_path):
    k = tmp_path / "k"
    (k / "image").mkdir(parents=True)
    for name in ("000", "001"):
        cv2.imwrite(str(k / "image" / f"{name}.png"), _rgb())
        _kitti_png(k / "depth" / f"{name}.png", _depth(hi=60))
    f = tmp_path / "f"
    write_sample(f, "z", _rgb(), _depth())
    write_meta(f, {"domain": "outdoor"})
    ds = open_datasets(f"{k},{f}")
    assert len(ds) == 3 and ds.domains == ["kitti", "kitti", "outdoor"] and ds.skipped == 0
    assert ds[2].name == "z" and ds[-1].name == "z" and ds[0].depth.max() > 9
    info = dataset_info(ds)
    assert info["count"] == 3 and info["domains"] == {"kitti": 2, "outdoor": 1}
    assert info["resolutions"] == {"6x8": 3} and info["depth"]["max"] <= 60.0


def test_unknown_layouts_are_explained(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match="cannot tell the format"):
        open_dataset(str(tmp_path / "stuff"))
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(str(tmp_path / "nope"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "rgb").mkdir()
    (tmp_path / "m" / "meta.json").write_text("{broken")
    with pytest.raises(DataError, match="meta.json"):
        open_dataset(str(tmp_path / "m"))
