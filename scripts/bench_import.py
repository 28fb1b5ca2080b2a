#!/usr/bin/env python
"""Import and replay throughput of a ROS 2 MCAP recording (RGB rgb8, aligned depth 16UC1, CameraInfo).

    .venv/bin/python scripts/bench_import.py [--frames 200] [--size 48x64] [--repeat 3]

Writes the recording with rosbags (tests/bagkit.py), then prints, per repeat: `edgedepth data import`
(edgedepth.data.importer.import_recording) frames/s with 4 and with 1 writer thread, and the frames/s the
mcap:// source reads at pace=fast (decode of colour + depth, no model).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--size", default="48x64", help="HEIGHTxWIDTH")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))

    import bagkit

    from edgedepth.data.importer import import_recording
    from edgedepth.runtime.source_recording import recording_source

    tmp = Path(tempfile.mkdtemp(prefix="bench_import_"))
    try:
        written = bagkit.write_recording(tmp / "rec", n=args.frames, h=h, w=w)
        mcap = bagkit.mcap_file(written.path)
        print(f"recording: {args.frames} frames {h}x{w}, rgb8 + 16UC1 depth + CameraInfo, "
              f"{mcap.stat().st_size / 1e6:.1f} MB MCAP")
        for r in range(args.repeat):
            for writers in (4, 1):
                out = tmp / f"ds_{r}_{writers}"
                rep = import_recording(mcap, out, writers=writers)
                print(f"import  (writers={writers}): {rep.written} frames, {rep.with_depth} with depth, "
                      f"{rep.seconds:.2f} s, {rep.fps:.0f} frames/s")
                shutil.rmtree(out)
            src = recording_source(f"mcap://{mcap}?pace=fast")
            src.open()
            t0, n = time.perf_counter(), 0
            while src.read() is not None:
                n += 1
            dt = time.perf_counter() - t0
            src.close()
            print(f"replay  (mcap://?pace=fast): {n} frames, {dt:.2f} s, {n / dt:.0f} frames/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
