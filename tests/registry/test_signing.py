"""Detached manifest signatures and the full bundle check a device runs."""

from __future__ import annotations

import base64
import json

import pytest

from edgedepth.bundle import MANIFEST, SIGNATURE
from edgedepth.errors import ModelError
from edgedepth.registry.keys import generate_keypair, load_private_key, load_public_key
from edgedepth.registry.signing import BundleRejected, sign_bundle, verify_signed_bundle


def flip_byte(path, offset=-1):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_signed_bundle_verifies_and_signature_is_base64(bundle, keys):
    key_path, pub_path = keys
    sig_path = sign_bundle(bundle, load_private_key(key_path))
    assert len(base64.b64decode(sig_path.read_bytes().strip())) == 64
    manifest = verify_signed_bundle(bundle, pub_path)
    assert "model.onnx" in manifest["files"]
    assert issubclass(BundleRejected, ModelError)


def test_one_flipped_byte_in_a_model_file_is_rejected_naming_the_file(bundle, keys):
    sign_bundle(bundle, load_private_key(keys[0]))
    flip_byte(bundle / "model.int8.cpu.onnx", 20)
    with pytest.raises(BundleRejected, match=r"model\.int8\.cpu\.onnx"):
        verify_signed_bundle(bundle, keys[1])


def test_edited_manifest_is_rejected(bundle, keys):
    sign_bundle(bundle, load_private_key(keys[0]))
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["model"]["name"] = "evil"
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with pytest.raises(BundleRejected, match="does not verify"):
        verify_signed_bundle(bundle, keys[1])


def test_wrong_key_is_rejected(bundle, keys, tmp_path):
    sign_bundle(bundle, load_private_key(keys[0]))
    _, other_pub = generate_keypair(tmp_path / "other")
    with pytest.raises(BundleRejected, match="another key"):
        verify_signed_bundle(bundle, load_public_key(other_pub))


def test_unsigned_bundle_is_rejected(bundle, keys):
    assert not (bundle / SIGNATURE).exists()
    with pytest.raises(BundleRejected, match="unsigned"):
        verify_signed_bundle(bundle, keys[1])


def test_garbage_signature_is_rejected(bundle, keys):
    (bundle / SIGNATURE).write_text("not base64!!")
    with pytest.raises(BundleRejected, match="base64"):
        verify_signed_bundle(bundle, keys[1])


def test_extra_and_missing_files_are_rejected(bundle, keys):
    sign_bundle(bundle, load_private_key(keys[0]))
    (bundle / "payload.sh").write_text("echo hi")
    with pytest.raises(BundleRejected, match="payload.sh"):
        verify_signed_bundle(bundle, keys[1])
    (bundle / "payload.sh").unlink()
    (bundle / "lineage.json").unlink()
    with pytest.raises(BundleRejected, match="lineage.json"):
        verify_signed_bundle(bundle, keys[1])


def test_locally_built_engines_can_be_tolerated(bundle_factory, keys):
    b = bundle_factory("noeng", with_engine=False)
    sign_bundle(b, load_private_key(keys[0]))
    (b / "engines").mkdir()
    (b / "engines" / "model.orin.int8.trt10.engine").write_bytes(b"x")
    with pytest.raises(BundleRejected, match="engines"):
        verify_signed_bundle(b, keys[1])
    verify_signed_bundle(b, keys[1], ignore_extra=("engines/*",))


def test_path_traversal_in_a_signed_manifest_is_rejected(bundle, keys):
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"]["../outside"] = {"sha256": "0" * 64, "size": 1}
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    sign_bundle(bundle, load_private_key(keys[0]))
    with pytest.raises(BundleRejected, match="unsafe file path"):
        verify_signed_bundle(bundle, keys[1])
