"""The pilot's device: a profile of it (given, cached under profiles/, or measured now with the
pilot's threads per worker) -> the calibrated replica that times its steps; and the local KV
transport's bandwidth. torch is imported only to profile.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from planner.errors import BadInput
from planner.queueing.samples import Demand


STEP_TIME_MODELS = ("profile", "plan")
# The pilot's quick profile: 3 passes over its grid, 3 timed calls (after 1 untimed) per point
# each. On this project's 2-core cloud VM a point timed in one burst of 5 calls was up to 2x its
# typical time (a neighbour's transient load); 3 passes spread over the ~45 s sweep keep each
# point's median at the machine's typical speed, which is what a 20-60 s pilot averages over.
PROFILE_REPS, PROFILE_WARMUP, PROFILE_PASSES = 3, 1, 3
DECODE_BATCHES = (1, 2, 3, 4, 6, 8, 12, 14, 16, 24, 32, 48, 64, 96, 128)  # sequences; why: profile_grid

# ---- the local device: profile -> calibrated replica ----------------------------------------------
def profile_grid(d: Demand, max_seqs: int) -> dict:
    """The sweep that calibrates a pilot: the prompt lengths and decode contexts this workload
    has (10th, 50th, 90th percentiles), batched prefill at the mean prompt, decode batches up to
    the runtime's max_seqs. A fit over the points the pilot visits beats one over a generic grid
    (a CPU's step time is not one roofline from context 64 to 1024)."""
    q = lambda x, p: int(max(1, round(float(np.percentile(x, p)))))  # noqa: E731
    ctx = d.prompt + d.output / 2
    # Powers of two, the midpoints from 12 on, and the batches where this project's 2-core VM's
    # GEMM kernels break the line. A CPU's decode step is not smooth in the batch: `tiny`'s batch 3
    # runs near its batch 2 and its batch 4 much slower (fidelity run 12: batch 3's steps took
    # 0.81-0.92 of the line from 2 to 4 in every one of its 12 pilots, 2,112 steps; batches 5-6
    # 0.89-0.95 of the line from 4 to 8), and it rises from 12 to 15, then falls at 16 (batch 12
    # was slower than 16 in each of six processes timed; batches 13-15 took 1.25-1.39x the line
    # from 12 to 16 in both pilots of run 12 that ran them). Timing every batch instead fits one
    # process's own bumps (how deep they are differs from one process to the next); the queueing
    # model averages the step over the batch a request meets (queueing.arrivals.mean_step), so
    # one point's error is spread, not jumped on. Each point is timed over 3 passes.
    batches = sorted({b for b in DECODE_BATCHES if b <= max_seqs} | {max_seqs})
    return {"prompt_lens": sorted({q(d.prompt, 10), q(d.prompt, 50), q(d.prompt, 90), q(d.prompt, 99)}),
            "prefill_batches": [1, 2, 4, 8], "prefill_batch_len": int(round(d.mean_prompt)),
            "batches": batches, "contexts": sorted({q(ctx, 10), q(ctx, 50), q(d.prompt + d.output, 90)}),
            "reps": PROFILE_REPS, "warmup": PROFILE_WARMUP, "passes": PROFILE_PASSES}


def cached_profile_path(model: str, device: str, threads: int, dtype: str, grid: dict) -> Path:
    """profiles/validate-<model>-<device>-<threads>t-<dtype>-<grid hash>.json: one profile per
    thread count (a CPU worker with 1 thread is not half as fast as one with 2) and sweep."""
    import hashlib
    import json

    name = Path(model).parent.name if model.endswith(".json") else model
    h = hashlib.sha1(json.dumps(grid, sort_keys=True).encode()).hexdigest()[:8]
    return Path("profiles") / f"validate-{name}-{device.replace(':', '')}-{threads}t-{dtype}-{h}.json"


def ensure_profile(model: str, device: str, threads: int, dtype: str, grid: dict, path: str | Path | None = None,
                   say=print, fresh: bool = False) -> Path:
    """The profile that calibrates the prediction: `path` if given; else the cached one for this
    model, device, thread count and sweep (unless `fresh`); else a quick local profile of `grid`
    measured now (about 45 s on 2 cores) with the pilot's threads per worker, the times a worker
    sees, written over the cached one."""
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise BadInput(f"--profile {p}: file not found")
        return p
    out = cached_profile_path(model, device, threads, dtype, grid)
    if out.exists() and not fresh:
        say(f"profile: reusing {out} (--reprofile measures it again)")
        return out
    say(f"profile: {'measuring again' if out.exists() else 'none given; measuring'} a quick local profile of {model} on "
        f"{device} with {threads or 'default'} thread(s) per worker over this workload's lengths -> {out}")
    import torch

    from planner.measure.local import run_local_profile

    old = torch.get_num_threads()
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        return run_local_profile(model, device, dtype=dtype, quick=True, out=out, progress=True, **grid)
    finally:
        torch.set_num_threads(old)


#: Probes whose lone-prompt factor a pilot predicts with: the median of the most recent this many
#: that used its profile. One probe's factor (planner.pilot.predict.in_situ_prefill) compares a few
#: lone prompts with a profile measured a minute or more before, and this VM's speed wanders in
#: between: over 32 disaggregated pilots at 30-60% load its correlation with the factor each
#: pilot's own prefills needed was 0.06. Re-predicting the 108 pilots of fidelity runs 1-9: TTFT
#: p50 14.2% median |error| with each probe alone; with the median of the last 5, 12 or 24
#: probes, the history carried across runs, 12.3%, 10.2%, 9.3%; of the last 20, each run
#: starting with none, 11.0%.
PROBE_HISTORY = 20


def probe_history_path(profile_path) -> Path:
    """Where the probes that used `profile_path` are kept: beside it, <profile>.probes.json."""
    p = Path(profile_path)
    return p.with_name(p.stem + ".probes.json")


def pooled_prefill_factor(profile_path, own: float, entry: dict, say=print) -> tuple[float, int]:
    """(median lone-prompt factor of the last PROBE_HISTORY probes with this profile, this one's
    `own` included, how many): appends `entry` (with "factor": own) to the history beside the
    profile, rewritten atomically. An unreadable or unwritable history is said and set aside:
    the pilot then predicts with its own probe."""
    import json

    from planner.measure.files import atomic_write_text

    path = probe_history_path(profile_path)
    try:
        past = json.loads(path.read_text()).get("probes", []) if path.exists() else []
        past = [x for x in past if isinstance(x, dict) and isinstance(x.get("factor"), (int, float)) and x["factor"] > 0]
    except (OSError, ValueError, AttributeError) as e:
        say(f"probe history {path}: unreadable ({e}); starting a new one")
        past = []
    probes = (past + [{**entry, "factor": round(float(own), 4)}])[-PROBE_HISTORY:]
    try:
        atomic_write_text(path, json.dumps({"probes": probes}, indent=1) + "\n", "probe history")
    except BadInput as e:
        say(f"{e}: predicting with this probe's factor alone")
        return own, 1
    return float(np.median([x["factor"] for x in probes])), len(probes)


def profile_noise(path) -> float | None:
    """Median over a profile's points of (p90 - p10) / median: how repeatable its times were."""
    from planner.measure.files import load_profile

    df = load_profile(path).samples
    if not {"p10_s", "p90_s"} <= set(df.columns):
        return None
    return float(((df["p90_s"] - df["p10_s"]) / df["seconds"]).median())


def profile_age_h(path) -> float | None:
    """Hours since the profile at `path` was measured (its "created" stamp), or None if unknown."""
    import datetime as dt

    from planner.measure.files import load_profile

    try:
        made = dt.datetime.fromisoformat(str(load_profile(path).meta.get("created")))
    except (TypeError, ValueError):
        return None
    if made.tzinfo is None:
        made = made.replace(tzinfo=dt.timezone.utc)
    return (dt.datetime.now(dt.timezone.utc) - made).total_seconds() / 3600


def local_replica(spec, profile_path: Path, roofline: str = "profile"):
    """(Replica on the profiled device, calibration report). `roofline`: "profile" (the default)
    uses the measured points themselves (calibrate.measured_replica: what `planner plan --profile`
    uses for the profiled device at the profiled model, tp and dtype); "plan" the roofline with
    the Efficiency fitted to them (calibrate.fit_profile: what plan uses for every other GPU type,
    model, tp or dtype), so its share of the error shows."""
    from planner.steptime.calibrate import calibrate_from_profiles, fit_profile
    from planner.steptime.measured import measured_replica
    from planner.specs.catalog import load_catalog
    from planner.measure.files import load_profile, profile_engine
    from planner.steptime.roofline import Replica

    prof = load_profile(profile_path)
    if prof.meta.get("kind") not in ("local", "endpoint"):
        raise BadInput(f"--profile {profile_path}: kind {prof.meta.get('kind')!r}: expected a `planner profile local` or `endpoint` profile")
    if (prof.model or {}).get("name") not in (None, spec.name):
        raise BadInput(f"--profile {profile_path}: profiled model {prof.model.get('name')!r}, the pilot serves {spec.name!r}")
    cat = load_catalog()
    cal = calibrate_from_profiles([profile_path], cat)
    info = cal.report["profiles"][0]
    gpu = cal.local_gpus[0] if cal.local_gpus else cat.gpus[info["gpu"]]
    dtype = prof.dtype if prof.dtype in ("bf16", "fp16", "fp32") else "bf16"
    tp = int(prof.tp or 1)
    eff, fit = fit_profile(prof, gpu)
    report = {"path": str(profile_path), "device": prof.device_name, "kind": prof.kind, "engine": profile_engine(prof),
              "torch_threads": (prof.meta.get("device") or {}).get("torch_threads"), "plan_fit": fit, "roofline": roofline}
    if roofline == "plan":
        return Replica(spec, gpu, tp, dtype, dtype, eff), {**report, "fit": fit}
    if roofline not in STEP_TIME_MODELS:
        raise BadInput(f"--roofline {roofline!r}: expected {', '.join(STEP_TIME_MODELS)}")
    return measured_replica(Replica(spec, gpu, tp, dtype, dtype, eff), prof), {**report, "fit": fit,
                                                                                 "model": "measured profile points, interpolated"}


def measure_transport(msg_bytes: int, n: int = 40) -> float:
    """Loopback ZeroMQ PUSH -> PULL throughput for messages of `msg_bytes` (B/s): the transport the
    runtime moves KV layers over, unloaded. A ceiling input for the KV transfer prediction."""
    import threading

    import zmq

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    payload = np.ones(max(1, int(msg_bytes)), dtype=np.uint8)
    got = []

    def recv():
        for _ in range(n + 1):
            got.append(len(pull.recv(copy=False)))

    try:
        t = threading.Thread(target=recv, daemon=True)
        t.start()
        push.send(payload, copy=False)  # connect and warm
        while not got:
            time.sleep(0.001)
        t0 = time.perf_counter()
        for _ in range(n):
            push.send(payload, copy=False)
        t.join(10)
        dt = time.perf_counter() - t0
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()
    return n * payload.nbytes / dt if dt > 0 else float("inf")
