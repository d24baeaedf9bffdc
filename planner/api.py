"""The plan pipeline as one Python call: specs -> roofline -> queueing -> optimizer -> PlanResult.

`planner plan` (cli.py) parses flags, calls `plan(...)`, renders the result (report.py) and sets the
exit code. Notebooks and other tools call `plan(...)` directly and read `PlanResult.to_dict()`, which
is the JSON contract documented in the README.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace

from planner.errors import BadInput, Infeasible, PlannerError
from planner.sizing.optimizer import (
    KV_TRANSFER_WARN_MS,
    NETWORK_MAX_UTIL,
    Pool,
    SearchSpace,
    candidates,
    cheapest_pool,
    evaluate_pool,
    price_or_none,
    single_type_pools,
)
from planner.queueing.models import ColocatedModel, Demand
from planner.steptime.roofline import Replica, valid_tp
from planner.specs.models import ModelSpec, resolve_model

HOURS_PER_MONTH = 730.0


@dataclass
class PlanSide:
    """One answer (disaggregated or colocated): pools, cost, predicted latencies."""

    kind: str
    feasible: bool
    pools: dict  # role -> Pool
    usd_per_hour: float
    ttft: object = None  # Pcts (ms)
    tpot: object = None  # Pcts (ms)
    binding: str = ""
    utilization: dict = field(default_factory=dict)
    kv_transfer_ms: float | None = None
    mode: str = ""
    why_infeasible: str = ""

    def to_dict(self, out_tok_per_s: float, unc: dict | None = None) -> dict:
        """JSON of this side; `unc` (planner.sizing.uncertainty, this side's entry) adds intervals."""
        d = {
            "feasible": self.feasible,
            "usd_per_hour": _r(self.usd_per_hour),
            "usd_per_month": _r(self.usd_per_hour * HOURS_PER_MONTH),
            "usd_per_million_output_tokens": _r(self.usd_per_hour / (out_tok_per_s * 3600) * 1e6) if self.feasible and out_tok_per_s > 0 else None,
            "gpus": sum(p.gpus for p in self.pools.values()),
            "predicted": {
                "ttft_ms": self.ttft.to_dict() if self.ttft else None,
                "tpot_ms": self.tpot.to_dict() if self.tpot else None,
            },
            "utilization": {k: round(v, 3) for k, v in self.utilization.items()},
            "binding_constraint": self.binding or None,
        }
        if not self.feasible:
            d["why_infeasible"] = self.why_infeasible
        if unc:
            d["predicted_interval"] = unc["predicted_interval"]
            d["usd_per_hour_interval"] = unc["usd_per_hour_interval"]
            d["p_meets_slo"] = unc["p_meets_slo"]
        items = iter(unc["items"]) if unc else None
        for role, pool in self.pools.items():
            d[role] = pool.to_list()
            if items is not None:
                for row in d[role]:
                    row.update(next(items))
        if self.kind == "disaggregated":
            d["kv_transfer_ms"] = _r(self.kv_transfer_ms) if self.kv_transfer_ms is not None else None
        else:
            d["mode"] = self.mode or None
        return d


@dataclass
class PlanResult:
    model: ModelSpec
    workload: object
    disaggregated: PlanSide
    colocated: PlanSide
    recommendation: str
    savings_pct: float | None
    runner_ups: dict
    pareto: list
    current: dict | None
    assumptions: list
    warnings: list
    calibration: dict
    timings_s: dict
    simulation: dict | None = None
    space: SearchSpace | None = None
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    schedule: dict | None = None  # hourly sizing when the workload has a daily profile (planner.sizing.schedule)
    uncertainty: dict | None = None  # intervals from planner.sizing.uncertainty

    @property
    def output_tokens_per_s(self) -> float:
        return self.workload.rate_rps * self.workload.output.mean

    @property
    def feasible(self) -> bool:
        return self.disaggregated.feasible or self.colocated.feasible

    def best(self) -> PlanSide:
        return self.disaggregated if self.recommendation == "disaggregated" else self.colocated

    def to_dict(self) -> dict:
        m = self.model
        return {
            "planner_version": __import__("planner").__version__,
            "model": {
                "name": m.name,
                "params_total": m.params_total,
                "params_active": m.params_active,
                "weight_dtype": self.weight_dtype,
                "weight_bytes": int(m.weight_bytes(self.weight_dtype)),
                "kv_dtype": self.kv_dtype,
                "kv_bytes_per_token": int(m.kv_bytes_per_token(self.kv_dtype)),
                "prefill_flops_per_token_at_mean_prompt": _r(m.prefill_flops(self.workload.input.mean) / self.workload.input.mean),
            },
            "workload": self.workload.to_dict(),
            "disaggregated": self.disaggregated.to_dict(self.output_tokens_per_s, self._unc("disaggregated")),
            "colocated": self.colocated.to_dict(self.output_tokens_per_s, self._unc("colocated")),
            "recommendation": self.recommendation,
            "savings_pct": _r(self.savings_pct) if self.savings_pct is not None else None,
            "savings_pct_interval": (self.uncertainty or {}).get("savings_pct_interval"),
            "p_disaggregated_cheaper": (self.uncertainty or {}).get("p_disaggregated_cheaper"),
            "uncertainty": (self.uncertainty or {}).get("method"),
            "current": self.current,
            "runner_ups": self.runner_ups,
            "pareto": self.pareto,
            "calibration": self.calibration,
            "simulation": self.simulation,
            "schedule": self.schedule,
            "assumptions": self.assumptions,
            "warnings": self.warnings,
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
        }


def _unc_of(result, kind):
    return ((result.uncertainty or {}).get("sides") or {}).get(kind)


PlanResult._unc = _unc_of


def _r(x, nd=4):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x), nd)


