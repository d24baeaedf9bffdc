"""Which pilot to run: the plan's prefill:decode ratio and per-replica load, scaled to the local workers.

Without a plan, the split that balances the two pools on this machine (planner.pilot.predict.balance_split).
Rates in req/s.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace


from planner.errors import BadInput
from planner.runtime.config import ServeConfig


RUNTIME_MAX_SEQS = ServeConfig.max_seqs
RUNTIME_MAX_BATCH_TOKENS = ServeConfig.max_batch_tokens
#: Validate's workload defaults: sized so a CPU pilot of `tiny` sees tens of requests a minute.
DEFAULT_INPUT_LEN = "uniform:64-192"
DEFAULT_OUTPUT_LEN = "uniform:32-96"
DEFAULT_LOAD_FRAC = 0.6
#: Step-time models of local_replica (--roofline), the default first.

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
    engine: str = "planner"  # the serving engine the pilot runs (planner.queueing.engine): this project's runtime
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


def endpoint_pilot(model: str, engine: str, mode: str | None, plan: dict | None, prefill_workers: int | None,
                   decode_workers: int | None, workers: int | None, load_frac: float | None, max_seqs: int | None,
                   max_batch_tokens: int | None, source: str) -> Pilot:
    """The shape of a pilot that is already running at --endpoint (say, a vLLM server): from the
    flags or the plan, never assumed (one colocated server unless told; a split only when the user
    says the endpoint is a router in front of P prefill and D decode instances). Its limits are
    the profile's (`source` says where they came from)."""
    kind = mode or ((plan or {}).get("recommendation") if (plan or {}).get("recommendation") in ("disaggregated", "colocated") else None)
    if kind is None:
        raise BadInput("--endpoint: say what serves it: --mode colocated [--workers N] (N engine instances behind it), or "
                       "--mode disaggregated --prefill-workers P --decode-workers D (a router in front of a split)")
    if kind not in ("disaggregated", "colocated"):
        raise BadInput(f"--mode {kind!r}: expected disaggregated or colocated")
    why = [f"endpoint pilot: {engine} as it runs there ({source})"]
    if kind == "colocated":
        pilot = Pilot(model, "endpoint", "colocated", workers=workers or 1)
        why.append(f"{workers or 1} colocated instance(s) behind the endpoint" + ("" if workers else " (--workers not given)"))
    else:
        if not (prefill_workers and decode_workers):
            raise BadInput("--endpoint with --mode disaggregated: give --prefill-workers P and --decode-workers D (the instances behind the router)")
        pilot = Pilot(model, "endpoint", "disaggregated", prefill_workers=prefill_workers, decode_workers=decode_workers)
    lf = DEFAULT_LOAD_FRAC if load_frac is None else float(load_frac)
    if not 0 < lf < 1.5:
        raise BadInput(f"--load-frac must be in (0, 1.5), got {lf}")
    return replace(pilot, load_frac=lf, engine=engine, max_seqs=max_seqs or 0, max_batch_tokens=max_batch_tokens or 0,
                   threads_per_worker=0, dtype="", why=tuple(why))


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
