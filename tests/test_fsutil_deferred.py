"""DeferredFsync: bulk writes stay atomic, skip their per-file fsyncs, and sync once at the end."""

from __future__ import annotations

import os

from edgedepth import fsutil


def test_deferred_block_skips_per_file_fsyncs_and_syncs_once(tmp_path, monkeypatch):
    calls = {"fsync": 0, "sync": 0}
    real_fsync = os.fsync

    def counting_fsync(fd):
        calls["fsync"] += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    monkeypatch.setattr(os, "sync", lambda: calls.__setitem__("sync", calls["sync"] + 1))
    fsutil.write_bytes_atomic(tmp_path / "a", b"1")
    assert calls == {"fsync": 2, "sync": 0}  # the file and its directory

    @fsutil.DeferredFsync()
    def bulk():
        for i in range(5):
            fsutil.write_bytes_atomic(tmp_path / "bulk" / f"{i}.bin", bytes([i]) * 10)
        with fsutil.DeferredFsync():  # nested: still one sync, at the outer end
            fsutil.write_bytes_atomic(tmp_path / "bulk" / "n.bin", b"n")
        assert calls["sync"] == 0

    bulk()
    assert calls == {"fsync": 2, "sync": 1}
    names = sorted(p.name for p in (tmp_path / "bulk").iterdir())
    assert names == ["0.bin", "1.bin", "2.bin", "3.bin", "4.bin", "n.bin"]
    assert (tmp_path / "bulk" / "3.bin").read_bytes() == b"\x03" * 10
    fsutil.write_bytes_atomic(tmp_path / "b", b"2")
    assert calls["fsync"] == 4  # durable again after the block