# ---------------------------------------------------------------------------------------------------


def _side_from_pools(kind: str, pools: dict, d: Demand, why: str = "") -> PlanSide:
    if any(p is None for p in pools.values()):
        missing = [r for r, p in pools.items() if p is None]
        return PlanSide(kind, False, {r: p for r, p in pools.items() if p}, math.inf, why_infeasible=why or f"no {'/'.join(missing)} replica meets the SLOs on the allowed GPUs")
    evals = {r: evaluate_pool(p) for r, p in pools.items()}
    cost = sum(p.usd_per_hour for p in pools.values())
    if kind == "disaggregated":
        pe, de = evals["prefill"], evals["decode"]
        binding = _binding_of(pools)
        xfer = [c.kv_transfer_ms for c, _ in pools["prefill"].items]
        return PlanSide(kind, pe.feasible and de.feasible, pools, cost, pe.ttft_ms, de.tpot_ms, binding,
                        {"prefill": pe.utilization, "decode": de.utilization}, float(max(xfer)))
    e = evals["pool"]
    modes = sorted({c.mode for c, _ in pools["pool"].items})
    return PlanSide(kind, e.feasible, pools, cost, e.ttft_ms, e.tpot_ms, _binding_of(pools), {"pool": e.utilization}, None, ", ".join(modes))


def _binding_of(pools: dict) -> str:
    """The constraint that sized the most expensive pool's main replica type."""
    role, pool = max(pools.items(), key=lambda kv: kv[1].usd_per_hour)
    c, _ = max(pool.items, key=lambda it: it[0].usd_per_replica_hour * it[1])
    return f"{c.binding} ({role} {c.label()})" if role != "pool" else f"{c.binding} ({c.label()})"


def _parse_current(spec: str, catalog, model: ModelSpec):
    """'8xa100-40gb', '8 x h100:tp2', '2xl40s/tp=2' -> (GPU, count, tp or None)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*([A-Za-z0-9._ -]+?)\s*(?:[:/,]\s*tp\s*=?\s*(\d+))?\s*", spec or "")
    if not m:
        raise BadInput(f"--current {spec!r}: expected COUNTxGPU[:tpN], e.g. 8xa100-40gb or 8xh100:tp2")
    count, gpu, tp = int(m.group(1)), catalog.resolve(m.group(2)), int(m.group(3)) if m.group(3) else None
    if count <= 0:
        raise BadInput(f"--current {spec!r}: GPU count must be > 0")
    if tp is not None and (count % tp or not valid_tp(model, gpu, tp)):
        raise BadInput(f"--current {spec!r}: tp {tp} must divide the count {count} and the {model.heads} heads, within {gpu.gpus_per_node} GPUs per node")
    return gpu, count, tp


def evaluate_current(spec: str, catalog, model, d: Demand, w, space: SearchSpace) -> dict:
    """Does today's colocated setup meet the SLOs at this load, and what does it cost?"""
    gpu, count, tp_given = _parse_current(spec, catalog, model)
    price = gpu.price(space.provider)
    best = None
    for tp in ([tp_given] if tp_given else [t for t in (1, 2, 4, 8) if valid_tp(model, gpu, t) and count % t == 0]):
        rep = space.replica(model, gpu, tp)
        if not rep.fits:
            continue
        replicas = count // tp
        for chunk in (None, 512, 2048):
            e = ColocatedModel(rep, d, chunk).eval(w.rate_rps / replicas)
            score = (e.feasible, -(e.tpot_ms.at(d.q) if e.tpot_ms else math.inf))
            if best is None or score > best[0]:
                best = (score, tp, replicas, e, chunk)
    usd = price.usd_per_gpu_hour * count
    out = {"spec": spec, "gpu": gpu.key, "gpus": count, "usd_per_hour": _r(usd), "usd_per_month": _r(usd * HOURS_PER_MONTH), "provider": price.provider}
    if best is None:
        return {**out, "feasible": False, "tp": tp_given, "replicas": 0, "why": f"{model.name} does not fit on {gpu.key} at any tp that divides {count}", "predicted": None}
    _, tp, replicas, e, chunk = best
    return {**out, "tp": tp, "replicas": replicas, "mode": "unchunked" if chunk is None else f"chunked {chunk}",
            "feasible": e.feasible, "why": "" if e.feasible else f"fails {e.binding or 'throughput'} at {w.rate_rps / replicas:.3g} req/s per replica",
            "predicted": {"ttft_ms": e.ttft_ms.to_dict() if e.ttft_ms else None, "tpot_ms": e.tpot_ms.to_dict() if e.tpot_ms else None}}


