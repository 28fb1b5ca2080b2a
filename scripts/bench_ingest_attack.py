"""The ingest server under attack, on loopback: a real `edgedepth ingest serve` subprocess.

1. Tricklers: `--tricklers` clients each send a valid upload's body one byte a second (each with its own
   device token, reconnecting whenever the server cuts them) and `--head-tricklers` clients send request
   heads one byte a second, for `--seconds`. Meanwhile one good client uploads an item (RGB + depth
   PNG of `--size`) every `--interval` seconds, retrying on 429/503 after Retry-After as the upload daemon
   does. Printed: the good client's upload time (first try to stored) p50 / p95 / max and its answers.
2. Bombs: `--bombs` hostile uploads at once, `--bomb-rounds` times (PNGs of zeros: a frame just under the
   old 50 Mpx cap, 16-bit RGBA labelled rgb, an item of nine full frames, and frames of the largest
   accepted size that decode). Printed: the server's resident memory before, its peak (VmHWM) and the
   answers.

    python scripts/bench_ingest_attack.py --json bench_ingest_attack.json

`--repo DIR` runs the server from another checkout of edgedepth (to compare with older code); the
options passed to it are only those every version has.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Dict, List

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_ingest import free_port, make_body  # noqa: E402

from edgedepth.fleet.auth import DeviceRegistry  # noqa: E402
from edgedepth.fleet.wire import encode_files  # noqa: E402


def tar_item(files: Dict[str, bytes], kinds: Dict[str, str], width: int, height: int, device: str):
    return encode_files(files, kinds, device_id=device, captured_at="2026-11-24T18:00:00.000Z", width=width,
                        height=height, score=0.5)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def png_zeros(width: int, height: int, bit_depth: int = 8, colour: int = 2, tag: int = 0) -> bytes:
    """A valid PNG of zeros: small on the wire, width x height x channels x depth bytes decoded."""
    channels = {0: 1, 2: 3, 6: 4}[colour]
    row = b"\x00" + bytes(width * channels * bit_depth // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bit_depth, colour, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", idat)
        + _chunk(b"tEXt", b"t\x00%d" % tag)
        + _chunk(b"IEND", b"")
    )


def bomb_items(n: int, devices: List[str], decodable: bool = False, round_no: int = 0):
    """n hostile items, cycling through five kinds of bomb (with `decodable`, only the kind the server
    must decode: eight frames of the largest accepted size, the most one item may hold); distinct ids."""
    out = []
    for i in range(n):
        kind = 5 if decodable else i % 5
        if kind == 5:
            w, h = 1920, 1080
            tag = 100_000 * round_no + 100 * i
            files = {"rgb.png": png_zeros(w, h, tag=tag)}
            kinds = {"rgb.png": "rgb"}
            for k in range(7):
                files[f"prev{k}.png"] = png_zeros(w, h, tag=tag + 1 + k)
                kinds[f"prev{k}.png"] = "rgb_neighbor"
            item = tar_item(files, kinds, w, h, devices[i])
        elif kind == 0:  # 49 Mpx of 8-bit RGB zeros: under the old 50 Mpx cap
            w, h = 7000, 7000
            item = tar_item({"rgb.png": png_zeros(w, h, tag=i)}, {"rgb.png": "rgb"}, w, h, devices[i])
        elif kind == 1:  # 16-bit RGBA labelled rgb, just under the old cap
            w, h = 6000, 6000
            item = tar_item({"rgb.png": png_zeros(w, h, 16, 6, tag=i)}, {"rgb.png": "rgb"}, w, h, devices[i])
        elif kind == 2:  # nine frames of the largest accepted size in one item
            w, h = 1920, 1080
            files = {"rgb.png": png_zeros(w, h, tag=i)}
            kinds = {"rgb.png": "rgb"}
            for k in range(8):
                files[f"prev{k}.png"] = png_zeros(w, h, tag=1000 * i + k)
                kinds[f"prev{k}.png"] = "rgb_neighbor"
            item = tar_item(files, kinds, w, h, devices[i])
        elif kind == 3:  # 16-bit RGBA labelled rgb at the largest accepted size
            w, h = 1920, 1080
            item = tar_item({"rgb.png": png_zeros(w, h, 16, 6, tag=i)}, {"rgb.png": "rgb"}, w, h, devices[i])
        else:  # the largest accepted frame, decoded: 8-bit RGB + 16-bit depth of zeros
            w, h = 1920, 1080
            item = tar_item(
                {"rgb.png": png_zeros(w, h, tag=i), "depth.png": png_zeros(w, h, 16, 0, tag=i)},
                {"rgb.png": "rgb", "depth.png": "depth_sensor"},
                w,
                h,
                devices[i],
            )
        out.append(item)
    return out


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Trickler(threading.Thread):
    """Sends a request head (one byte a second with slow_head) and a body one byte a second; reconnects."""

    def __init__(self, port: int, head: bytes, body: bytes, slow_head: bool, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.head, self.body, self.slow_head, self.stop = port, head, body, slow_head, stop
        self.connections = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.connections += 1
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    if not self.slow_head:
                        s.sendall(self.head)
                    for b in (self.head if self.slow_head else b"") + self.body:
                        if self.stop.wait(1.0):
                            return
                        s.sendall(bytes([b]))
            except OSError:
                pass
            self.stop.wait(0.1)


def raw_head(port: int, item_id: str, token: str, body: bytes) -> bytes:
    return (
        f"POST /v1/items/{item_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/x-tar\r\nX-Edgedepth-Body-Sha256: {hashlib.sha256(body).hexdigest()}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()


def upload_until_stored(
    client: httpx.Client, url: str, token: str, item_id: str, body: bytes, give_up_s: float
) -> tuple:
    """(seconds from first try to stored or None, list of status codes) retrying like the daemon."""
    t0 = time.perf_counter()
    codes: List[object] = []
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/x-tar",
        "X-Edgedepth-Body-Sha256": hashlib.sha256(body).hexdigest(),
    }
    while time.perf_counter() - t0 < give_up_s:
        try:
            r = client.post(f"{url}/v1/items/{item_id}", content=body, headers=headers)
        except httpx.HTTPError as exc:
            codes.append(type(exc).__name__)
            time.sleep(1.0)
            continue
        codes.append(r.status_code)
        if r.status_code in (200, 201):
            return time.perf_counter() - t0, codes
        if r.status_code in (429, 503):
            time.sleep(min(5.0, float(r.headers.get("retry-after", "1"))))
            continue
        return None, codes
    return None, codes


def percentile(values: List[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--tricklers", type=int, default=20, help="body tricklers (1 byte/s), each its own device"
    )
    ap.add_argument("--head-tricklers", type=int, default=20, help="request-head tricklers (1 byte/s)")
    ap.add_argument("--seconds", type=float, default=40.0, help="how long the tricklers run")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between the good client's uploads")
    ap.add_argument("--size", default="640x480", help="good items' frame size WxH")
    ap.add_argument("--bombs", type=int, default=16, help="hostile uploads at once")
    ap.add_argument("--bomb-rounds", type=int, default=3)
    ap.add_argument(
        "--decodable-bombs",
        action="store_true",
        help="every bomb an item the server must decode: 8 frames of the largest accepted size",
    )
    ap.add_argument("--repo", default=str(ROOT), help="edgedepth checkout the server runs from")
    ap.add_argument("--skip-trickle", action="store_true")
    ap.add_argument("--skip-bombs", action="store_true")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    results: dict = {"repo": args.repo}

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        reg = DeviceRegistry(store / "devices.db")
        names = ["good"] + [f"attacker-{i}" for i in range(max(args.tricklers, args.bombs))]
        tokens = {n: reg.add_device(n) for n in names}
        reg.close()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, PYTHONPATH=args.repo)
        log = open(Path(tmp) / "server.log", "wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgedepth",
                "ingest",
                "serve",
                "--store",
                str(store),
                "--port",
                str(port),
                "--min-free-mb",
                "0",
                "--rate",
                "1000",
                "--burst",
                "1000",
                "--log-level",
                "error",
            ],
            cwd=args.repo,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.time() + 60
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit(
                        f"server did not start: {(Path(tmp) / 'server.log').read_text()[-2000:]}"
                    )
                time.sleep(0.1)

            if not args.skip_trickle:
                results["trickle"] = trickle_phase(args, port, url, tokens, width, height)
            if not args.skip_bombs:
                results["bombs"] = bomb_phase(args, proc.pid, url, tokens)
        finally:
            proc.terminate()
            proc.wait(15)
            log.close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return 0


def trickle_phase(args, port: int, url: str, tokens: Dict[str, str], width: int, height: int) -> dict:
    stop = threading.Event()
    tricklers = []
    for i in range(args.tricklers + args.head_tricklers):
        dev = f"attacker-{i % max(1, args.tricklers)}"
        iid, body = make_body(100_000 + i, 320, 240, dev)
        tricklers.append(
            Trickler(
                port, raw_head(port, iid, tokens[dev], body), body, slow_head=i >= args.tricklers, stop=stop
            )
        )
    for t in tricklers:
        t.start()
    time.sleep(2.0)  # let every trickler connect and start its upload
    times: List[float] = []
    answers: collections.Counter = collections.Counter()
    failed = 0
    seed = 0
    t_end = time.monotonic() + args.seconds
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < t_end:
            seed += 1
            iid, body = make_body(seed, width, height, "good")
            took, codes = upload_until_stored(client, url, tokens["good"], iid, body, give_up_s=120)
            answers.update(str(c) for c in codes)
            if took is None:
                failed += 1
            else:
                times.append(took)
            time.sleep(args.interval)
    stop.set()
    for t in tricklers:
        t.join(5)
    out = {
        "tricklers": args.tricklers,
        "head_tricklers": args.head_tricklers,
        "seconds": args.seconds,
        "good_uploads": len(times),
        "good_failed": failed,
        "good_answers": dict(answers),
        "p50_s": statistics.median(times) if times else None,
        "p95_s": percentile(times, 0.95) if times else None,
        "max_s": max(times) if times else None,
        "trickler_connections": sum(t.connections for t in tricklers),
    }
    print(
        f"tricklers: {args.tricklers} body + {args.head_tricklers} head at 1 byte/s for {args.seconds:g} s "
        f"({out['trickler_connections']} trickler connections in all)"
    )
    if times:
        print(
            f"  good client ({width}x{height} items, one every {args.interval:g} s): {len(times)} stored, "
            f"{failed} failed; upload time p50 {out['p50_s']:.3f} s, p95 {out['p95_s']:.3f} s, "
            f"max {out['max_s']:.3f} s"
        )
    else:
        print(f"  good client: nothing stored ({failed} failed)")
    print(f"  good client's answers: {dict(answers)}")
    return out


def bomb_phase(args, pid: int, url: str, tokens: Dict[str, str]) -> dict:
    devices = [f"attacker-{i}" for i in range(args.bombs)]
    rss_before = rss_kib(pid)
    peak = [rss_before]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            try:
                peak[0] = max(peak[0], rss_kib(pid))
            except OSError:
                return
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    answers: collections.Counter = collections.Counter()
    elapsed = 0.0
    for r in range(args.bomb_rounds):
        items = bomb_items(args.bombs, devices, args.decodable_bombs, r)
        if r == 0:
            sizes = sorted(len(b) for _, b in items)
            what = "decodable (8 largest frames each)" if args.decodable_bombs else "mixed"
            print(
                f"bombs: {args.bombs} at once x {args.bomb_rounds} rounds, {what}; bodies "
                f"{sizes[0] // 1024}-{sizes[-1] // 1024} KiB"
            )

        def send(i_b):
            i, (iid, body) = i_b
            try:
                resp = httpx.post(
                    f"{url}/v1/items/{iid}",
                    content=body,
                    timeout=120,
                    headers={
                        "Authorization": f"Bearer {tokens[devices[i]]}",
                        "Content-Type": "application/x-tar",
                        "X-Edgedepth-Body-Sha256": hashlib.sha256(body).hexdigest(),
                    },
                )
                return f"{resp.status_code} {resp.json().get('error', 'stored')}"
            except (httpx.HTTPError, ValueError) as exc:
                return type(exc).__name__

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.bombs) as pool:
            answers.update(pool.map(send, enumerate(items)))
        elapsed += time.perf_counter() - t0
    sampling.set()
    sampler.join(2)
    hwm = rss_kib(pid, "VmHWM")
    out = {
        "bombs": args.bombs,
        "rounds": args.bomb_rounds,
        "rss_before_mib": rss_before / 1024,
        "rss_peak_sampled_mib": peak[0] / 1024,
        "vmhwm_mib": hwm / 1024,
        "answers": dict(answers),
        "seconds": elapsed,
    }
    print(
        f"  server RSS before {rss_before / 1024:.0f} MiB; peak sampled {peak[0] / 1024:.0f} MiB; "
        f"VmHWM (whole run) {hwm / 1024:.0f} MiB; {elapsed:.1f} s of uploads"
    )
    print(f"  answers: {dict(answers)}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
