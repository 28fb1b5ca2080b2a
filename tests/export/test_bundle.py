"""Bundle manifest: hashes, model info, verification and engine names."""

from __future__ import annotations

import json

import pytest

from edgedepth import bundle
from edgedepth.errors import ModelError


def test_manifest_lists_files_with_hashes_and_model_info(exported):
    bdir, report = exported
    man = bundle.read_manifest(bdir)
    assert set(man["files"]) == {"model.onnx"}
    entry = man["files"]["model.onnx"]
    assert entry["size"] == (bdir / "model.onnx").stat().st_size
    assert entry["sha256"] == bundle.file_sha256(bdir / "model.onnx")
    assert man["model"]["name"] == "tiny-test" and man["model"]["size"] == "tiny"
    assert man["model"]["opset"] == 13
    assert man["model"]["preprocessing"]["height"] == 64
    assert man["model"]["checkpoint_sha256"] == report["checkpoint_sha256"]
    assert man["export"]["max_rel_depth"] <= 1e-4
    assert bundle.verify_bundle(bdir)["files"] == man["files"]


def test_verify_names_missing_extra_and_modified_files(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "e.engine").write_bytes(b"x" * 10)
    man = bundle.write_manifest(tmp_path, {"metrics": {"d1": 0.9}})
    assert set(man["files"]) == {"a.bin", "engines/e.engine"} and man["metrics"] == {"d1": 0.9}
    bundle.verify_bundle(tmp_path)

    (tmp_path / "extra.txt").write_text("x")
    with pytest.raises(ModelError, match="extra.txt"):
        bundle.verify_bundle(tmp_path)
    (tmp_path / "extra.txt").unlink()
    (tmp_path / "engines" / "local.engine").write_bytes(b"y")
    bundle.verify_bundle(tmp_path, ignore_extra=["engines/*"])
    (tmp_path / "engines" / "local.engine").unlink()

    (tmp_path / "a.bin").write_bytes(b"abd")  # same size, other content
    with pytest.raises(ModelError, match="a.bin.*SHA-256"):
        bundle.verify_bundle(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"abcd")
    with pytest.raises(ModelError, match="a.bin.*size"):
        bundle.verify_bundle(tmp_path)
    (tmp_path / "a.bin").unlink()
    with pytest.raises(ModelError, match="a.bin.*missing"):
        bundle.verify_bundle(tmp_path)


def test_rewrite_keeps_extra_keys_and_drops_stale_signature(tmp_path):
    (tmp_path / "f").write_text("1")
    bundle.write_manifest(tmp_path, {"lineage": {"round": 3}, "note": "x"})
    (tmp_path / bundle.SIGNATURE).write_bytes(b"sig")
    man = bundle.write_manifest(tmp_path, {"note": None})
    assert man["lineage"] == {"round": 3} and "note" not in man
    assert not (tmp_path / bundle.SIGNATURE).exists()
    assert "manifest.sig" not in man["files"] and "manifest.json" not in man["files"]
    with pytest.raises(ModelError, match="computed"):
        bundle.write_manifest(tmp_path, {"files": {}})


def test_read_manifest_rejects_foreign_json(tmp_path):
    with pytest.raises(ModelError, match="missing"):
        bundle.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {}}))
    with pytest.raises(ModelError, match="not an edgedepth bundle"):
        bundle.read_manifest(tmp_path)


def test_engine_file_names():
    assert (
        bundle.engine_file_name("orin-nano-8gb", "int8", "10.3.0")
        == "model.orin-nano-8gb.int8.trt10.3.0.engine"
    )
    assert bundle.engine_manifest_name("xavier-nx", "fp16", "8.5.2") == "model.xavier-nx.fp16.trt8.5.2.json"
    assert bundle.engine_file_name("my board/x", "fp16", "8.2") == "model.my-board-x.fp16.trt8.2.engine"
    with pytest.raises(ModelError):
        bundle.engine_file_name("", "fp16", "8.2")


def test_onnx_header_reads_metadata_without_onnx(exported):
    bdir, _ = exported
    head = bundle.onnx_header(bdir / "model.onnx")
    assert head["opset"]["ai.onnx"] == 13
    assert "edgedepth.preprocessing" in head["metadata"]
