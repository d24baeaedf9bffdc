"""`planner profile local`: time the project's own torch decoder on this machine.

The roofline predicts two times, a prefill of a prompt (or a batch of prompts) and one decode step
for a batch at a context length; this module measures exactly those with planner.runtime.model (the module
the runtime serves), so `planner plan --profile` can fit its efficiencies to real numbers:

    prefill: prefill(model, tokens[b, l], slots)            b=1 over prompt lengths l, then over b
    decode:  decode_step(model, tokens[b], slots, pos=c)     over batch b x context c (reads c+1 keys)

Each point: `warmup` untimed calls, then `reps` timed calls (CUDA events on a GPU, whose elapsed
time is the GPU's own; perf_counter on a CPU, where ops are synchronous); the profile keeps the
median and the 10th/90th percentiles. With `passes` > 1 the whole sweep runs that many times over
and each point keeps the median of all its passes' calls: on a shared machine (a cloud VM whose
neighbours come and go) a point timed in one burst can catch a transient slowdown of 30% or more,
which interpolation then spreads over its neighbours; points spread over the sweep's whole
duration all see the machine's typical speed. KV bytes per token are read off the allocated cache and
checked against ModelSpec.kv_bytes_per_token. Before allocating anything, the weights + KV +
activation estimate is checked against the device's free memory, and the output path against
write permission: a shape that cannot run, or a file that cannot be written, fails in a second,
not after minutes of measuring. An interrupted sweep still writes what it measured ("complete": false).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.errors import BadInput, shown
from planner.measure.ceilings import device_info, free_memory_bytes, nvml_index, resolve_device
from planner.measure.files import check_writable, command_line, save_profile
from planner.specs.models import ModelSpec, resolve_model

#: Default sweeps, (quick, device type) -> grid. Quick on a 2-core CPU with `tiny` takes ~20 s.
GRIDS = {
    (True, "cpu"): dict(prompt_lens=(32, 64, 128, 256, 512), prefill_batches=(1, 2, 4, 8), prefill_batch_len=64,
                        batches=(1, 2, 4, 8, 16), contexts=(64, 256, 1024)),
    (False, "cpu"): dict(prompt_lens=(32, 64, 128, 256, 512, 1024, 2048), prefill_batches=(1, 2, 4, 8, 16),
                         prefill_batch_len=128, batches=(1, 2, 4, 8, 16, 32, 64), contexts=(128, 256, 512, 1024, 2048)),
    (True, "cuda"): dict(prompt_lens=(128, 512, 2048, 4096), prefill_batches=(1, 4, 16), prefill_batch_len=512,
                         batches=(1, 4, 16, 64), contexts=(512, 2048)),
    (False, "cuda"): dict(prompt_lens=(128, 256, 512, 1024, 2048, 4096, 8192), prefill_batches=(1, 2, 4, 8, 16, 32),
                          prefill_batch_len=512, batches=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                          contexts=(256, 512, 1024, 2048, 4096, 8192)),
}
MAX_BATCH = 4096  # beyond this a sweep point is a typo, not a measurement


# ---- memory -------------------------------------------------------------------------------------
def memory_need_bytes(spec: ModelSpec, dtype: str, cache_tokens: int, prefill_tokens: int) -> dict:
    """Estimated peak memory of the sweep (B), by part:

        weights     = spec.weight_bytes(dtype)
        kv_cache    = cache_tokens * kv_bytes_per_token(dtype)   (the largest cache allocated)
        activations = 2 * prefill_tokens * (4 * hidden + 3 * intermediate) * bytes(dtype)
                      + prefill_tokens * vocab * 4   (hidden states, q/k/v/o, the MLP's gate/up,
                      with 2x headroom for the allocator; fp32 logits of the last tokens bound above)
    """
    from planner.specs.models import dtype_bytes

    b = dtype_bytes(dtype)
    act = 2.0 * prefill_tokens * (4 * spec.hidden + 3 * spec.intermediate) * b + prefill_tokens * spec.vocab * 4.0
    return {"weights": spec.weight_bytes(dtype), "kv_cache": float(cache_tokens * spec.kv_bytes_per_token(dtype)),
            "activations": act}


def check_memory(spec: ModelSpec, dtype: str, need: dict, free_bytes: float | None, where: str,
                 detail: str = "") -> None:
    """BadInput with the numbers when the estimate `need` (memory_need_bytes) exceeds `free_bytes`."""
    if free_bytes is None:
        return
    gb = 1e9
    if need["weights"] > free_bytes:
        raise BadInput(f"{spec.name} {dtype} needs {need['weights'] / gb:.1f} GB of weights; "
                       f"{where} has {free_bytes / gb:.1f} GB free")
    total = sum(need.values())
    if total > free_bytes:
        raise BadInput(
            f"{spec.name} {dtype} needs {total / gb:.1f} GB ({need['weights'] / gb:.1f} GB weights + "
            f"{need['kv_cache'] / gb:.1f} GB KV cache{detail} + {need['activations'] / gb:.1f} GB activations); "
            f"{where} has {free_bytes / gb:.1f} GB free: use smaller --batches/--contexts/--prompt-lens")


# ---- timing ---------------------------------------------------------------------------------------
def time_calls(fn, device, reps: int, warmup: int) -> list[float]:
    """Seconds of each of `reps` calls of `fn` after `warmup` untimed ones.

    GPU: a CUDA event pair around each call and one synchronize at the end, so the host never
    waits between calls (the GPU queue stays full, as in serving). CPU: perf_counter per call."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in ev:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) / 1e3 for s, e in ev]
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summarize(times: list[float]) -> dict:
    """Median and spread of one point's repetitions (s)."""
    a = np.asarray(times, dtype=float)
    return {"seconds": float(np.median(a)), "p10_s": float(np.percentile(a, 10)),
            "p90_s": float(np.percentile(a, 90)), "reps": int(a.size)}


