"""Run a pilot of a split on this machine and put measured beside predicted, stage by stage.

The pipeline, one function each:

    derive_pilot     the plan's prefill:decode ratio and per-replica load, scaled to the local
                     workers (or, without a plan, the split that balances the two pools here)
    local_replica    a profile of this device (given, cached under profiles/, or measured now with
                     the pilot's threads per worker) -> calibrate -> Replica on the local device
                     (default: the profile's measured step times, as `plan --profile` uses them)
    measure_contention  a CPU pilot's workers share cores: a few seconds' probe of the pilot's
                     split (planner.pilot.probe) says how much each slows beside a busy neighbour
    pilot_replica    the replica as the pilot runs it: times x (1 + kappa x the neighbour's
                     predicted busy share), decode attention read to the batch's longest context
    predict          the plan's queueing models (planner.queueing.models) at the pilot's per-replica load,
                     with the runtime's own batching limits; see `predict` for where this runtime
                     differs from what `plan` assumes, and what that changes
    simulate_pilot   the plan's discrete-event simulator on the very schedule the replay sends:
                     the closed forms' own check, reported beside them ("simulated")
    run_pilot        `planner serve` with the pilot's split (or an --endpoint), warm-up, open-loop
                     replay (planner.pilot.replay), /metrics before and after, worker CPU time
    compare          predicted vs measured, relative error (predicted - measured) / measured

`validate(...)` joins them and returns a ValidateResult whose `to_dict()` is the JSON contract:
`pilot`, `metrics` (each of METRICS -> {predicted, measured, rel_error}), `requests` {sent,
completed, failed, lost}, `valid`, `samples` {ttft_ms, tpot_ms}, and the details behind them.

A result is `valid` only when nothing spoiled the comparison: no failed request, no worker death,
no interruption, and no pilot process starved of CPU (run-queue waits, /proc/<pid>/schedstat:
on a shared machine a pilot measures everyone's work). An invalid result still reports everything
it measured, but its errors are not the model's errors. torch is imported only to profile;
aiohttp only to replay.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from planner.errors import BadInput
from planner.queueing.engine import engine_named
from planner.queueing.models import Demand, Pcts, capacity
from planner.queueing.pools import PoolPrediction as Prediction
from planner.queueing.pools import LAYERWISE_KV_LATENCY_S, engine_replica, predict_colocated, predict_split, role_model
from planner.runtime.config import ServeConfig
from planner.steptime.adjust import Adjusted

METRICS = ("ttft_ms_p50", "ttft_ms_p90", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p90", "tpot_ms_p99",
           "throughput_rps", "output_tokens_per_s", "kv_transfer_ms_mean")
#: Runtime defaults the prediction must share, read from the runtime's own config.
RUNTIME_MAX_SEQS = ServeConfig.max_seqs
RUNTIME_MAX_BATCH_TOKENS = ServeConfig.max_batch_tokens
#: Validate's workload defaults: sized so a CPU pilot of `tiny` sees tens of requests a minute.
DEFAULT_INPUT_LEN = "uniform:64-192"
DEFAULT_OUTPUT_LEN = "uniform:32-96"
DEFAULT_LOAD_FRAC = 0.6
#: Step-time models of local_replica (--roofline), the default first.
STEP_TIME_MODELS = ("profile", "plan")


# ---- the pilot ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pilot:
    """What runs: a split of local workers at an arrival rate. Rates in req/s."""

    model: str
    device: str
    mode: str  # "disaggregated" | "colocated"
    prefill_workers: int = 1
    decode_workers: int = 1
    workers: int = 0  # colocated
    threads_per_worker: int = 1
    rate_rps: float = 0.0
    load_frac: float = DEFAULT_LOAD_FRAC
    capacity_rps: float = 0.0  # predicted throughput capacity of the pilot (req/s)
    max_seqs: int = RUNTIME_MAX_SEQS
    max_batch_tokens: int = RUNTIME_MAX_BATCH_TOKENS
    max_model_len: int = 0
    chunked_prefill: bool = False
    dtype: str = "fp32"
    traffic_share: float | None = None  # pilot rate / the workload's (production) rate
    why: tuple[str, ...] = ()

    @property
    def n_workers(self) -> int:
        return self.workers if self.mode == "colocated" else self.prefill_workers + self.decode_workers

    def label(self) -> str:
        if self.mode == "colocated":
            return f"colocated x{self.workers}" + (" (chunked prefill)" if self.chunked_prefill else "")
        return f"{self.prefill_workers} prefill + {self.decode_workers} decode"

    def as_colocated(self) -> "Pilot":
        """The same workers (and threads each) serving both phases: the comparison on the same cores."""
        return replace(self, mode="colocated", workers=self.n_workers,
                       why=self.why + (f"colocated comparison: the same {self.n_workers} workers doing both phases",))

    def serve_options(self) -> dict:
        """Options for planner.runtime.start_server."""
        o = dict(model=self.model, device=self.device, mode=self.mode, dtype=self.dtype, max_seqs=self.max_seqs,
                 max_batch_tokens=self.max_batch_tokens, max_model_len=self.max_model_len,
                 chunked_prefill=self.chunked_prefill, threads_per_worker=self.threads_per_worker if self.device == "cpu" else 0)
        if self.mode == "colocated":
            o["workers"] = self.workers
        else:
            o.update(prefill_workers=self.prefill_workers, decode_workers=self.decode_workers)
        return o

    def to_dict(self) -> dict:
        d = asdict(self)
        d["why"] = list(self.why)
        d["label"] = self.label()
        return d


def default_max_workers(device: str, cores: int | None = None) -> int:
    """Workers that fit this machine. CPU: two threads per worker with one core left for the
    router and the load generator, at least 2 (one prefill + one decode, one thread each on a
    2-core machine). GPU: 2 processes sharing the device."""
    if device.startswith("cuda"):
        return 2
    cores = cores or os.cpu_count() or 2
    return max(2, (cores - 1) // 2)


def threads_per_worker(device: str, workers: int, cores: int | None = None) -> int:
    """torch threads per worker on CPU: the cores shared evenly (the runtime's own default)."""
    if device.startswith("cuda"):
        return 0
    return max(1, (cores or os.cpu_count() or 1) // max(1, workers))


def split_for_ratio(ratio_prefill: float, max_workers: int) -> tuple[int, int]:
    """(prefill, decode) workers, each >= 1 and together <= max_workers, whose prefill share
    p / (p + d) is closest to `ratio_prefill`; ties go to more workers."""
    best = None
    for total in range(2, max_workers + 1):
        for p in range(1, total):
            key = (abs(p / total - ratio_prefill), -total)
            if best is None or key < best[0]:
                best = (key, (p, total - p))
    return best[1]


def plan_summary(doc: dict, source: str = "plan", workload=None) -> dict:
    """What a pilot needs from `planner plan --json`: the recommended kind, the replica counts,
    the per-replica load (rate / capacity of the busiest pool) and the workload (rebuilt from the
    JSON unless `workload` is given: a trace's lengths are not in it)."""
    if not isinstance(doc, dict) or "workload" not in doc or "disaggregated" not in doc:
        raise BadInput(f"{source}: not a `planner plan --json` result (no 'workload'/'disaggregated' fields)")
    w = workload if workload is not None else workload_from_plan(doc["workload"], source)
    out = {"recommendation": doc.get("recommendation"), "workload": w}
    for kind, roles in (("disaggregated", ("prefill", "decode")), ("colocated", ("pool",))):
        side = doc.get(kind) or {}
        if not side.get("feasible"):
            continue
        counts, loads = {}, {}
        for role in roles:
            pools = side.get(role) or []
            n = sum(int(p.get("replicas", 0)) for p in pools)
            cap = sum(int(p.get("replicas", 0)) * float(p.get("capacity_rps_per_replica") or 0) for p in pools)
            counts[role] = n
            loads[role] = w.rate_rps / cap if cap > 0 else None
        out[kind] = {"replicas": counts, "load": loads}
    if "disaggregated" not in out and "colocated" not in out:
        raise BadInput(f"{source}: the plan has no feasible side to pilot")
    return out


def workload_from_plan(wd: dict, source: str):
    """Rebuild the Workload a plan JSON was sized for (parametric lengths; a trace's lengths are not
    in the JSON: give --trace/--workload beside --plan for those)."""
    from planner.workload.workload import SLO, LengthDist, Workload

    def dist(name):
        s = wd.get(name) or {}
        kind, params = s.get("kind"), dict(s.get("params") or {})
        if kind == "empirical" or kind is None:
            raise BadInput(f"{source}: workload.{name} is {kind or 'missing'}: give the --trace or --workload beside --plan")
        params = {k: (math.inf if v is None and k == "high_tok" else v) for k, v in params.items()}
        return LengthDist(kind, **params)

    slo = wd.get("slo") or {}
    try:
        return Workload(rate_rps=float(wd["rate_rps"]), mean_rate_rps=float(wd.get("mean_rate_rps", wd["rate_rps"])),
                        peak_factor=float(wd.get("peak_factor", 1.0)), input=dist("input"), output=dist("output"),
                        slo=SLO(float(slo.get("ttft_ms", 1000)), float(slo.get("tpot_ms", 50)), int(slo.get("percentile", 90))),
                        arrival_cv2=float(wd.get("arrival_cv2", 1.0)), source=f"plan {source}")
    except (KeyError, TypeError, ValueError) as e:
        raise BadInput(f"{source}: workload field unreadable ({e})") from None


def derive_pilot(model: str, device: str, workload, plan: dict | None = None, max_workers: int | None = None,
                 mode: str | None = None, prefill_workers: int | None = None, decode_workers: int | None = None,
                 workers: int | None = None, load_frac: float | None = None, max_seqs: int = RUNTIME_MAX_SEQS,
                 max_batch_tokens: int = RUNTIME_MAX_BATCH_TOKENS, chunked_prefill: bool = False,
                 cores: int | None = None) -> Pilot:
    """The pilot's shape (mode, workers, threads) and load fraction; the rate comes later, from
    the predicted capacity (in `validate`). Reasons go into `why`, in words.

    With a plan: its recommended kind; disaggregated keeps its prefill share n_p / (n_p + n_d)
    (split_for_ratio within max_workers) and the per-replica load of its busiest pool (rate /
    capacity); colocated keeps its pool's load. Without one: disaggregated with all local workers,
    split later to balance the pools (`balance_split`), at DEFAULT_LOAD_FRAC of capacity."""
    why = []
    cores = cores or os.cpu_count() or 2
    W = max_workers or default_max_workers(device, cores)
    if W < 1:
        raise BadInput(f"--max-workers must be >= 1, got {W}")
    if max_workers is None:
        why.append(f"{W} workers fit this machine ({cores} cores: " + ("one GPU shared by 2 processes)" if device.startswith("cuda")
                   else "2 threads per worker, a core left for the router and client; at least 2)"))
    lf = load_frac
    kind = mode
    p = d = None
    if plan is not None:
        rec = plan.get("recommendation")
        kind = kind or (rec if rec in ("disaggregated", "colocated") else ("disaggregated" if "disaggregated" in plan else "colocated"))
        side = plan.get(kind)
        if side is None:
            raise BadInput(f"--plan: the plan's {kind} side is infeasible: nothing to pilot (try --mode {'colocated' if kind == 'disaggregated' else 'disaggregated'})")
        loads = {r: v for r, v in side["load"].items() if v is not None}
        if kind == "disaggregated":
            n_p, n_d = side["replicas"]["prefill"], side["replicas"]["decode"]
            p, d = split_for_ratio(n_p / (n_p + n_d), W)
            why.append(f"plan: {n_p} prefill + {n_d} decode replicas (prefill share {n_p / (n_p + n_d):.0%}); "
                       f"closest split within {W} workers: {p} + {d}")
        else:
            why.append(f"plan recommends colocated ({side['replicas']['pool']} replicas)")
        if lf is None and loads:
            role, lf = max(loads.items(), key=lambda kv: kv[1])
            why.append(f"plan runs its {role} replicas at {lf:.0%} of their capacity: the pilot runs at that share of its own capacity")
    kind = kind or "disaggregated"
    if kind not in ("disaggregated", "colocated"):
        raise BadInput(f"--mode {kind!r}: expected disaggregated or colocated")
    if prefill_workers or decode_workers:
        p, d = prefill_workers or p or 1, decode_workers or d or 1
        why.append(f"split given: {p} prefill + {d} decode")
    if kind == "colocated":
        n = workers or W
        threads = threads_per_worker(device, n, cores)
        pilot = Pilot(model, device, "colocated", workers=n, threads_per_worker=threads)
    else:
        if W < 2 and not (p and d):
            raise BadInput("a disaggregated pilot needs --max-workers >= 2 (one prefill, one decode)")
        p, d = (p, d) if p and d else (0, 0)  # 0: balance later
        n = (p + d) if p and d else W
        threads = threads_per_worker(device, n, cores)
        pilot = Pilot(model, device, "disaggregated", prefill_workers=p, decode_workers=d, threads_per_worker=threads)
    if device == "cpu":
        why.append(f"{threads} torch thread(s) per worker ({cores} cores / {n} workers)")
    lf = DEFAULT_LOAD_FRAC if lf is None else float(lf)
    if not 0 < lf < 1.5:
        raise BadInput(f"--load-frac must be in (0, 1.5), got {lf}")
    if load_frac is None and plan is None:
        why.append(f"load: {lf:.0%} of the pilot's predicted capacity (default)")
    elif load_frac is not None:
        why.append(f"load: {lf:.0%} of the pilot's predicted capacity (--load-frac)")
    return replace(pilot, load_frac=lf, max_seqs=max_seqs, max_batch_tokens=max_batch_tokens, chunked_prefill=chunked_prefill,
                   dtype="bf16" if device.startswith("cuda") else "fp32", why=tuple(why))


# ---- the local device: profile -> calibrated replica ----------------------------------------------
def profile_grid(d: Demand, max_seqs: int) -> dict:
    """The sweep that calibrates a pilot: the prompt lengths and decode contexts this workload
    has (10th, 50th, 90th percentiles), batched prefill at the mean prompt, decode batches up to
    the runtime's max_seqs. A fit over the points the pilot visits beats one over a generic grid
    (a CPU's step time is not one roofline from context 64 to 1024)."""
    q = lambda x, p: int(max(1, round(float(np.percentile(x, p)))))  # noqa: E731
    ctx = d.prompt + d.output / 2
    batches = sorted({b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b <= max_seqs} | {max_seqs})
    return {"prompt_lens": sorted({q(d.prompt, 10), q(d.prompt, 50), q(d.prompt, 90), q(d.prompt, 99)}),
            "prefill_batches": [1, 2, 4, 8], "prefill_batch_len": int(round(d.mean_prompt)),
            "batches": batches, "contexts": sorted({q(ctx, 10), q(ctx, 50), q(d.prompt + d.output, 90)})}


def cached_profile_path(model: str, device: str, threads: int, dtype: str, grid: dict) -> Path:
    """profiles/validate-<model>-<device>-<threads>t-<dtype>-<grid hash>.json: one profile per
    thread count (a CPU worker with 1 thread is not half as fast as one with 2) and sweep."""
    import hashlib
    import json

    name = Path(model).parent.name if model.endswith(".json") else model
    h = hashlib.sha1(json.dumps(grid, sort_keys=True).encode()).hexdigest()[:8]
    return Path("profiles") / f"validate-{name}-{device.replace(':', '')}-{threads}t-{dtype}-{h}.json"


def ensure_profile(model: str, device: str, threads: int, dtype: str, grid: dict, path: str | Path | None = None,
                   say=print) -> Path:
    """The profile that calibrates the prediction: `path` if given; else the cached one for this
    model, device, thread count and sweep; else a quick local profile of `grid` measured now
    (about 30 s on 2 cores) with the pilot's threads per worker, the times a worker sees."""
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise BadInput(f"--profile {p}: file not found")
        return p
    out = cached_profile_path(model, device, threads, dtype, grid)
    if out.exists():
        say(f"profile: reusing {out} (delete it to measure again)")
        return out
    say(f"profile: none given; measuring a quick local profile of {model} on {device} with "
        f"{threads or 'default'} thread(s) per worker over this workload's lengths -> {out}")
    import torch

    from planner.measure.local import run_local_profile

    old = torch.get_num_threads()
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        return run_local_profile(model, device, dtype=dtype, quick=True, out=out, progress=True, reps=5, **grid)
    finally:
        torch.set_num_threads(old)


def profile_noise(path) -> float | None:
    """Median over a profile's points of (p90 - p10) / median: how repeatable its times were."""
    from planner.measure.files import load_profile

    df = load_profile(path).samples
    if not {"p10_s", "p90_s"} <= set(df.columns):
        return None
    return float(((df["p90_s"] - df["p10_s"]) / df["seconds"]).median())


def local_replica(spec, profile_path: Path, roofline: str = "profile"):
    """(Replica on the profiled device, calibration report). `roofline`: "profile" (the default)
    uses the measured points themselves (calibrate.measured_replica: what `planner plan --profile`
    uses for the profiled device at the profiled model, tp and dtype); "plan" the roofline with
    the Efficiency fitted to them (calibrate.fit_profile: what plan uses for every other GPU type,
    model, tp or dtype), so its share of the error shows."""
    from planner.steptime.calibrate import calibrate_from_profiles, fit_profile
    from planner.steptime.measured import measured_replica
    from planner.specs.catalog import load_catalog
    from planner.measure.files import load_profile
    from planner.steptime.roofline import Replica

    prof = load_profile(profile_path)
    if prof.meta.get("kind") != "local":
        raise BadInput(f"--profile {profile_path}: a {prof.meta.get('kind')} profile has no device ceilings; "
                       "validate needs a `planner profile local` profile of the pilot's device")
    if (prof.model or {}).get("name") not in (None, spec.name):
        raise BadInput(f"--profile {profile_path}: profiled model {prof.model.get('name')!r}, the pilot serves {spec.name!r}")
    cat = load_catalog()
    cal = calibrate_from_profiles([profile_path], cat)
    info = cal.report["profiles"][0]
    gpu = cal.local_gpus[0] if cal.local_gpus else cat.gpus[info["gpu"]]
    dtype = prof.dtype if prof.dtype in ("bf16", "fp16", "fp32") else "bf16"
    eff, fit = fit_profile(prof, gpu)
    report = {"path": str(profile_path), "device": prof.device_name,
              "torch_threads": (prof.meta.get("device") or {}).get("torch_threads"), "plan_fit": fit, "roofline": roofline}
    if roofline == "plan":
        return Replica(spec, gpu, 1, dtype, dtype, eff), {**report, "fit": fit}
    if roofline not in STEP_TIME_MODELS:
        raise BadInput(f"--roofline {roofline!r}: expected {', '.join(STEP_TIME_MODELS)}")
    return measured_replica(Replica(spec, gpu, 1, dtype, dtype, eff), prof), {**report, "fit": fit,
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


# ---- prediction -----------------------------------------------------------------------------------
# The pilot is predicted by the planning model itself (planner.queueing.pools, `plan`'s pools at a
# rate) configured as this project's runtime (Engine "planner") with the pilot's limits: the
# contract `planner validate --predict-only` == `planner plan --engine planner --current ...`.
def pilot_engine(pilot: Pilot):
    """The engine the pilot runs: this project's runtime with the pilot's ServeConfig limits."""
    return engine_named("planner").with_limits(pilot.max_seqs, pilot.max_batch_tokens, pilot.chunked_prefill)


def relaxed(d: Demand) -> Demand:
    """The same lengths without SLOs: feasibility is then stability (and batch limits) only."""
    return replace(d, ttft_slo_s=math.inf, tpot_slo_s=math.inf)


def pilot_capacity(pilot: Pilot, rep, d: Demand) -> tuple[float, str]:
    """Predicted throughput capacity of the whole pilot (req/s) and what limits it: the largest
    rate each role's model sustains without SLOs (queueing.capacity) times its workers, the
    smaller pool."""
    eng, dr = pilot_engine(pilot), relaxed(d)
    if pilot.mode == "colocated":
        cap, _, binding = capacity(role_model("colocated", rep, dr, eng, eng.colocated_modes[0]))
        return cap * pilot.workers, f"colocated {binding or 'throughput'}"
    cp, _, bp = capacity(role_model("prefill", rep, dr, eng))
    cd, _, bd = capacity(role_model("decode", rep, dr, eng))
    caps = {"prefill": (cp * pilot.prefill_workers, bp), "decode": (cd * pilot.decode_workers, bd)}
    role = min(caps, key=lambda r: caps[r][0])
    return caps[role][0], f"{role} {caps[role][1] or 'throughput'}"


def balance_split(pilot: Pilot, rep, d: Demand, total: int) -> tuple[int, int]:
    """Without a plan: the (prefill, decode) split of `total` workers with the most capacity,
    min(p * cap_prefill, d * cap_decode): the local plan's rate matching."""
    eng, dr = pilot_engine(pilot), relaxed(d)
    cp, cd = capacity(role_model("prefill", rep, dr, eng))[0], capacity(role_model("decode", rep, dr, eng))[0]
    return max(((p, total - p) for p in range(1, total)), key=lambda s: (min(s[0] * cp, s[1] * cd), -abs(s[0] - s[1])))


def predict(pilot: Pilot, rep, d: Demand, transport_bytes_s: float | None = None, kv_latency_s: float | None = None) -> Prediction:
    """The pilot at its rate, predicted by the planning model (planner.queueing.pools) as this
    runtime runs (pilot_engine); `rep` is the local replica (with contention, pilot_replica),
    `transport_bytes_s` the measured local KV transport (B/s)."""
    eng = pilot_engine(pilot)
    if pilot.mode == "colocated":
        return predict_colocated(rep, d, eng, pilot.workers, pilot.rate_rps, eng.colocated_modes[0])
    return predict_split(rep, rep, d, eng, pilot.prefill_workers, pilot.decode_workers, pilot.rate_rps, transport_bytes_s, kv_latency_s)


def pilot_replica(pilot: Pilot, rep, d: Demand, contention, rate_rps: float, transport_bytes_s: float | None = None,
                  iters: int = 4) -> tuple[object, dict]:
    """(replica, slowdowns) for the pilot at `rate_rps` beside its own busy neighbours: each
    role's times scaled by kappa x the predicted busy share of the neighbour (planner.pilot.probe),
    solved by fixed-point iteration (a slower prefill keeps the decode worker's neighbour busy
    longer, and so on). No contention measured: the replica as it is."""
    if contention is None:
        return rep, {"prefill": 0.0, "decode": 0.0}
    a = b = 0.0
    p = replace(pilot, rate_rps=rate_rps)
    for _ in range(iters):
        u = predict(p, Adjusted(rep, a, b), d, transport_bytes_s).utilization
        if pilot.mode == "colocated":
            a = b = contention.colocated * min(1.0, u.get("colocated", 1.0)) if pilot.workers >= 2 else 0.0
        else:
            a = contention.prefill * min(1.0, u.get("decode", 1.0))
            b = contention.decode * min(1.0, u.get("prefill", 1.0))
    return Adjusted(rep, a, b), {"prefill": a, "decode": b}


def contended_capacity(pilot: Pilot, rep, d: Demand, contention, iters: int = 3) -> tuple[float, str]:
    """pilot_capacity of the replica as the pilot runs it (pilot_replica: the slowdowns the pilot
    suffers near that rate)."""
    cap, limit = pilot_capacity(pilot, pilot_replica(pilot, rep, d, None, 0.0)[0], d)
    for _ in range(iters if contention is not None else 0):
        rep_c, _ = pilot_replica(pilot, rep, d, contention, 0.98 * cap)
        cap, limit = pilot_capacity(pilot, rep_c, d)
    return cap, limit


def simulate_pilot(pilot: Pilot, rep, d: Demand, schedule, transport_bytes_s: float | None = None,
                   kv_latency_s: float = LAYERWISE_KV_LATENCY_S):
    """The plan's discrete-event simulator (planner.simulate.des, `plan --simulate`'s check) run on the
    very schedule the replay sends, with the replica's step times and the runtime's rules:
    a prefill batch is padded to its longest prompt (time of rows x longest), at most
    max_batch_tokens tokens and 16 prompts; decode batches of at most max_seqs; requests go to the
    least-loaded worker; the KV transfer (last layer on the wire) delays the second token and
    admission waits for a step boundary. No warm-up is dropped: the replay measures every request.
    Where the closed forms (`predict`) and this disagree, the gap is the closed forms' error; where
    this and the measurement disagree, it is the step-time model's or the runtime's."""
    from planner.simulate.des import simulate_colocated, simulate_disaggregated

    eng = pilot_engine(pilot)
    rep = engine_replica(rep, d, eng)  # the same padded attention the closed forms use
    p = np.array([r.prompt_tokens for r in schedule])
    out = np.array([r.output_tokens for r in schedule])
    at = np.array([r.at_s for r in schedule], dtype=float)

    def prefill_s(lengths):
        return rep.prefill_time_s(np.full(len(lengths), float(np.max(lengths))))  # right-padded rows

    def step_s(b, c):
        return rep.decode_step_s(b, c)

    if pilot.mode == "colocated":
        return simulate_colocated(p, out, prefill_s, step_s, arrival_s=at, n_replicas=pilot.workers,
                                  max_batch_tokens=pilot.max_batch_tokens, max_decode_batch=pilot.max_seqs,
                                  chunked=pilot.chunked_prefill, chunk_tokens=max(pilot.max_batch_tokens, pilot.max_seqs + 1),
                                  routing="jsq", warmup_frac=0.0)
    layers = rep.model.layers
    bw = transport_bytes_s or math.inf
    return simulate_disaggregated(p, out, prefill_s, step_s, lambda n: n * rep.kv_bytes_per_token / layers / bw + kv_latency_s,
                                  arrival_s=at, n_prefill=pilot.prefill_workers, n_decode=pilot.decode_workers,
                                  max_prefill_tokens=pilot.max_batch_tokens, max_prefill_batch=eng.prefill_slots,
                                  max_decode_batch=pilot.max_seqs, routing="jsq", warmup_frac=0.0)


def predicted_throughput(schedule, e2e_s_mean: float | None, capacity_rps: float) -> tuple[float | None, float | None]:
    """(req/s, output tok/s) over the run's makespan, first send to last completion: the
    schedule's requests over (last arrival + mean end-to-end) when the pilot keeps up, else the
    capacity. The schedule (arrival times, lengths) is known before the run, like the workload."""
    if not schedule:
        return None, None
    n = len(schedule)
    out = sum(r.output_tokens for r in schedule)
    span = max(r.at_s for r in schedule) - min(r.at_s for r in schedule)
    if e2e_s_mean is None:
        return capacity_rps, capacity_rps * out / n
    makespan = span + e2e_s_mean
    return n / makespan, out / makespan


# ---- running the pilot ----------------------------------------------------------------------------
@dataclass
class Measurement:
    """What the pilot did: the replay state, its summary, server metrics and worker CPU use."""

    state: object  # planner.pilot.replay.ReplayState
    client: dict
    server: dict
    utilization: dict  # role -> busy share (CPU seconds / wall seconds / threads), local pilots only
    workers: dict  # name -> {"role", "pid", "state"}
    worker_deaths: float = 0.0
    interrupted: bool = False
    url: str = ""
    cold_start_s: float | None = None
    extras_ok: bool = True
    cpu: dict = field(default_factory=dict)  # CpuWatch.stop(): process and foreign cores
    notes: list = field(default_factory=list)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _machine_busy_seconds() -> float | None:
    """CPU seconds every core of this machine has spent busy since boot (/proc/stat: all but idle
    and iowait, steal included: a hypervisor taking the CPU is contention too)."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _run_delay_seconds(pid: int) -> float | None:
    """Seconds the threads of a process have spent runnable but waiting for a CPU (Linux
    /proc/<pid>/task/*/schedstat, second field, ns), None when unreadable."""
    total, seen = 0.0, False
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1]) / 1e9
                seen = True
            except (OSError, ValueError, IndexError):
                continue
    except OSError:
        return None
    return total if seen else None


def set_priority(pids, nice: int) -> list[str]:
    """Renice every thread of these processes (a new thread inherits its creator's nice value),
    and the autogroup of any that leads its own session: with autogroup scheduling (Linux's
    default) nice ranks threads only within a session, and sessions share the CPU equally, so a
    pilot outranks other work only from a session of its own (run it under `setsid`).
    Returns the problems met, if any (a negative nice needs root or CAP_SYS_NICE)."""
    problems = []
    for pid in pids:
        try:
            tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            tids = [pid]
        for tid in tids:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            except ProcessLookupError:
                continue
            except OSError as e:
                problems.append(f"cannot set nice {nice} on pid {pid}: {e.strerror or e}")
                break
        try:
            if os.getsid(pid) == pid and Path(f"/proc/{pid}/autogroup").exists():
                Path(f"/proc/{pid}/autogroup").write_text(str(nice))
        except OSError as e:
            problems.append(f"cannot set the autogroup nice of pid {pid}: {e.strerror or e}")
    return problems


class CpuWatch:
    """Between `start()` and `stop()`: the CPU each of the pilot's processes used, the time each
    spent runnable but waiting for a CPU (run-queue delay), and what the rest of the machine used.
    A pilot whose processes queue for a CPU measures the machine's contention, not the model:
    a run-queue delay above STARVED_SHARE of the wall time spoils the comparison."""

    def __init__(self, pids: dict):
        self.pids = pids  # name -> pid
        self.t0 = self.busy0 = None
        self.cpu0: dict = {}
        self.delay0: dict = {}

    def start(self) -> None:
        self.t0, self.busy0 = time.perf_counter(), _machine_busy_seconds()
        self.cpu0 = {n: _cpu_seconds(p) for n, p in self.pids.items()}
        self.delay0 = {n: _run_delay_seconds(p) for n, p in self.pids.items()}

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t0
        busy1 = _machine_busy_seconds()

        def deltas(f, before):
            return {n: f(p) - b for n, p in self.pids.items() if (b := before.get(n)) is not None and f(p) is not None}

        used, waited = deltas(_cpu_seconds, self.cpu0), deltas(_run_delay_seconds, self.delay0)
        out = {"wall_s": wall, "cores": os.cpu_count(), "process_cores": {n: u / wall for n, u in used.items()},
               "run_queue_wait_share": {n: w / wall for n, w in waited.items()}}
        if self.busy0 is not None and busy1 is not None and wall > 0:
            out["machine_busy_cores"] = (busy1 - self.busy0) / wall
            out["foreign_cores"] = max(0.0, out["machine_busy_cores"] - sum(used.values()) / wall)
        return out


#: A pilot process that waited for a CPU more than this share of the run was starved (s per s).
STARVED_SHARE = 0.10
#: Other processes using more than this many cores on average: worth a warning (cores).
CONTENTION_CORES = 0.35


def machine_busy_cores(window_s: float = 1.0) -> float | None:
    """Cores this machine keeps busy over the next `window_s` seconds (all processes), or None."""
    a = _machine_busy_seconds()
    time.sleep(window_s)
    b = _machine_busy_seconds()
    return None if a is None or b is None else (b - a) / window_s


def _health(url: str) -> dict:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            return json.loads(e.read())
        except ValueError:
            return {}
    except (OSError, ValueError):
        return {}


def server_summary(before, after) -> dict:
    """Per-phase means/quantiles (s) from histogram deltas, KV bytes, failures, deaths."""
    from planner.measure import prometheus

    if before is None or after is None:
        return {}
    out = prometheus.phase_summary(before, after)
    delta = prometheus.delta(before, after)
    engine = prometheus.detect_engine(after)
    if engine == "planner":
        for name, key in (("planner:kv_transfer_seconds", "kv"), ("planner:kv_admission_wait_seconds", "kv_wait")):
            h = delta.histogram(name)
            if h is not None and h.count:
                out[f"server_{key}_mean_s"] = h.mean
                out[f"server_{key}_count"] = h.count
        out["kv_bytes_total"] = delta.value("planner:kv_transfer_bytes_total") or 0.0
        out["worker_deaths"] = delta.value("planner:worker_deaths_total") or 0.0
        out["failures"] = delta.value("planner:request_failure_total") or 0.0
    return out


def measure_contention(pilot: Pilot, d: Demand, cap_len: int, timeout_s: float = 60.0, say=print, nice: int = 0):
    """Start the pilot's split briefly and probe how much its workers slow each other on this
    machine's shared cores (planner.pilot.probe): a few seconds. Returns a planner.pilot.probe.Contention, or
    None (with a message) when the probe cannot run, e.g. a colocated pilot of one worker."""
    import asyncio

    from planner.pilot import probe as pb
    from planner.pilot import replay as rp
    from planner.runtime import start_server

    if pilot.mode == "colocated" and pilot.workers < 2:
        return None
    # Long enough for background streams that outlast the probe's windows.
    max_len = min(cap_len, max(512, int(math.ceil((2 * d.mean_prompt + 64) / 64) * 64)))
    opts = dict(pilot.serve_options(), max_model_len=max_len)
    say(f"probing contention: {pilot.label()} on {pilot.device}, a few seconds")
    handle = start_server(**opts)
    try:
        if nice:
            pids = [os.getpid(), handle.pid] + [w.get("pid") for w in _health(handle.url).get("workers", []) if w.get("pid")]
            set_priority(pids, nice)
        extras, err = asyncio.run(rp.warm_up(handle.url, pilot.model, n=2 * max(1, pilot.n_workers), timeout_s=timeout_s))
        if err:
            raise BadInput(f"contention probe: warm-up request failed: {err}")
        streams = 4 * pilot.decode_workers if pilot.mode == "disaggregated" else 2
        return pb.probe(handle.url, pilot.model, pilot.mode, min(int(round(d.mean_prompt)), max_len // 2), max_len,
                        streams=streams, extras=extras, timeout_s=timeout_s)
    except RuntimeError as e:
        say(f"contention probe failed ({e}): predicting without it")
        return None
    finally:
        if nice:
            set_priority([os.getpid()], 0)
        handle.stop(timeout_s=30.0)


def run_pilot(pilot: Pilot, schedule, endpoint: str | None = None, timeout_s: float = 60.0, seed: int = 0,
              progress: bool = True, on_serving=None, say=print, served_model: str | None = None, nice: int = 0) -> Measurement:
    """Start the pilot (or use `endpoint`), warm up, replay `schedule`, collect. Ctrl-C: the
    replay stops, in-flight requests are recorded as failed, the server is stopped (its workers
    with it), and the partial Measurement is returned with interrupted=True."""
    import asyncio

    from planner.pilot import replay as rp

    import signal
    import threading

    handle = None
    state = rp.ReplayState()
    meas = Measurement(state, {}, {}, {}, {})
    before = after = None
    old_term = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (kill, a CI timeout) tears the pilot down like Ctrl-C: no server left behind.
        old_term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if endpoint is None:
            from planner.runtime import start_server

            say(f"starting planner serve: {pilot.label()} on {pilot.device} (threads/worker {pilot.threads_per_worker})")
            handle = start_server(**pilot.serve_options())
            url = handle.url
            meas.cold_start_s = handle.info.get("cold_start_s")
        else:
            url = endpoint.rstrip("/")
            if url.endswith("/v1"):
                url = url[:-3]
        meas.url = url
        model = served_model or (pilot.model if endpoint is None else None)
        extras, err = asyncio.run(rp.warm_up(url, model, n=2 * max(1, pilot.n_workers), timeout_s=timeout_s))
        if err:
            raise BadInput(f"{url}: warm-up request failed: {err}")
        meas.extras_ok = extras
        if not extras:
            meas.notes.append("the server refused ignore_eos/min_tokens/stream_options: output lengths may differ from the schedule")
        health = _health(url)
        meas.workers = {w.get("name"): {"role": w.get("role"), "pid": w.get("pid"), "state": w.get("state")} for w in health.get("workers", [])}
        before = asyncio.run(rp.scrape_metrics(url))
        pids = {"client": os.getpid()}
        if handle is not None:
            pids["server"] = handle.pid
            pids.update({n: w["pid"] for n, w in meas.workers.items() if w.get("pid")})
        if nice:
            meas.notes += set_priority(pids.values(), nice)
            meas.notes.append(f"pilot processes ran at nice {nice}")
        watch = CpuWatch(pids)
        watch.start()
        if on_serving is not None:
            on_serving(handle if handle is not None else url)
        say(f"replaying {len(schedule)} requests against {url} (open loop, {pilot.rate_rps:.3g} req/s)")
        with _Progress(progress, len(schedule)) as bar:
            asyncio.run(rp.replay(url, model, schedule, state, timeout_s, extras, seed, on_event=bar.event))
        meas.cpu = watch.stop()
        if handle is not None:  # a worker's busy share: its CPU seconds per wall second per thread
            by_role: dict = {}
            for name, w in meas.workers.items():
                if name in meas.cpu["process_cores"]:
                    by_role.setdefault(w["role"], []).append(meas.cpu["process_cores"][name] / max(1, pilot.threads_per_worker))
            meas.utilization = {r: float(np.mean(v)) for r, v in by_role.items()}
        after = asyncio.run(rp.scrape_metrics(url))
    except KeyboardInterrupt:
        meas.interrupted = True
        state.interrupted = True
        for r in state.records.values():  # a request cut by the interrupt is failed, never lost
            if not r.done:
                r.error, r.done = r.error or "interrupted", True
        say("interrupted: stopping the pilot")
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if nice:
            set_priority([os.getpid()], 0)
        if handle is not None:
            final = _health(handle.url) if not meas.interrupted else {}
            for w in final.get("workers", []):
                if w.get("name") in meas.workers:
                    meas.workers[w["name"]]["state"] = w.get("state")
            handle.stop(timeout_s=10.0 if meas.interrupted else 30.0)
    meas.client = rp.summarize(state)
    meas.server = server_summary(before, after)
    meas.worker_deaths = float(meas.server.get("worker_deaths", 0.0)) + sum(
        1 for w in meas.workers.values() if w.get("state") == "dead" and not meas.server.get("worker_deaths"))
    return meas


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class _Progress:
    """A rich progress bar on stderr counting requests sent and finished (or nothing)."""

    def __init__(self, enabled: bool, total: int):
        self.p = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                              TextColumn("{task.fields[note]}"), console=Console(stderr=True), transient=False)
            self.sent = self.p.add_task("sent", total=total, note="")
            self.done = self.p.add_task("finished", total=total, note="")
            self.failed = 0

    def __enter__(self):
        if self.p:
            self.p.start()
        return self

    def __exit__(self, *exc):
        if self.p:
            self.p.stop()

    def event(self, kind: str, rec) -> None:
        if not self.p:
            return
        if kind == "sent":
            self.p.advance(self.sent)
        else:
            self.failed += rec.error is not None
            self.p.advance(self.done)
            if self.failed:
                self.p.update(self.done, note=f"[red]{self.failed} failed[/red]")


# ---- comparing --------------------------------------------------------------------------------------
def rel_error(predicted, measured) -> float | None:
    """(predicted - measured) / measured; None when either is missing or measured is 0."""
    if predicted is None or measured is None or not math.isfinite(predicted) or not math.isfinite(measured) or measured == 0:
        return None
    return (predicted - measured) / measured


def _entry(p, m) -> dict:
    r = lambda x: None if x is None or not math.isfinite(x) else round(float(x), 4)  # noqa: E731
    e = rel_error(p, m)
    return {"predicted": r(p), "measured": r(m), "rel_error": None if e is None else round(e, 4)}


@dataclass
class RunResult:
    """One pilot run: the pilot, its prediction and measurement, compared."""

    pilot: Pilot
    prediction: Prediction
    measurement: Measurement
    throughput_pred: tuple
    slo: object
    schedule_len: int
    simulated: dict | None = None  # SimResult.summary() of simulate_pilot
    contention: object = None  # planner.pilot.probe.Contention the prediction used (None: not probed)
    slowdowns: dict = field(default_factory=dict)  # role -> share its times were scaled by (pilot_replica)
    schedule: list = field(default=None, repr=False)  # the replayed ReplayRequests

    @property
    def requests(self) -> dict:
        return self.measurement.state.counts()

    def invalid_reasons(self) -> list[str]:
        m, why = self.measurement, []
        c = self.requests
        if m.interrupted:
            why.append("interrupted before the schedule finished")
        if c["failed"]:
            why.append(f"{c['failed']} of {c['sent']} requests failed")
        if c["lost"]:
            why.append(f"{c['lost']} requests lost (neither completed nor failed)")
        if m.worker_deaths:
            why.append(f"{m.worker_deaths:g} worker(s) died during the run")
        if c["sent"] < self.schedule_len and not m.interrupted:
            why.append(f"only {c['sent']} of {self.schedule_len} scheduled requests were sent")
        if c["completed"] == 0:
            why.append("no request completed")
        starved = {n: w for n, w in (m.cpu.get("run_queue_wait_share") or {}).items() if w > STARVED_SHARE}
        if starved:
            worst = max(starved, key=starved.get)
            foreign = m.cpu.get("foreign_cores")
            why.append(f"the pilot was starved of CPU: {worst} waited {starved[worst]:.0%} of the run for a core"
                       + (f" (other processes used {foreign:.2f} of {m.cpu.get('cores')} cores)" if foreign is not None else ""))
        return why

    @property
    def valid(self) -> bool:
        return not self.invalid_reasons()

    def metrics(self) -> dict:
        p, m = self.prediction, self.measurement
        cl = m.client
        out = {}
        for q in ("p50", "p90", "p99"):
            out[f"ttft_ms_{q}"] = _entry(getattr(p.ttft_ms, q) if p.ttft_ms else None, cl.get("ttft_ms", {}).get(q))
        for q in ("p50", "p90", "p99"):
            out[f"tpot_ms_{q}"] = _entry(getattr(p.tpot_ms, q) if p.tpot_ms else None, cl.get("tpot_ms", {}).get(q))
        out["throughput_rps"] = _entry(self.throughput_pred[0], cl.get("throughput_rps"))
        out["output_tokens_per_s"] = _entry(self.throughput_pred[1], cl.get("output_tokens_per_s"))
        kv_meas = m.server.get("server_kv_mean_s")
        out["kv_transfer_ms_mean"] = _entry(p.kv_transfer_ms_mean, kv_meas * 1e3 if kv_meas is not None else None)
        if self.simulated:
            for k, e in out.items():
                sim = self.simulated.get(k) if k != "kv_transfer_ms_mean" else None
                e["simulated"] = None if sim is None or not math.isfinite(sim) else round(float(sim), 4)
                e["sim_rel_error"] = None if (r := rel_error(e["simulated"], e["measured"])) is None else round(r, 4)
        return out

    def stages(self) -> dict:
        """Per-stage extras: utilization, batch, prefill queue and time, KV bytes, decode batch."""
        p, m = self.prediction, self.measurement
        out = {}
        sim = self.simulated or {}
        for role, u in p.utilization.items():
            out[f"utilization_{role}"] = _entry(u, m.utilization.get(role))
            su = sim.get(f"utilization_{'replica' if role == 'colocated' else role}")
            if su is not None:
                out[f"utilization_{role}"]["simulated"] = round(float(su), 4)
        srv = m.server
        if self.pilot.mode == "disaggregated":
            out["prefill_queue_ms_mean"] = _entry(p.prefill_wait_ms_mean, _ms(srv.get("server_queue_mean_s")))
            out["prefill_time_ms_mean"] = _entry(p.prefill_service_ms_mean, _ms(srv.get("server_prefill_mean_s")))
            n = srv.get("server_kv_count")
            out["kv_bytes_per_request"] = _entry(p.kv_bytes_mean, srv.get("kv_bytes_total", 0) / n if n else None)
        # Little's law on the client's clock: sequences decoding at once = sum of decode times / span.
        st = m.state
        ok = [r for r in st.records.values() if r.ok and r.e2e_s is not None and r.ttft_s is not None]
        span = m.client.get("makespan_s") or 0
        role = "colocated" if self.pilot.mode == "colocated" else "decode"
        workers = self.pilot.workers if self.pilot.mode == "colocated" else self.pilot.decode_workers
        meas_b = sum(r.e2e_s - r.ttft_s for r in ok) / span / workers if span > 0 and ok else None
        out["decode_batch_mean"] = _entry(p.batch_mean.get(role), meas_b)
        if sim.get("mean_decode_batch") is not None:
            out["decode_batch_mean"]["simulated"] = round(float(sim["mean_decode_batch"]), 4)
        out["itl_ms_p50"] = _entry(None, m.client.get("itl_ms", {}).get("p50"))
        out["e2e_s_mean"] = _entry(p.e2e_s_mean, m.client.get("e2e_s_mean"))
        if sim.get("e2e_s_mean") is not None:
            out["e2e_s_mean"]["simulated"] = round(float(sim["e2e_s_mean"]), 4)
        return out

    def suspect_server_metrics(self) -> list[str]:
        """Server figures that cannot be right, said once so nobody reads them as model error."""
        st, notes = self.stages(), []
        kb = st.get("kv_bytes_per_request", {})
        if kb.get("measured") is not None and kb.get("predicted") and kb["measured"] < 0.01 * kb["predicted"]:
            notes.append("the server's planner:kv_transfer_bytes_total is ~1000x below prompt tokens x KV bytes/token: "
                         "the runtime counts frame lengths, not bytes (runtime/worker.py: len(memoryview) of a 3-D view)")
        q, srv = st.get("prefill_queue_ms_mean", {}), self.measurement.server
        ttft, pre = srv.get("server_ttft_mean_s"), srv.get("server_prefill_mean_s")
        if q.get("measured") is not None and q["measured"] < 1.0 and ttft and pre and (ttft - pre) * 1e3 > 5.0:
            notes.append(f"the server's queue histogram says {q['measured']:.2f} ms while TTFT - prefill is {(ttft - pre) * 1e3:.0f} ms: "
                         "it misses the time prompts wait in the prefill worker's socket (queue_s starts when the worker reads them)")
        return notes

    def verdict(self) -> dict:
        q = self.slo.percentile
        meas = self.measurement.client
        pred = self.prediction

        def judge(ttft, tpot):
            if ttft is None or tpot is None:
                return None
            return {"ttft_ms": ttft, "tpot_ms": tpot, "meets": ttft <= self.slo.ttft_ms and tpot <= self.slo.tpot_ms}

        return {"slo": self.slo.to_dict(),
                "measured": judge(meas.get("ttft_ms", {}).get(f"p{q}"), meas.get("tpot_ms", {}).get(f"p{q}")),
                "predicted": judge(getattr(pred.ttft_ms, f"p{q}") if pred.ttft_ms else None,
                                   getattr(pred.tpot_ms, f"p{q}") if pred.tpot_ms else None)}

    def to_dict(self) -> dict:
        m, p = self.measurement, self.prediction
        ok = [r for r in m.state.records.values() if r.ok]
        reasons = self.invalid_reasons()
        return {
            "pilot": {**self.pilot.to_dict(), "url": m.url, "cold_start_s": m.cold_start_s, "workers_detail": m.workers},
            "metrics": self.metrics(),
            "stages": self.stages(),
            "requests": self.requests,
            "valid": not reasons,
            "invalid_reasons": reasons,
            "interrupted": m.interrupted,
            "verdict": self.verdict(),
            "prediction": {"feasible": p.feasible, "binding": p.binding, "utilization": p.utilization,
                           "batch_mean": p.batch_mean, "notes": list(p.notes),
                           "contention": self.contention.to_dict() if self.contention is not None else None,
                           "slowdowns": {k: round(v, 4) for k, v in self.slowdowns.items()},
                           "ttft_ms": p.ttft_ms.to_dict() if p.ttft_ms else None,
                           "tpot_ms": p.tpot_ms.to_dict() if p.tpot_ms else None},
            "measured": {"client": _round(m.client), "server": _round(m.server), "utilization": _round(m.utilization),
                         "cpu": _round(m.cpu),
                         "worker_deaths": m.worker_deaths, "errors": [{"message": e, "count": c} for e, c in m.state.errors()],
                         "notes": m.notes + self.suspect_server_metrics()},
            "samples": {"ttft_ms": [round(r.ttft_s * 1e3, 3) for r in ok if r.ttft_s is not None],
                        "tpot_ms": [round(r.tpot_s * 1e3, 3) for r in ok if r.tpot_s is not None],
                        "predicted_ttft_ms": _quantile_grid(p.ttft_samples_ms),
                        "predicted_tpot_ms": _quantile_grid(p.tpot_samples_ms)},
            "requests_detail": [r.to_dict() for r in sorted(m.state.records.values(), key=lambda r: r.index)],
        }


def _ms(x):
    return None if x is None else x * 1e3


def _round(d):
    if isinstance(d, dict):
        return {k: _round(v) for k, v in d.items()}
    if isinstance(d, float):
        return round(d, 6) if math.isfinite(d) else None
    return d


def _quantile_grid(samples_ms, k: int = 101):
    """k evenly spaced quantiles (0..100%) of predicted samples: enough for a CDF, small in JSON."""
    if samples_ms is None or len(samples_ms) == 0:
        return []
    return [round(float(x), 3) for x in np.percentile(np.asarray(samples_ms), np.linspace(0, 100, k))]


@dataclass
class ValidateResult:
    """The primary run, and the colocated run of the same pilot when asked (`--compare-colocated`)."""

    run: RunResult
    workload: object
    calibration: dict
    transport: dict
    notes: list
    colocated: RunResult | None = None

    @property
    def valid(self) -> bool:
        return self.run.valid and (self.colocated is None or self.colocated.valid)

    @property
    def interrupted(self) -> bool:
        return self.run.measurement.interrupted or bool(self.colocated and self.colocated.measurement.interrupted)

    def to_dict(self) -> dict:
        import planner

        d = self.run.to_dict()
        d["valid"] = self.valid
        out = {"planner_version": planner.__version__, **d, "workload": self.workload.to_dict(),
               "calibration": self.calibration, "transport": self.transport, "notes": self.notes}
        if self.colocated is not None:
            out["compare"] = {"colocated": self.colocated.to_dict()}
        return out


# ---- the whole thing -----------------------------------------------------------------------------
def _length_flag(dist) -> str:
    """A length distribution as the --input-len/--output-len text that parses back to it."""
    if dist.kind == "fixed":
        return f"{dist.value_tok:g}"
    if dist.kind == "uniform":
        return f"uniform:{dist.low_tok:g}-{dist.high_tok:g}"
    if dist.kind == "lognormal" and math.isinf(dist.high_tok):
        return f"lognormal:mean={dist.mean!r},sigma={dist.sigma!r}"
    return "<as in the workload file>"


@dataclass
class PredictOnly:
    """`validate --predict-only`: the derived pilot and the planning model's prediction of it."""

    pilot: Pilot
    prediction: Prediction
    workload: object
    calibration: dict
    notes: list

    def plan_command(self, profile: str) -> str:
        """The `planner plan` call that predicts the same pools (the contract a test holds)."""
        p, w = self.pilot, self.workload
        pools = f"--current {p.workers}xlocal" if p.mode == "colocated" else f"--current-split {p.prefill_workers}xlocal+{p.decode_workers}xlocal"
        return (f"planner plan --model {p.model} --profile {profile} --gpus local --engine planner {pools} --rate {p.rate_rps!r} "
                f"--input-len {_length_flag(w.input)} --output-len {_length_flag(w.output)} --weight-dtype {p.dtype} --kv-dtype {p.dtype}")

    def to_dict(self) -> dict:
        pr = self.prediction
        return {"pilot": self.pilot.to_dict(), "predict_only": True, "predicted": pr.predicted(), "feasible": pr.feasible,
                "binding": pr.binding, "utilization": pr.utilization, "batch_mean": pr.batch_mean,
                "kv_transfer_ms_mean": pr.kv_transfer_ms_mean, "engine": pilot_engine(self.pilot).describe(),
                "workload": self.workload.to_dict(), "calibration": self.calibration, "notes": list(self.notes) + list(pr.notes),
                "equivalent_plan": self.plan_command(self.calibration.get("path", "PROFILE"))}


def validate(model: str = "tiny", device: str = "cpu", workload=None, plan: dict | None = None,
             max_workers: int | None = None, mode: str | None = None, prefill_workers: int | None = None,
             decode_workers: int | None = None, workers: int | None = None, load_frac: float | None = None,
             pilot_rate: float | None = None, duration_s: float | None = 40.0, requests: int | None = None,
             profile: str | Path | None = None, endpoint: str | None = None, served_model: str | None = None,
             compare_colocated: bool = False, seed: int = 0, timeout_s: float = 60.0,
             max_seqs: int = RUNTIME_MAX_SEQS, max_batch_tokens: int = RUNTIME_MAX_BATCH_TOKENS,
             chunked_prefill: bool = False, replay_trace: bool = True, progress: bool = True,
             traffic_rps: float | None = None, roofline: str = "profile", nice: int = 0, on_serving=None,
             probe: bool = True, min_requests: int | None = None, predict_only: bool = False, say=print):
    """Derive, predict, run and compare a pilot (module docstring). `workload` is a planner
    Workload (None: validate's defaults, DEFAULT_INPUT_LEN / DEFAULT_OUTPUT_LEN at rate 1, whose
    absolute rate only matters for a trace); `plan` a `plan_summary` of a plan JSON; `traffic_rps`
    the production rate the pilot's share is stated against (default: the plan's).
    `on_serving(handle)` is called as the measured replay starts (tests inject faults with it).
    `predict_only`: derive and predict the pilot, run nothing (no profiling, probe or replay), and
    return a PredictOnly: the prediction `planner plan --engine planner --current ...` makes too."""
    from planner.pilot import replay as rp
    from planner.specs.models import resolve_model
    from planner.workload.workload import workload_from_flags

    spec = resolve_model(model)
    if traffic_rps is None and plan:
        traffic_rps = plan["workload"].rate_rps
    if workload is None:
        workload = plan["workload"] if plan else workload_from_flags(rate=1.0, input_len=DEFAULT_INPUT_LEN, output_len=DEFAULT_OUTPUT_LEN)
    if requests is not None and requests < 1:
        raise BadInput(f"--requests must be >= 1, got {requests}")
    if requests is None and not (duration_s and duration_s > 0):
        raise BadInput(f"--duration must be > 0 s, got {duration_s}")
    if endpoint and compare_colocated:
        raise BadInput("--compare-colocated starts local pilots: it cannot be combined with --endpoint")
    if roofline not in STEP_TIME_MODELS:  # before minutes of profiling, not after
        raise BadInput(f"--roofline {roofline!r}: expected {', '.join(STEP_TIME_MODELS)}")
    if predict_only and endpoint:
        raise BadInput("--predict-only predicts a local pilot from its profile: it cannot be combined with --endpoint")
    pilot = derive_pilot(model, device, workload, plan, max_workers, mode, prefill_workers, decode_workers, workers,
                         load_frac, max_seqs, max_batch_tokens, chunked_prefill)
    notes: list = []
    # Lengths as the pilot can serve them (the model's context), for the prediction and the replay.
    d = Demand.from_workload(workload)
    cap_len = spec.max_position
    pr, out = rp._clip_lengths(d.prompt, d.output, cap_len)
    if (pr != d.prompt).any() or (out != d.output).any():
        notes.append(f"lengths clipped to the model's context ({cap_len} tokens)")
    d = replace(d, prompt=pr.astype(float), output=out.astype(float))

    rep, calibration = None, {"status": "no profile"}
    if endpoint is None or profile is not None:
        if nice:  # the profile's times must not be other processes' either
            notes.extend(set_priority([os.getpid()], nice))
        if predict_only and profile is None:
            cached = cached_profile_path(model, device, pilot.threads_per_worker, pilot.dtype, profile_grid(d, pilot.max_seqs))
            if not cached.exists():
                raise BadInput("--predict-only runs nothing: give --profile FILE (a `planner profile local` profile of this device)")
        try:
            path = ensure_profile(model, device, pilot.threads_per_worker, pilot.dtype, profile_grid(d, pilot.max_seqs), profile, say)
        finally:
            if nice:
                set_priority([os.getpid()], 0)
        rep, calibration = local_replica(spec, path, roofline)
        noisy = profile_noise(path)
        if noisy is not None and noisy > 0.3:
            notes.append(f"the profile is noisy: its points' p10-p90 spread is {noisy:.0%} of the median (median over points); "
                         "a busy machine? delete it and measure again when idle")
        t_prof = calibration.get("torch_threads")
        if device == "cpu" and t_prof and t_prof != pilot.threads_per_worker:
            notes.append(f"the profile ran {t_prof} torch threads, each pilot worker runs {pilot.threads_per_worker}: "
                         "step times are extrapolated")
    else:
        notes.append("no --profile for the endpoint's device: nothing to predict, measured values only")

    if pilot.mode == "disaggregated" and not pilot.prefill_workers:
        total = max_workers or default_max_workers(device)
        p, dd = balance_split(pilot, rep, d, total) if rep is not None else (1, total - 1)
        pilot = replace(pilot, prefill_workers=p, decode_workers=dd,
                        why=pilot.why + (f"split {p} + {dd}: the most capacity from {total} workers, "
                                         "max of min(p x prefill capacity, d x decode capacity)",))
    contention = None
    if rep is not None and endpoint is None and device == "cpu" and probe and not predict_only:
        contention = measure_contention(pilot, d, cap_len, timeout_s, say, nice)
        if contention is not None:
            calibration = {**calibration, "contention": contention.to_dict()}
    cap, limit = contended_capacity(pilot, rep, d, contention) if rep is not None else (0.0, "unknown")
    if pilot_rate is not None:
        rate = float(pilot_rate)
        kept = tuple(x for x in pilot.why if not x.startswith("load:"))
        pilot = replace(pilot, why=kept + (f"rate {rate:.3g} req/s given (--pilot-rate)",))
    else:
        if cap <= 0:
            raise BadInput("cannot choose a pilot rate: no predicted capacity (give --pilot-rate)")
        rate = pilot.load_frac * cap
    pilot = replace(pilot, rate_rps=rate, capacity_rps=cap, load_frac=rate / cap if cap > 0 else pilot.load_frac,
                    traffic_share=rate / traffic_rps if traffic_rps else None,
                    why=pilot.why + (f"predicted capacity {cap:.3g} req/s (bound: {limit}); pilot rate {rate:.3g} req/s",))
    if pilot.traffic_share is not None:
        pilot = replace(pilot, why=pilot.why + (f"the pilot carries {pilot.traffic_share:.3g} of the workload's {traffic_rps:.4g} req/s "
                                                "(on this device; the plan's replicas are other hardware)",))

    if predict_only:
        from planner.sizing.current import split_link_bytes_s

        # The KV path plan assumes for these devices (nothing is measured): the contract with plan.
        link = split_link_bytes_s(rep.gpu, 1, rep.gpu, 1) if pilot.mode == "disaggregated" else None
        return PredictOnly(pilot, predict(pilot, rep, d, link), workload, calibration, notes)
    if min_requests and requests is None and duration_s and rate * duration_s < min_requests:
        requests = int(min_requests)  # a slow pilot runs longer: percentiles of a dozen requests are noise
        notes.append(f"{requests} requests replayed (more than {duration_s:g} s of arrivals at {rate:.3g} req/s): --min-requests")
    # The schedule, then a context just long enough for it (less KV cache to allocate).
    if workload.timestamps_s is not None and replay_trace:
        schedule = rp.trace_schedule(workload, rate, requests, None if requests else duration_s, cap_len)
        notes.append("arrivals: the trace's own timestamps, scaled to the pilot rate")
    else:
        schedule = rp.poisson_schedule(workload, rate, requests, None if requests else duration_s, seed, cap_len)
    longest = max(r.prompt_tokens + r.output_tokens for r in schedule)
    pilot = replace(pilot, max_model_len=min(cap_len, int(math.ceil((longest + 1) / 64) * 64)))

    transport = {}
    if pilot.mode == "disaggregated" and rep is not None:
        layer_bytes = int(d.mean_prompt * rep.kv_bytes_per_token / spec.layers)
        bw = measure_transport(layer_bytes)
        transport = {"kind": "zeromq tcp loopback", "message_bytes": layer_bytes, "measured_bytes_per_s": bw,
                     "note": "PUSH->PULL of one mean KV layer message, unloaded: the wire-time ceiling"}
    if endpoint is None and device == "cpu":
        busy = machine_busy_cores(1.0)
        if busy is not None and busy > CONTENTION_CORES:
            say(f"warning: this machine is already busy ({busy:.2f} of {os.cpu_count()} cores in use by other processes): "
                "the pilot will share the CPU and is likely to be marked invalid")
    primary = _run_one(pilot, rep, d, schedule, workload, transport, endpoint, timeout_s, seed, progress, on_serving, say,
                       served_model, nice, contention)
    result = ValidateResult(primary, workload, calibration, transport, notes)
    if compare_colocated and not primary.measurement.interrupted:
        col = pilot.as_colocated()
        cont_c = measure_contention(col, d, cap_len, timeout_s, say, nice) if contention is not None else None
        cap_c, limit_c = contended_capacity(col, rep, d, cont_c)
        col = replace(col, capacity_rps=cap_c, load_frac=rate / cap_c if cap_c else 0.0,
                      why=col.why + (f"colocated capacity {cap_c:.3g} req/s (bound: {limit_c}) at the same {rate:.3g} req/s",))
        result.colocated = _run_one(col, rep, d, schedule, workload, {}, None, timeout_s, seed, progress, None, say,
                                    served_model, nice, cont_c)
    return result


def _run_one(pilot, rep, d, schedule, workload, transport, endpoint, timeout_s, seed, progress, on_serving, say, served_model,
             nice=0, contention=None) -> RunResult:
    simulated = None
    slow = {}
    if rep is not None:
        bw = transport.get("measured_bytes_per_s")
        rep, slow = pilot_replica(pilot, rep, d, contention, pilot.rate_rps, bw)
        pred = predict(pilot, rep, d, bw)
        if contention is not None:
            pred = replace(pred, notes=pred.notes + (
                "workers share this machine's cores: prefill times x{:.3f}, decode steps x{:.3f} (probed contention "
                "x the neighbour's predicted busy share)".format(1 + slow["prefill"], 1 + slow["decode"]),))
        try:
            sr = simulate_pilot(pilot, rep, d, schedule, bw)
            simulated = {**sr.summary(), "e2e_s_mean": float(np.mean(sr.e2e_s))}
        except BadInput as e:  # the simulator refuses a configuration: say so, keep the closed forms
            say(f"simulation skipped: {e}")
    else:
        pred = Prediction(pilot.mode, False, "no profile", None, None, None, None, {}, {}, None, None, None)
    thr = predicted_throughput(schedule, pred.e2e_s_mean, pilot.capacity_rps) if rep is not None else (None, None)
    say(f"pilot: {pilot.label()} at {pilot.rate_rps:.3g} req/s, {len(schedule)} requests over "
        f"{schedule[-1].at_s:.0f} s")
    meas = run_pilot(pilot, schedule, endpoint, timeout_s, seed, progress, on_serving, say, served_model, nice)
    return RunResult(pilot, pred, meas, thr, workload.slo, len(schedule), simulated, contention, slow, schedule)