def check_floor(model: ModelSpec, w, space: SearchSpace, gpus: list) -> None:
    """An SLO below what physics allows on every allowed GPU is a user mistake: say the floor.
    A model that fits on none of them is infeasible (exit 3), whatever the SLOs."""
    fitting = [space.replica(model, g, tp) for g in gpus for tp in (1, 2, 4, 8) if valid_tp(model, g, tp)]
    fitting = [r for r in fitting if r.fits]
    if not fitting:
        big = max(gpus, key=lambda g: g.memory_gb * g.gpus_per_node)
        raise Infeasible(f"{model.name} ({model.weight_bytes(space.weight_dtype) / 1e9:.1f} GB of {space.weight_dtype} weights plus KV cache) "
                         f"fits on none of the allowed GPUs within one node (largest: {min(big.gpus_per_node, 8)} x {big.key} = "
                         f"{big.memory_gb * min(big.gpus_per_node, 8):g} GB)")
    ctx = w.input.mean + w.output.mean / 2
    best = min(fitting, key=lambda r: r.decode_step_s(1, ctx))
    fastest = max(gpus, key=lambda g: g.mem_bw_gbps)
    one = Replica(model, fastest, 1, space.weight_dtype)
    if w.slo.tpot_ms < best.decode_step_s(1, ctx) * 1e3:
        raise BadInput(
            f"--tpot-slo {w.slo.tpot_ms:g} ms is below the physical floor: a decode step must read the "
            f"{model.weight_bytes(space.weight_dtype) / 1e9:.1f} GB of {space.weight_dtype} weights, which takes "
            f"{one.weight_read_floor_s * 1e3:.2f} ms on one {fastest.name} at full bandwidth; the fastest allowed setup "
            f"({best.label()}) needs {best.decode_step_s(1, ctx) * 1e3:.2f} ms per step even alone")
    lq = w.input.percentile(w.slo.percentile)
    pf = min(r.prefill_time_s([lq]) for r in fitting)
    if w.slo.ttft_ms < pf * 1e3:
        raise BadInput(f"--ttft-slo {w.slo.ttft_ms:g} ms is below the physical floor: a p{w.slo.percentile} prompt of {lq:.0f} tokens "
                       f"takes at least {pf * 1e3:.1f} ms to prefill on the fastest allowed setup")