# ---- the sweep ------------------------------------------------------------------------------------
def _check_grid(flag: str, values, lo: int, hi: int, why: str = "") -> tuple[int, ...]:
    vals = tuple(int(v) for v in values)
    if not vals:
        raise BadInput(f"{flag}: empty sweep")
    for v in vals:
        if not lo <= v <= hi:
            raise BadInput(f"{flag}: {v} is outside {lo}..{hi}{why}")
    return tuple(sorted(set(vals)))


def default_output(model: str, device: str) -> Path:
    """profiles/<model>-<device>-<YYYYmmdd-HHMMSS>.json (the model's name, not its path)."""
    name = Path(model).parent.name if model.endswith(".json") else Path(model).name
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("profiles") / f"{name}-{device.replace(':', '')}-{stamp}.json"


@dataclass(frozen=True)
class Sweep:
    """The points one run measures, already checked against the model and the device memory."""

    prefill_points: tuple[tuple[int, int], ...]  # (batch, prompt_len): batch 1 over lengths, then batches
    decode_points: tuple[tuple[int, int], ...]  # (batch, context_len)
    reps: int
    warmup: int
    skipped: int = 0  # default-grid decode points dropped because their KV cache does not fit
    passes: int = 1  # the whole sweep repeated, interleaved: each point's calls spread over the run

    @property
    def prefill_cache(self) -> tuple[int, int]:
        """(rows, tokens) of the cache the prefill sweep needs."""
        return max(b for b, _ in self.prefill_points), max(l for _, l in self.prefill_points)

    def to_dict(self) -> dict:
        return {"prefill_points": [list(p) for p in self.prefill_points],
                "decode_points": [list(p) for p in self.decode_points], "reps": self.reps, "warmup": self.warmup,
                "passes": self.passes}


