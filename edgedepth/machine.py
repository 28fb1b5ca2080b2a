"""What machine this is (for benchmarks, backend choice and thread counts): CPU model, cores, OS, Python
and the versions of the inference libraries.

Versions come from package metadata (importlib.metadata), so describing the machine imports none of
torch, onnxruntime or OpenCV.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional

# label -> distribution names to try, first installed wins.
LIBRARIES = {
    "numpy": ("numpy",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python",
               "opencv-contrib-python-headless"),
    "torch": ("torch",),
    "onnx": ("onnx",),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu11"),
}


def allowed_cores() -> Optional[FrozenSet[int]]:
    """The cores the calling thread may run on (its affinity mask; None where the platform cannot say)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask, else os.cpu_count())."""
    allowed = allowed_cores()
    return max(1, len(allowed) if allowed is not None else (os.cpu_count() or 1))


def _cpuinfo() -> Dict[str, str]:
    path = Path("/proc/cpuinfo")
    out: Dict[str, str] = {}
    if not path.is_file():
        return out
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key not in out and value.strip():
            out[key] = value.strip()
    return out


def cpu_model() -> str:
    info = _cpuinfo()
    for key in ("model name", "Hardware", "Model", "cpu model", "Processor"):
        if key in info:
            return info[key]
    return platform.processor() or platform.machine() or "unknown"


def _version(dists) -> Optional[str]:
    from importlib import metadata

    for name in dists:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def library_versions() -> Dict[str, Optional[str]]:
    """Installed version of each inference library (None when absent)."""
    versions = {label: _version(dists) for label, dists in LIBRARIES.items()}
    if versions["tensorrt"] is None:  # JetPack installs TensorRT as a system package without metadata
        versions["tensorrt"] = _jetpack_tensorrt()
    return versions


def _jetpack_tensorrt() -> Optional[str]:
    import importlib.util

    spec = importlib.util.find_spec("tensorrt")
    return "installed (no package metadata)" if spec is not None else None


def gpus() -> List[str]:
    """GPU names from nvidia-smi, or the Jetson release line; empty on a CPU-only machine."""
    tegra = Path("/etc/nv_tegra_release")
    if tegra.is_file():
        try:
            return ["Jetson (" + tegra.read_text(errors="replace").splitlines()[0].strip("# ") + ")"]
        except (OSError, IndexError):
            return ["Jetson"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def load_average() -> Optional[List[float]]:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> Dict[str, object]:
    info = _cpuinfo()
    physical = info.get("cpu cores")
    return {
        "cpu": cpu_model(),
        "cores_logical": os.cpu_count() or 1,
        "cores_usable": usable_cores(),
        "cores_physical_per_socket": int(physical) if physical and physical.isdigit() else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "gpus": gpus(),
        "libraries": library_versions(),
        "load_average_start": load_average(),
    }


def format_machine(m: Dict[str, object]) -> str:
    libs = m.get("libraries") or {}
    lib_text = ", ".join(f"{k} {v}" for k, v in libs.items() if v)  # type: ignore[union-attr]
    missing = [k for k, v in libs.items() if not v]  # type: ignore[union-attr]
    lines = [
        f"machine: {m['cpu']}, {m['cores_usable']} usable of {m['cores_logical']} logical cores",
        f"         {m['os']}, Python {m['python']}",
        f"         {lib_text}" + (f" (not installed: {', '.join(missing)})" if missing else ""),
    ]
    load = m.get("load_average_start")
    if load:
        lines.append(f"         load average at start {load[0]:.2f} (1 min) on {m['cores_usable']} cores")
        if load[0] > 0.5 * float(m["cores_usable"]):  # type: ignore[arg-type]
            lines.append("         WARNING: other processes are using the CPU; figures are noisy and "
                         "multi-threaded runtimes lose most (PyTorch's OpenMP especially) - compare with "
                         "--threads 1")
    if m.get("gpus"):
        lines.append("         GPU: " + "; ".join(m["gpus"]))  # type: ignore[arg-type]
    return "\n".join(lines)