def solve(model: ModelSpec, w, space: SearchSpace, d: Demand | None = None) -> tuple[PlanSide, PlanSide, dict]:
    """The optimizer proper: candidates per role, MILP per pool. Returns (disagg, coloc, candidates).

    Only `w.rate_rps` is read from `w` when `d` is given. A replica's capacity depends on the
    SLOs and the lengths, not on the arrival rate, so capacities are cached on `space` (shared by
    the sub-spaces the Pareto front and the daily schedule derive with replace()): a second solve
    at another rate, or with only the other role's SLO moved, searches no capacity again."""
    d = d or Demand.from_workload(w)
    lam = w.rate_rps
    kv_rate = lam * d.mean_prompt * model.kv_bytes_per_token(space.kv_dtype) * (0.5 if space.kv_compression != "none" else 1.0)
    need_net = kv_rate / NETWORK_MAX_UTIL
    dec_c = candidates("decode", model, d, space, space.decode_gpus or space.gpus, lam=lam, need_net_bytes_s=need_net)
    dec_pool = cheapest_pool(dec_c, lam, need_net)
    link = min((c.net_share_bytes_s for c, _ in dec_pool.items), default=None) if dec_pool else None
    # Prefill capacity depends on the decode pool's NIC share (the KV transfer counts in TTFT).
    pre_c = candidates("prefill", model, d, space, space.prefill_gpus or space.gpus, link, lam=lam, need_net_bytes_s=need_net)
    pre_pool = cheapest_pool(pre_c, lam, need_net)
    col_c = candidates("colocated", model, d, space, space.gpus, lam=lam)
    col_pool = cheapest_pool(col_c, lam)
    dis = _side_from_pools("disaggregated", {"prefill": pre_pool, "decode": dec_pool}, d)
    col = _side_from_pools("colocated", {"pool": col_pool}, d)
    return dis, col, {"prefill": pre_c, "decode": dec_c, "colocated": col_c}


def build_space(catalog=None, gpus=None, prefill_gpus=None, decode_gpus=None, provider=None, profiles=(), weight_dtype="bf16",
                kv_dtype="bf16", kv_compression="none"):
    """(catalog, SearchSpace, calibration report) from plan()'s hardware arguments: the catalog
    (a Catalog, a YAML path or None for the packaged one), the GPU types allowed per role, the
    price source, the profiles that calibrate the roofline, and the dtypes. Errors name the flag."""
    from planner.specs.catalog import Catalog, load_catalog

    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
    for name, v in (("--weight-dtype", weight_dtype), ("--kv-dtype", kv_dtype)):
        if v not in ("fp32", "bf16", "fp16", "fp8", "int8", "int4"):
            raise BadInput(f"{name} {v!r}: expected fp32, bf16, fp16, fp8, int8 or int4")
    if kv_compression not in ("none", "fp8", "int8"):
        raise BadInput(f"--kv-compression {kv_compression!r}: expected none, fp8 or int8")

    calibration = {"status": "uncalibrated", "profiles": [], "gpus": {}}
    efficiencies: dict = {}
    extra_gpus = []
    measured: dict = {}
    if profiles:
        from planner.steptime.calibrate import calibrate_from_profiles

        cal = calibrate_from_profiles(profiles, cat)
        efficiencies, extra_gpus, calibration, measured = cal.efficiencies, cal.local_gpus, cal.report, cal.measured

    def pick(names):
        if not names:
            return None
        names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
        out = []
        for n in names:
            if n.lower() == "local" and not extra_gpus:
                raise BadInput("--gpus local needs --profile FILE: a profile of this device (not a catalog GPU) gives its measured speeds")
            loc = [g for g in extra_gpus if n.lower() in ("local", g.key, g.name.lower())]
            out.extend(loc if loc else cat.select([n]))
        return out

    all_gpus = pick(gpus) or list(cat)
    space = SearchSpace(all_gpus, pick(prefill_gpus), pick(decode_gpus), provider, weight_dtype, kv_dtype, kv_compression, efficiencies,
                        measured=measured)
    if provider:
        priced = [g for g in all_gpus if price_or_none(g, provider) is not None]
        if not priced:
            raise BadInput(f"--provider {provider!r}: none of the allowed GPUs has a price from it")
        space.skipped = [(g.key, f"no {provider} price") for g in all_gpus if g not in priced]
    return cat, space, calibration