def plan_sweep(spec: ModelSpec, dev, dtype: str, quick: bool = False, prompt_lens=None, batches=None,
               contexts=None, prefill_batches=None, prefill_batch_len=None, reps=None, warmup=None, passes: int = 1) -> Sweep:
    """Fill in the default grid (GRIDS), check every value (BadInput names the flag), and check the
    largest point against free memory: a default grid is trimmed to fit, a typed one is refused."""
    g = GRIDS[(quick, dev.type)]
    P = spec.max_position
    why = f" (model {spec.name} has max_position {P})"
    lens = _check_grid("--prompt-lens", prompt_lens or [l for l in g["prompt_lens"] if l <= P] or [P], 1, P, why)
    ctxs = _check_grid("--contexts", contexts or [c for c in g["contexts"] if c < P] or [P - 1], 1, P - 1, why)
    bs = _check_grid("--batches", batches or g["batches"], 1, MAX_BATCH)
    pbs = _check_grid("--prefill-batches", prefill_batches or g["prefill_batches"], 1, MAX_BATCH)
    pb_len = _check_grid("--prefill-batch-len", [prefill_batch_len or min(g["prefill_batch_len"], P)], 1, P, why)[0]
    reps = int(reps if reps is not None else (5 if quick else 10))
    warmup = int(warmup if warmup is not None else (2 if quick else 3))
    if reps < 1 or warmup < 0:
        raise BadInput(f"--reps must be >= 1 and --warmup >= 0, got {reps} and {warmup}")
    if not 1 <= int(passes) <= 100:
        raise BadInput(f"--passes: {passes} must be between 1 and 100")

    # Memory: weights first (the clearest refusal), then the largest cache and prefill batch.
    where = f"{dev}" if dev.type == "cuda" else "this machine"
    free = free_memory_bytes(dev)
    prefill_tokens = max(max(lens), max(pbs) * pb_len)
    kv_tok = spec.kv_bytes_per_token(dtype)
    points = [(b, c) for b in bs for c in ctxs]
    if free is not None and (batches is None or contexts is None):
        # Default grids are trimmed to memory (a 70B model will not hold batch 256 x 8192); a grid
        # the user typed is measured as typed or refused below.
        need = memory_need_bytes(spec, dtype, 0, prefill_tokens)
        budget = 0.9 * free - need["weights"] - need["activations"]
        points = [(b, c) for b, c in points if b * (c + 1) * kv_tok <= budget] or points[:1]
    big = max(points, key=lambda p: p[0] * p[1])
    cache_tokens = max(big[0] * (big[1] + 1), prefill_tokens)
    check_memory(spec, dtype, memory_need_bytes(spec, dtype, cache_tokens, prefill_tokens), free, where,
                 detail=f" for batch {big[0]} x {big[1] + 1} tokens")
    prefill_points = [(1, l) for l in lens]
    prefill_points += [(b, pb_len) for b in pbs if (b, pb_len) not in prefill_points]
    return Sweep(tuple(prefill_points), tuple(points), reps, warmup, skipped=len(bs) * len(ctxs) - len(points),
                 passes=int(passes))


