#!/usr/bin/env python
"""Peak memory of a device reading a registry that serves huge metadata files.

    python scripts/bench_registry_read.py                 # a 400 MiB index.json and state.json
    python scripts/bench_registry_read.py --mib 64

Serves a temporary registry with `python -m http.server` on 127.0.0.1 whose index.json and state.json
are sparse files of --mib MiB, then, each in a fresh interpreter, (a) imports the registry client and
reads nothing (the baseline), (b) reads index.json through the store, (c) asks RegistryClient for the
promoted versions (which reads state.json). Prints each outcome and the process's peak RSS
(ru_maxrss). Every metadata read is capped (edgedepth.registry.storage.MAX_READ_BYTES), so (b) and (c)
should end in ObjectTooLarge close to the baseline.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys
from edgedepth.bench.memory import peak_rss_mb
from edgedepth.registry.client import RegistryClient
from edgedepth.registry.storage import open_store
url, what, pub = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    if what == "baseline":
        outcome = "nothing read"
    elif what == "index":
        outcome = f"read {len(open_store(url).read('index.json'))} bytes"
    else:
        outcome = f"promoted {RegistryClient(url, pub).promoted()}"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {str(exc)[:90]}"
peak = peak_rss_mb()  # VmHWM: ru_maxrss keeps the parent's peak across exec
print(json.dumps({"outcome": outcome, "peak_rss_mib": peak}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=400, help="size of the served index.json and state.json")
    args = ap.parse_args()
    from edgedepth.registry.keys import generate_keypair

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "registry"
        root.mkdir()
        _, pub = generate_keypair(Path(tmp) / "keys")
        for name in ("index.json", "state.json"):
            with open(root / name, "wb") as f:
                f.truncate(args.mib << 20)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                   "--directory", str(root)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    time.sleep(0.1)
            url = f"http://127.0.0.1:{port}"
            print(f"registry serving a {args.mib} MiB index.json and state.json at {url}")
            for what in ("baseline", "index", "state"):
                out = subprocess.run([sys.executable, "-c", CHILD, url, what, str(pub)], capture_output=True,
                                     text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{what:9s} peak RSS {r['peak_rss_mib']:7.1f} MiB   {r['outcome']}")
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