def plan(
    model: str | ModelSpec = "llama-3.1-8b",
    workload=None,
    *,
    rate: float | None = None,
    requests_per_day: float | None = None,
    peak_factor: float = 1.0,
    input_len="1000",
    output_len="250",
    ttft_slo_ms: float = 1000.0,
    tpot_slo_ms: float = 50.0,
    percentile: int = 90,
    catalog=None,
    gpus: list[str] | str | None = None,
    prefill_gpus: list[str] | str | None = None,
    decode_gpus: list[str] | str | None = None,
    provider: str | None = None,
    current: str | None = None,
    profiles: list = (),
    simulate: bool = False,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
    kv_compression: str = "none",
    pareto: bool = True,
    schedule: bool | None = None,
    uncertainty: bool = True,
    draws: int | None = None,
) -> PlanResult:
    """Size the cheapest disaggregated and colocated deployments for a workload (see module doc)."""
    from planner.workload.workload import workload_from_flags

    t0 = time.perf_counter()
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    if workload is None:
        if rate is None and requests_per_day is None:
            rate = 10.0
        workload = workload_from_flags(rate=rate, requests_per_day=requests_per_day, peak_factor=peak_factor, input_len=input_len,
                                       output_len=output_len, ttft_slo_ms=ttft_slo_ms, tpot_slo_ms=tpot_slo_ms, percentile=percentile)
    w = workload
    cat, space, calibration = build_space(catalog, gpus, prefill_gpus, decode_gpus, provider, profiles, weight_dtype, kv_dtype, kv_compression)
    all_gpus = space.gpus
    check_floor(spec, w, space, all_gpus)
    t1 = time.perf_counter()
    d = Demand.from_workload(w)
    dis, col, cands = solve(spec, w, space, d)
    t2 = time.perf_counter()

    if dis.feasible and col.feasible:
        rec = "disaggregated" if dis.usd_per_hour < col.usd_per_hour else "colocated"
        # A local device is priced $0 unless told: then there is no saving to state.
        savings = (col.usd_per_hour - dis.usd_per_hour) / col.usd_per_hour * 100 if col.usd_per_hour > 0 else None
    elif dis.feasible or col.feasible:
        rec, savings = ("disaggregated" if dis.feasible else "colocated"), None
    else:
        rec, savings = "none", None

    runner_ups = {role: [_pool_summary(p) for p in single_type_pools(cs, w.rate_rps)] for role, cs in cands.items()}
    cur = evaluate_current(current, cat, spec, d, w, space) if current else None
    if cur:
        best = dis if rec == "disaggregated" else col
        for side, name in ((dis, "disaggregated"), (col, "colocated")):
            cur[f"savings_pct_vs_{name}"] = _r((cur["usd_per_hour"] - side.usd_per_hour) / cur["usd_per_hour"] * 100) if side.feasible else None
        cur["savings_pct_recommended"] = cur.get(f"savings_pct_vs_{rec}") if best.feasible else None
    t3 = time.perf_counter()
    front = pareto_front(spec, w, space, cands, (dis, col)) if pareto and (dis.feasible or col.feasible) else []
    t4 = time.perf_counter()

    warnings, assumptions = _notes(spec, w, space, dis, col, cat, calibration)
    result = PlanResult(spec, w, dis, col, rec, savings, runner_ups, front, cur, assumptions, warnings, calibration,
                        {"setup": t1 - t0, "optimizer": t2 - t1, "runner_ups_and_current": t3 - t2, "pareto": t4 - t3}, None, space, weight_dtype, kv_dtype)
    if uncertainty and (dis.feasible or col.feasible):
        from planner.sizing.uncertainty import DRAWS, plan_uncertainty

        if draws is not None and not (isinstance(draws, int) and 2 <= draws <= 10000):
            raise BadInput(f"--draws {draws!r}: expected an integer from 2 to 10000")
        tu = time.perf_counter()
        result.uncertainty = plan_uncertainty(result, d, draws or DRAWS)
        result.timings_s["uncertainty"] = time.perf_counter() - tu
    if simulate:
        from planner.simulate.check import simulate_plan

        result.simulation = simulate_plan(result, d)
        result.timings_s["simulate"] = time.perf_counter() - t4
    if schedule or (schedule is None and getattr(w, "hourly_rps", None)):
        from planner.sizing.schedule import schedule_for_plan

        t5 = time.perf_counter()
        result.schedule = schedule_for_plan(result)
        result.timings_s["schedule"] = time.perf_counter() - t5
    return result


def _pool_summary(p: Pool) -> dict:
    c, n = p.items[0]
    return {"label": c.label(), "gpu": c.gpu.key, "tp": c.tp, "replicas": n, "gpus": c.tp * n, "mode": c.mode or None,
            "usd_per_hour": _r(p.usd_per_hour), "capacity_rps_per_replica": _r(c.capacity_rps), "binding": c.binding}


