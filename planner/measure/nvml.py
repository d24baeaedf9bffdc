"""GPU utilization while a profile runs: an NVML sampler on a background thread.

Timings say how long a phase took; NVML says how busy the GPU was meanwhile (SM utilization,
memory-controller utilization, memory used, power, SM clock). The sampler polls at `hz` (default
100 Hz) and labels every sample with the phase that was open at that instant, so the profile can
report, per phase, how much of the GPU prefill and decode actually use.

NVML's own utilization counters are averages over the driver's sample period (1/6 s to 1 s
depending on the GPU), so sampling faster than that mostly repeats values; 100 Hz is there so that
short phases still get samples, not to resolve individual kernels.

Without an NVIDIA driver (a CPU machine, a laptop) `available` is False, the summary is empty and
the profile says "utilization: not available (no NVML)"; nothing else changes. `pynvml` (the
nvidia-ml-py package) is imported only when a sampler is made, and tests pass a fake module.
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np

NOT_AVAILABLE = "utilization: not available (no NVML)"

#: The quantities sampled, with their units (the summary keys).
QUANTITIES = ("sm_util_pct", "mem_bw_util_pct", "mem_used_gb", "power_w", "sm_clock_mhz")

_NVML_CLOCK_SM = 1  # pynvml.NVML_CLOCK_SM; a fake module need not define it


class NvmlSampler:
    """Poll one GPU's NVML counters at `hz` on a daemon thread, attributing samples to phases.

        sampler = NvmlSampler(0)
        with sampler:                      # starts and stops the thread
            with sampler.phase("prefill"):
                ...
        sampler.summary()  # {"prefill": {"sm_util_pct": {"mean", "p90", "max"}, ..., "samples", "hz"}}

    `nvml` is the pynvml module (imported lazily when None); tests inject a fake with the same
    functions. Any NVML failure at init leaves `available` False and the sampler a no-op.
    """

    def __init__(self, device_index: int = 0, hz: float = 100.0, nvml=None):
        if not hz > 0:
            raise ValueError(f"hz must be positive, got {hz}")
        self.device_index = int(device_index)
        self.period_s = 1.0 / float(hz)
        self.available = False
        self.note = NOT_AVAILABLE
        self.driver = None
        self._nvml = None
        self._handle = None
        self._phase: str | None = None
        self._rows: list[tuple] = []  # (t_s, phase, sm, membw, mem_gb, power_w, clock_mhz)
        self._phase_time_s: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.thread_cpu_s = 0.0  # CPU time the sampling thread itself used (for the overhead check)
        try:
            if nvml is None:
                import pynvml as nvml  # nvidia-ml-py
            nvml.nvmlInit()
            self._handle = nvml.nvmlDeviceGetHandleByIndex(self.device_index)
            self._nvml = nvml
            self.available = True
            self.note = f"NVML, GPU {self.device_index}, {1.0 / self.period_s:.0f} Hz requested"
            try:
                d = nvml.nvmlSystemGetDriverVersion()
                self.driver = d.decode() if isinstance(d, bytes) else str(d)
            except Exception:  # the driver string is nice to have, not needed
                self.driver = None
        except Exception:  # no library, no driver, no such GPU: all mean "no NVML"
            self.available = False

    @classmethod
    def unavailable(cls) -> "NvmlSampler":
        """A no-op sampler (a CPU profile: there is no GPU to watch even if NVML exists)."""
        return cls(0, nvml=_NoNvml())

    # ---- thread -----------------------------------------------------------------------------
    def start(self) -> "NvmlSampler":
        if self.available and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> "NvmlSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        cpu0 = time.thread_time()
        nxt = time.perf_counter()
        try:
            while not self._stop.is_set():
                self.poll()
                # Fixed-rate schedule (not sleep(period) after the work) so the rate does not
                # drift by the cost of each NVML call; if we fall behind, skip ahead, don't burst.
                nxt += self.period_s
                now = time.perf_counter()
                if nxt < now:
                    nxt = now
                self._stop.wait(nxt - now)
        finally:
            self.thread_cpu_s += time.thread_time() - cpu0

    def poll(self) -> None:
        """Take one sample now, labelled with the open phase (the thread calls this at `hz`)."""
        nv, h = self._nvml, self._handle
        phase = self._phase  # read once: the label of this instant
        try:
            u = nv.nvmlDeviceGetUtilizationRates(h)
            sm, membw = float(u.gpu), float(u.memory)
        except Exception:
            sm = membw = float("nan")
        try:
            mem_gb = float(nv.nvmlDeviceGetMemoryInfo(h).used) / 1e9
        except Exception:
            mem_gb = float("nan")
        try:
            power_w = float(nv.nvmlDeviceGetPowerUsage(h)) / 1e3  # NVML reports milliwatts
        except Exception:
            power_w = float("nan")
        try:
            clock = float(nv.nvmlDeviceGetClockInfo(h, getattr(nv, "NVML_CLOCK_SM", _NVML_CLOCK_SM)))
        except Exception:
            clock = float("nan")
        self._rows.append((time.perf_counter(), phase, sm, membw, mem_gb, power_w, clock))

    # ---- phases -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def phase(self, name: str):
        """Label samples taken inside the block with `name` (phases do not nest)."""
        prev, self._phase = self._phase, name
        t0 = time.perf_counter()
        try:
            yield self
        finally:
            self._phase = prev
            self._phase_time_s[name] = self._phase_time_s.get(name, 0.0) + time.perf_counter() - t0

    # ---- results ----------------------------------------------------------------------------
    def samples(self) -> list[dict]:
        """Every raw sample as a dict (t_s relative to the first sample)."""
        if not self._rows:
            return []
        t0 = self._rows[0][0]
        return [dict(zip(("t_s", "phase", *QUANTITIES), (r[0] - t0, *r[1:]))) for r in list(self._rows)]

    def summary(self) -> dict:
        """Per phase: mean, p90 and max of each quantity, the sample count, and the achieved rate
        (samples per second of time spent inside that phase, Hz). Empty when NVML is unavailable."""
        out: dict[str, dict] = {}
        rows = list(self._rows)
        for name in sorted({r[1] for r in rows if r[1] is not None}):
            arr = np.array([r[2:] for r in rows if r[1] == name], dtype=float)
            ph = {}
            for j, q in enumerate(QUANTITIES):
                col = arr[:, j][~np.isnan(arr[:, j])]
                ph[q] = (
                    {"mean": float(col.mean()), "p90": float(np.percentile(col, 90)), "max": float(col.max())}
                    if col.size
                    else None
                )
            dur = self._phase_time_s.get(name, 0.0)
            ph["samples"] = int(arr.shape[0])
            ph["hz"] = float(arr.shape[0] / dur) if dur > 0 else None
            out[name] = ph
        return out

    def to_profile(self) -> dict:
        """The profile's "utilization" block: {"available", "note", "driver", <phase>: summary}."""
        return {"available": self.available, "note": self.note, "driver": self.driver, **self.summary()}


class _NoNvml:
    """Stands in for pynvml where no GPU is being profiled: init fails, so `available` is False."""

    def nvmlInit(self):
        raise RuntimeError("no NVML")


class _Util:
    def __init__(self, gpu, memory):
        self.gpu, self.memory = gpu, memory


class _Mem:
    def __init__(self, used):
        self.used = used