def run_local_profile(model: str, device: str = "cpu", dtype: str | None = None, quick: bool = False,
                      prompt_lens=None, batches=None, contexts=None, prefill_batches=None,
                      prefill_batch_len: int | None = None, reps: int | None = None, warmup: int | None = None,
                      out: str | Path | None = None, weights: str | None = None, progress: bool = True,
                      ceilings: bool = True, seed: int = 0, command: str | None = None,
                      threads: int | None = None, passes: int = 1) -> Path:
    """Measure prefill and decode times of `model` (preset name or config.json) on `device` and write
    a profile file (planner.measure.files format). Returns its path.

    dtype: 'bf16' on cuda, 'fp32' on cpu when None. Grids default to GRIDS[(quick, device type)];
    `batches` x `contexts` is the decode grid, `prompt_lens` the batch-1 prefill sweep, and
    `prefill_batches` prompts of `prefill_batch_len` tokens the batched prefill sweep. `threads`
    sets torch's CPU threads for the run (e.g. 1 to match a runtime worker per core); `passes` runs
    the sweep that many times over, each point the median of all its passes (module docstring).
    Raises BadInput for a bad device, dtype, grid, output path, or a shape that does not fit memory;
    an error or interrupt mid-sweep writes what was measured ("complete": false) and re-raises."""
    spec = resolve_model(model)
    out = Path(out) if out is not None else default_output(model, device)
    check_writable(out)  # before minutes of measuring
    dev = resolve_device(device)
    dtype = dtype or ("bf16" if dev.type == "cuda" else "fp32")
    if dtype not in ("fp32", "bf16", "fp16"):
        raise BadInput(f"--dtype {shown(dtype)}: expected bf16, fp16 or fp32")
    if spec.experts > 1:
        raise BadInput(f"model {shown(spec.name)}: mixture-of-experts shapes are not supported by planner.runtime.model")
    sweep = plan_sweep(spec, dev, dtype, quick, prompt_lens, batches, contexts, prefill_batches,
                       prefill_batch_len, reps, warmup, passes)
    if threads is not None and not 1 <= int(threads) <= 1024:
        raise BadInput(f"--threads: {threads} must be between 1 and 1024")

    import torch

    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))

    from planner.runtime.model import build_model
    from planner.measure.ceilings import measure_ceilings
    from planner.measure.nvml import NvmlSampler

    tdt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    sampler = NvmlSampler(nvml_index(dev)) if dev.type == "cuda" else NvmlSampler.unavailable()
    meta = _profile_meta(spec, dev, dtype, sweep, sampler.driver, command, quick, weights, seed)
    times: dict = {}  # (phase, batch, prompt_len, context_len) -> every timed call of that point (s)
    t_start = time.perf_counter()
    bar = _Bar(progress, sweep.passes * (len(sweep.prefill_points) + len(sweep.decode_points)) + (1 if ceilings else 0))
    prev_sigterm = _sigterm_as_interrupt()
    try:
        with bar, sampler:
            if ceilings:
                bar.step("device ceilings")
                meta["ceilings"] = measure_ceilings(dev, tdt, quick=quick).to_dict()
                bar.advance()
            bar.step("building the model")
            m = build_model(spec, device=str(dev), dtype=tdt, seed=seed, weights=weights)
            gen = torch.Generator().manual_seed(seed)
            for k in range(sweep.passes):
                tag = f" (pass {k + 1}/{sweep.passes})" if sweep.passes > 1 else ""
                with sampler.phase("prefill"):
                    _prefill_sweep(m, sweep, dev, gen, bar, times, tag)
                with sampler.phase("decode"):
                    _decode_sweep(m, sweep, dev, gen, bar, times, meta, tag)
        meta["complete"] = True
    except BaseException as e:
        meta["error"] = f"interrupted during {bar.where}: {type(e).__name__}: {e}".strip()
        _finish(meta, sampler, t_start)
        save_profile(out, meta, _samples(times))
        if _is_oom(e):
            raise BadInput(f"out of memory during {bar.where} on {dev}; what was measured is saved to {out}") from None
        raise
    finally:
        _restore_sigterm(prev_sigterm)
        torch.set_num_threads(threads_before)
    _finish(meta, sampler, t_start)
    return save_profile(out, meta, _samples(times))


def _samples(times: dict) -> list[dict]:
    """The profile's rows: each point's median and spread over all its timed calls, in sweep order."""
    return [{"phase": ph, "batch": b, "prompt_len": l, "context_len": c, **summarize(t)} for (ph, b, l, c), t in times.items()]


def _profile_meta(spec, dev, dtype: str, sweep: Sweep, driver, command, quick: bool, weights, seed: int) -> dict:
    """The profile's header before anything is measured ("complete": false until the sweep ends)."""
    meta = {
        "kind": "local", "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else command_line(),
        "device": {**device_info(dev), "driver": driver},
        "engine": {"name": "planner.runtime.model", "version": _version()}, "model": spec.to_dict(), "dtype": dtype,
        "tp": 1, "ceilings": None, "kv_bytes_per_token": {"measured": None, "formula": spec.kv_bytes_per_token(dtype)},
        "utilization": None, "complete": False, "warnings": [],
        "sweep": {**sweep.to_dict(), "quick": quick, "weights": weights or "random", "seed": seed},
    }
    if sweep.skipped:
        meta["warnings"].append(f"{sweep.skipped} decode points skipped: their KV cache does not fit memory")
    return meta


