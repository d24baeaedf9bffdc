"""The device a profile runs on: what it is, how much memory it has free, and what it can do.

Identity (`device_info`: name, memory, cores, torch) goes into the profile header so a profile says
which machine its numbers belong to; free memory lets a sweep refuse shapes that cannot fit.

Ceilings: the roofline needs two per device: how fast it multiplies (compute) and how fast it moves
bytes (memory). Datasheet peaks are not reachable, and a CPU or an unlisted GPU has no datasheet
entry at all, so a profile measures both with short micro-benchmarks and stores them in its
header. The ridge point `matmul_tflops * 1e12 / (mem_bw_gbps * 1e9)` (FLOP/byte) then says, for
this very device, which operations are compute-bound and which are memory-bound.

Each benchmark times back-to-back repetitions of one operation (synchronising once around the
loop) and keeps the best size / the best run: a ceiling is what the device can reach, not a mean.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from planner.errors import BadInput


@dataclass(frozen=True)
class Ceilings:
    """Measured ceilings of one device (None where not measured, e.g. the link with one GPU)."""

    matmul_tflops: float  # best square-matmul rate in the profile dtype (1e12 FLOP/s)
    mem_bw_gbps: float  # device-memory copy bandwidth, bytes read + written (1e9 B/s)
    link_gbps: float | None = None  # device-to-device copy, GPU 0 -> GPU 1 (1e9 B/s)

    @property
    def ridge_flop_per_byte(self) -> float:
        """Arithmetic intensity (FLOP/B) above which work is compute-bound on this device."""
        return self.matmul_tflops * 1e12 / (self.mem_bw_gbps * 1e9)

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_rate(fn, device, work: float, min_time_s: float, max_reps: int = 50) -> float:
    """Best of a few timed runs of `fn` (each enough reps to last ~min_time_s / 3): work units / s."""
    fn()  # warm-up: first-call allocation, kernel selection
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    one = max(time.perf_counter() - t0, 1e-6)
    reps = int(min(max_reps, max(1, (min_time_s / 3) / one)))
    best = work / one
    for _ in range(3):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        _sync(device)
        best = max(best, work * reps / (time.perf_counter() - t0))
    return best


def matmul_tflops(device, dtype, sizes: tuple[int, ...] | None = None, min_time_s: float = 0.3) -> float:
    """Achievable dense matmul rate (TFLOP/s): best over square n x n @ n x n (2 n^3 FLOP each)."""
    import torch

    if sizes is None:
        sizes = (1024, 2048, 4096, 8192) if device.type == "cuda" else (512, 1024, 2048)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        best = max(best, _best_rate(lambda: torch.mm(a, b, out=out), device, 2.0 * n**3, min_time_s))
        del a, b, out
    return best / 1e12


def mem_bw_gbps(device, nbytes: int | None = None, min_time_s: float = 0.3) -> float:
    """Device-memory bandwidth (GB/s) of a large copy: 2 * nbytes (read + write) per copy.

    The buffer is far larger than any cache (1 GiB on GPU, 256 MiB on CPU) so the copy streams
    from memory, the way decode streams weights and KV."""
    import torch

    if nbytes is None:
        nbytes = (1 << 30) if device.type == "cuda" else (256 << 20)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    rate = _best_rate(lambda: dst.copy_(src), device, 2.0 * src.numel() * 4, min_time_s)
    del src, dst
    return rate / 1e9


def link_gbps(src_index: int = 0, dst_index: int = 1, nbytes: int = 256 << 20, min_time_s: float = 0.3) -> float:
    """GPU-to-GPU copy bandwidth (GB/s, bytes moved / time) from cuda:src to cuda:dst."""
    import torch

    a = torch.empty(nbytes // 4, dtype=torch.float32, device=f"cuda:{src_index}").fill_(1.0)
    b = torch.empty(nbytes // 4, dtype=torch.float32, device=f"cuda:{dst_index}")

    def copy():
        b.copy_(a, non_blocking=True)

    copy()
    torch.cuda.synchronize(a.device)
    torch.cuda.synchronize(b.device)
    reps = 10
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            copy()
        torch.cuda.synchronize(a.device)
        torch.cuda.synchronize(b.device)
        best = max(best, nbytes * reps / (time.perf_counter() - t0))
    return best / 1e9


def measure_ceilings(device, dtype, quick: bool = False) -> Ceilings:
    """All ceilings of `device` (a torch.device) for `dtype` (a torch dtype). A few seconds on CPU,
    under a second or two on a GPU; `quick` shortens each measurement."""
    import torch

    t = 0.15 if quick else 0.3
    flops = matmul_tflops(device, dtype, min_time_s=t)
    bw = mem_bw_gbps(device, min_time_s=t)
    link = None
    if device.type == "cuda" and torch.cuda.device_count() >= 2:
        idx = device.index or 0
        link = link_gbps(idx, (idx + 1) % torch.cuda.device_count(), min_time_s=t)
    return Ceilings(matmul_tflops=flops, mem_bw_gbps=bw, link_gbps=link)


# ---- what the device is ----------------------------------------------------------------------
def resolve_device(device: str):
    """'cpu' | 'cuda' | 'cuda:N' -> torch.device, or BadInput naming --device."""
    import torch

    d = str(device).strip().lower()
    if d == "cpu":
        return torch.device("cpu")
    if d == "cuda" or d.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BadInput(f"--device {device}: no CUDA device (torch.cuda.is_available() is False)")
        idx = 0 if d == "cuda" else d[5:]
        if not str(idx).isdigit() or int(idx) >= torch.cuda.device_count():
            raise BadInput(f"--device {device}: no such GPU ({torch.cuda.device_count()} visible)")
        return torch.device("cuda", int(idx))
    raise BadInput(f"--device {device!r}: expected cpu, cuda or cuda:N")


def _meminfo_bytes(key: str) -> float | None:
    """A field of /proc/meminfo in bytes (None where there is no /proc: not Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) * 1024  # the file says kB and means KiB
    except OSError:
        pass
    return None


def free_memory_bytes(device) -> float | None:
    """Memory this run may still allocate (B): CUDA free memory, or MemAvailable on a CPU."""
    import torch

    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    return _meminfo_bytes("MemAvailable")


def device_info(device) -> dict:
    """The profile header's "device": what machine these numbers belong to."""
    import torch

    info = {"type": device.type, "torch": torch.__version__, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            # Other work on the machine skews CPU timings: keep the load seen at the start.
            "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(name=torch.cuda.get_device_name(device), count=torch.cuda.device_count(),
                    index=device.index, memory_gb=round(p.total_memory / 1e9, 2), cuda=torch.version.cuda,
                    driver=None)
    else:
        name = platform.processor() or "cpu"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        total = _meminfo_bytes("MemTotal")
        info.update(name=name, count=1, memory_gb=round(total / 1e9, 2) if total else None, driver=None)
    return info


def nvml_index(device) -> int:
    """NVML numbers GPUs physically; CUDA numbers the visible ones. Map through
    CUDA_VISIBLE_DEVICES when it lists plain indices (not UUIDs), so we watch the GPU we time."""
    idx = device.index or 0
    vis = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if idx < len(vis) and all(v.isdigit() for v in vis):
        return int(vis[idx])
    return idx