def pareto_front(model, w, space: SearchSpace, cands: dict, chosen=(), factors=(0.5, 1.0, 2.0)) -> list[dict]:
    """Cheapest $/hour of each kind as the TTFT or the TPOT target moves (the other held fixed).

    To stay fast it re-solves only over the GPU types of the chosen plans, of the 4 best candidates
    per req/s and of the 2 cheapest single-type pools of each role at the real SLOs. Factor 1 is
    the plan itself."""
    keys = {c.gpu.key for side in chosen for pool in side.pools.values() for c, _ in pool.items}
    for cs in cands.values():
        for c in sorted(cs, key=lambda c: c.usd_per_rps_hour)[:2]:
            keys.add(c.gpu.key)
        for p in single_type_pools(cs, w.rate_rps, top=2):
            keys.add(p.items[0][0].gpu.key)
    gpus = [g for g in space.gpus if g.key in keys]
    sub = replace(space, gpus=gpus, prefill_gpus=[g for g in (space.prefill_gpus or gpus) if g.key in keys] or None,
                  decode_gpus=[g for g in (space.decode_gpus or gpus) if g.key in keys] or None)
    out = []
    for target in ("tpot_ms", "ttft_ms"):
        for f in factors:
            slo = replace(w.slo, **{target: getattr(w.slo, target) * f})
            if f == 1.0:
                dis, col = chosen
            else:
                # The role whose SLO did not move finds its capacities in the cache (solve).
                try:
                    dis, col, _ = solve(model, replace(w, slo=slo), sub)
                except PlannerError:  # a tightened SLO may leave nothing: that point is infeasible
                    dis = col = None
            out.append({"vary": target, "factor": f, "ttft_slo_ms": slo.ttft_ms, "tpot_slo_ms": slo.tpot_ms,
                        "disaggregated_usd_per_hour": _r(dis.usd_per_hour) if dis and dis.feasible else None,
                        "colocated_usd_per_hour": _r(col.usd_per_hour) if col and col.feasible else None})
    return out


def _notes(spec, w, space: SearchSpace, dis: PlanSide, col: PlanSide, cat, calibration) -> tuple[list, list]:
    warnings, assumptions = [], []
    assumptions += list(getattr(w, "notes", ()) or ())
    assumptions += [
        f"model {spec.name}: {spec.params_total / 1e9:.2f} B params ({spec.params_active / 1e9:.2f} B active), weights {space.weight_dtype}, KV cache {space.kv_dtype} ({spec.kv_bytes_per_token(space.kv_dtype)} B/token)",
        "routing: each pool splits arrivals between replicas in proportion to capacity (random split of a Poisson stream); join-shortest-queue does better, so latencies are conservative",
        "roofline efficiencies: " + ("calibrated from profiles for " + ", ".join(sorted(calibration.get('gpus', {}))) if calibration.get("gpus") else "defaults from public H100 measurements (compute 66% of dense peak, bandwidth 75%, 2 ms per prefill batch, 0.3 ms per decode step), moved to other GPUs by their datasheet specs"),
        "memory: 90% of device memory usable, 2 GB per GPU reserved for activations; a decode replica runs at most 256 sequences",
        "prefill batches up to 8192 tokens; TTFT in disaggregated mode includes the KV transfer to the decode pool",
        "KV transfer between pools goes over the node network (each replica gets its share of the node NIC: NIC * tp / GPUs per node) plus 1 ms latency",
        "tensor parallelism stays within one node; tp in {1, 2, 4, 8}",
        f"prices: {'provider ' + space.provider if space.provider else 'cheapest listed on-demand price per GPU type'}; check them on the provider's page before buying",
        "cost per million output tokens is at the sizing rate; $/month = $/hour x 730",
    ]
    for side in (dis, col):
        for pool in side.pools.values():
            for c, _ in pool.items:
                if c.price.confidence != "confirmed":
                    warnings.append(f"price of {c.gpu.key} ({c.price.provider}, ${c.usd_per_gpu_hour}/GPU-h) is {c.price.confidence}: {c.price.source_url}")
                if getattr(c.gpu, "node_network_assumed", False) and side.kind == "disaggregated":
                    warnings.append(f"{c.gpu.key}: node network {c.gpu.node_network_gbit:g} Gbit/s is an assumed default (no source)")
    if dis.kv_transfer_ms is not None and dis.kv_transfer_ms > KV_TRANSFER_WARN_MS:
        warnings.append(f"KV transfer takes {dis.kv_transfer_ms:.0f} ms per request (> {KV_TRANSFER_WARN_MS:.0f} ms): it eats the latency benefit of disaggregation")
    if not calibration.get("gpus"):
        warnings.append("no profile given: every GPU type is extrapolated from datasheet specs with default efficiencies (run `planner profile` and pass --profile)")
    for key, why in space.skipped:
        warnings.append(f"{key} skipped: {why}")
    return sorted(set(warnings), key=warnings.index), assumptions