def _prefill_sweep(m, sweep: Sweep, dev, gen, bar, times: dict, tag: str = "") -> None:
    """Time prefill(model, tokens[b, l], slots) at each (b, l); one cache holds the largest."""
    import torch

    from planner.runtime.model import prefill

    m.setup_cache(*sweep.prefill_cache)
    for b, l in sweep.prefill_points:
        bar.step(f"prefill batch {b} x {l} tokens{tag}")
        t = torch.randint(0, m.spec.vocab, (b, l), generator=gen).to(dev)
        s = torch.arange(b, device=dev)
        got = time_calls(lambda: prefill(m, t, s), dev, sweep.reps, sweep.warmup)
        times.setdefault(("prefill", b, l, 0), []).extend(got)
        bar.advance()


def _decode_sweep(m, sweep: Sweep, dev, gen, bar, times: dict, meta: dict, tag: str = "") -> None:
    """Time decode_step at each (b, c): the new token at position c reads c + 1 cached keys. One cache
    per batch size, just long enough for its longest context, so memory stays bounded; the first
    cache gives the measured KV bytes per token."""
    import torch

    from planner.runtime.model import decode_step, kv_bytes_per_token

    kv = meta["kv_bytes_per_token"]
    for b in sorted({b for b, _ in sweep.decode_points}):
        cs = [c for bb, c in sweep.decode_points if bb == b]
        m.setup_cache(b, max(cs) + 1)
        if kv["measured"] is None:
            kv["measured"] = kv_bytes_per_token(m)
            if abs(kv["measured"] - kv["formula"]) > 0.5:
                meta["warnings"].append(f"KV bytes per token: allocated {kv['measured']:.0f} B, formula {kv['formula']} B")
        t = torch.randint(0, m.spec.vocab, (b,), generator=gen).to(dev)
        s = torch.arange(b, device=dev)
        for c in cs:
            bar.step(f"decode batch {b} at context {c}{tag}")
            pos = torch.full((b,), c, device=dev)
            # read_len given: decode_step need not sync the device to find max(pos)
            got = time_calls(lambda: decode_step(m, t, s, pos, c + 1), dev, sweep.reps, sweep.warmup)
            times.setdefault(("decode", b, 0, c), []).extend(got)
            bar.advance()


def _finish(meta: dict, sampler, t_start: float) -> None:
    meta["utilization"] = sampler.to_profile()
    meta["wall_s"] = round(time.perf_counter() - t_start, 2)


def _sigterm_as_interrupt():
    """Make SIGTERM (a scheduler's time limit, `kill`) raise KeyboardInterrupt while measuring, so the
    partial profile is still written. Only the main thread may set handlers; elsewhere do nothing."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(prev) -> None:
    if prev is not None:
        import signal

        signal.signal(signal.SIGTERM, prev)


def _is_oom(e: BaseException) -> bool:
    return type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()


def _version() -> str:
    import planner

    return planner.__version__


class _Bar:
    """A rich progress bar with an ETA on stderr, or nothing when `enabled` is False. `where` is
    the step in progress (for the error message of an interrupted run)."""

    def __init__(self, enabled: bool, total: int):
        self.p = None
        self.where = "setup"
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), transient=False)
            self.task = self.p.add_task("profiling", total=total)

    def __enter__(self):
        if self.p:
            self.p.start()
        return self

    def __exit__(self, *exc):
        if self.p:
            self.p.stop()

    def step(self, what: str) -> None:
        self.where = what
        if self.p:
            self.p.update(self.task, description=what)

    def advance(self) -> None:
        if self.p:
            self.p.advance(self.task)
