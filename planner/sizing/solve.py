"""The optimizer proper: candidate replicas per role, the cheapest pool of each, one PlanSide each.

`solve` is what every caller re-runs at another rate or SLO (the plan itself, the Pareto front,
the daily schedule, the breakeven map, the uncertainty draws); capacities are cached on the
search space, so a second solve searches little. A side's predicted percentiles are the pools
model's (planner.queueing.pools) where the engine's pools differ from its replicas, else the
replica evaluations at each replica's load (planner.sizing.optimizer.evaluate_pool).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from planner.queueing.samples import Demand
from planner.sizing.optimizer import NETWORK_MAX_UTIL, SearchSpace, candidates, cheapest_pool, evaluate_pool, worst_pcts
from planner.specs.models import ModelSpec
from planner.steptime.roofline import KV_COMPRESSION_FACTOR

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
    itl: object = None  # Pcts (ms): every inter-token gap

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
                "itl_ms": self.itl.to_dict() if self.itl else None,
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


def _r(x, nd=4):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x), nd)


def _pool_prediction(kind: str, pools: dict, d: Demand, space: SearchSpace):
    """The pools model's prediction (planner.queueing.pools) of single-type pools at their rate, for
    an engine whose pools differ from their replicas (smoother decode arrivals, per-request TPOT);
    None otherwise (the replica evaluations are then the prediction)."""
    from planner.queueing.pools import predict_colocated, predict_split
    from planner.sizing.capacities import split_link_bytes_s

    eng = space.engine
    if (eng.tpot, eng.decode_arrivals) == ("per-step", "poisson") or any(len(p.items) != 1 for p in pools.values()):
        return None
    if kind == "colocated":
        (c, n), = pools["pool"].items
        return predict_colocated(c.replica, d, eng, n, pools["pool"].lam_rps, c.qmodel.chunk)
    (cp, np_), (cd, nd) = pools["prefill"].items[0], pools["decode"].items[0]
    link = split_link_bytes_s(cp.gpu, cp.tp, cd.gpu, cd.tp)
    return predict_split(cp.replica, cd.replica, d, eng, np_, nd, pools["decode"].lam_rps, link, compression=space.kv_compression)


def _side_from_pools(kind: str, pools: dict, d: Demand, why: str = "", space: SearchSpace | None = None) -> PlanSide:
    if any(p is None for p in pools.values()):
        missing = [r for r, p in pools.items() if p is None]
        return PlanSide(kind, False, {r: p for r, p in pools.items() if p}, math.inf, why_infeasible=why or f"no {'/'.join(missing)} replica meets the SLOs on the allowed GPUs")
    evals = {r: evaluate_pool(p) for r, p in pools.items()}
    cost = sum(p.usd_per_hour for p in pools.values())
    pp = _pool_prediction(kind, pools, d, space) if space is not None else None
    if kind == "disaggregated":
        pe, de = evals["prefill"], evals["decode"]
        binding = _binding_of(pools)
        xfer = [c.kv_transfer_ms for c, _ in pools["prefill"].items]
        ttft, tpot, itl = (pp.ttft_ms, pp.tpot_ms, pp.itl_ms) if pp is not None and pp.feasible else (pe.ttft_ms, de.tpot_ms, de.itl_ms)
        return PlanSide(kind, pe.feasible and de.feasible, pools, cost, ttft, tpot, binding,
                        {"prefill": pe.utilization, "decode": de.utilization}, float(max(xfer)), itl=itl)
    e = evals["pool"]
    modes = sorted({c.mode for c, _ in pools["pool"].items})
    ttft, tpot, itl = (pp.ttft_ms, pp.tpot_ms, pp.itl_ms) if pp is not None and pp.feasible else (e.ttft_ms, e.tpot_ms, e.itl_ms)
    if itl is None and e.feasible:  # the replicas' own ITL, the worst type per percentile (as evaluate_pool)
        ps = [c.qmodel.itl_at(lam_i) for (c, _), lam_i in zip(pools["pool"].items, pools["pool"].loads()) if hasattr(c.qmodel, "itl_at")]
        if ps and all(ps):
            itl = worst_pcts(ps)
    return PlanSide(kind, e.feasible, pools, cost, ttft, tpot, _binding_of(pools), {"pool": e.utilization}, None, ", ".join(modes), itl=itl)


def _binding_of(pools: dict) -> str:
    """The constraint that sized the most expensive pool's main replica type."""
    role, pool = max(pools.items(), key=lambda kv: kv[1].usd_per_hour)
    c, _ = max(pool.items, key=lambda it: it[0].usd_per_replica_hour * it[1])
    return f"{c.binding} ({role} {c.label()})" if role != "pool" else f"{c.binding} ({c.label()})"


def solve(model: ModelSpec, w, space: SearchSpace, d: Demand | None = None) -> tuple[PlanSide, PlanSide, dict]:
    """The optimizer proper: candidates per role, MILP per pool. Returns (disagg, coloc, candidates).

    Only `w.rate_rps` is read from `w` when `d` is given. A replica's capacity depends on the
    SLOs and the lengths, not on the arrival rate, so capacities are cached on `space` (shared by
    the sub-spaces the Pareto front and the daily schedule derive with replace()): a second solve
    at another rate, or with only the other role's SLO moved, searches no capacity again."""
    d = d or Demand.from_workload(w)
    lam = w.rate_rps
    kv_rate = lam * d.mean_prompt * model.kv_bytes_per_token(space.kv_dtype) * KV_COMPRESSION_FACTOR[space.kv_compression]
    need_net = kv_rate / NETWORK_MAX_UTIL
    dec_c = candidates("decode", model, d, space, space.decode_gpus or space.gpus, lam=lam, need_net_bytes_s=need_net)
    dec_pool = cheapest_pool(dec_c, lam, need_net)
    link = min((c.net_share_bytes_s for c, _ in dec_pool.items), default=None) if dec_pool else None
    # Prefill capacity depends on the decode pool's NIC share (the KV transfer counts in TTFT).
    pre_c = candidates("prefill", model, d, space, space.prefill_gpus or space.gpus, link, lam=lam, need_net_bytes_s=need_net)
    pre_pool = cheapest_pool(pre_c, lam, need_net)
    col_c = candidates("colocated", model, d, space, space.gpus, lam=lam)
    col_pool = cheapest_pool(col_c, lam)
    dis = _side_from_pools("disaggregated", {"prefill": pre_pool, "decode": dec_pool}, d, space=space)
    col = _side_from_pools("colocated", {"pool": col_pool}, d, space=space)
    return dis, col, {"prefill": pre_c, "decode": dec_c, "colocated": col_c}
