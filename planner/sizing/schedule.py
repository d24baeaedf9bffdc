"""Daily traffic: size every hour of the day, and compare autoscaling with a pool fixed for the peak.

Traffic is not flat, and a pool sized for the busiest hour idles through the night. Given a
workload's 24-hour profile (`hourly_rps`, req/s: from a YAML `hourly_rps:` list or a trace spanning
at least two hours), we re-run the optimizer (planner.sizing.solve.solve) at each hour's rate and report,
per hour and per kind (disaggregated, colocated), the pools and $/hour, then per day:

    autoscaled  = sum over the 24 hours of the cheapest plan at that hour's rate   ($/day)
    fixed peak  = 24 x the cheapest plan at the busiest hour's rate               ($/day)

Each hour is sized at  hourly_rps[h] x headroom,  headroom = max(1, rate_rps / max(hourly_rps)):
the profile scaled so that its busiest hour is sized exactly like the plan (whose sizing rate
already holds the peak factor, or a trace's busiest minute). An hour with no traffic scales to zero.

Speed: replica capacities are computed once for the day (RateSolver), hours with the same rate
share one solve, and the search is restricted to the GPU types of the peak plan and of its
runner-ups (as planner.api.pareto_front does).
"""

from __future__ import annotations

import math
from dataclasses import replace

from planner.errors import BadInput

from planner.sizing.solve import HOURS_PER_MONTH

HOURS_PER_DAY = 24
DAYS_PER_MONTH = HOURS_PER_MONTH / 24.0  # the same month as the plan's $/month
KINDS = ("disaggregated", "colocated")


def headroom(workload) -> float:
    """Sizing rate / busiest hour's mean rate, at least 1 (dimensionless)."""
    return max(1.0, workload.rate_rps / max(workload.hourly_rps))


def hourly_schedule(model, workload, space, gpu_keys=None, hourly_rps=None) -> dict:
    """Size each hour of the day for `workload` (see the module doc). JSON-ready dict:

        hours:   [{hour, rate_rps, sizing_rate_rps, disaggregated: SIDE, colocated: SIDE}] x 24
                 SIDE = {feasible, usd_per_hour, gpus, pools: {role: [{gpu, tp, replicas, gpus, mode}]},
                         usd_per_hour_by_role: {role: $/h}}
        totals:  {kind: {usd_per_day_autoscaled, usd_per_month_autoscaled, gpu_hours_per_day_autoscaled,
                         peak_hour, usd_per_hour_fixed_peak, usd_per_day_fixed_peak, usd_per_month_fixed_peak,
                         autoscaling_saving_pct}}   (None where some hour has no feasible plan)
        recommended: the kind with the cheaper autoscaled day ("none" if neither is feasible all day)
        headroom, gpus_considered, distinct_rates, assumptions

    model: ModelSpec; workload: planner.workload.workload.Workload; space: planner.sizing.optimizer.SearchSpace.
    gpu_keys: GPU types to search (default: those of the peak-hour plan and its 2 best runner-ups per
    role); hourly_rps: 24 rates (req/s) overriding workload.hourly_rps."""
    from planner.queueing.samples import Demand

    hourly = _check_hourly(hourly_rps if hourly_rps is not None else workload.hourly_rps)
    w = replace(workload, hourly_rps=hourly) if hourly_rps is not None else workload
    hr = headroom(w)
    d = Demand.from_workload(w)  # lengths and SLOs only: the same for every hour
    peak_rate = max(hourly) * hr
    if gpu_keys is None:
        gpu_keys = _keys_from_solve(model, w.with_rate(peak_rate), space, d)
    sub = restrict(space, gpu_keys)

    solve_at = RateSolver(model, sub, d)
    cache: dict[float, tuple] = {}

    def at(rate: float):
        if rate not in cache:
            cache[rate] = solve_at(rate) if rate > 0 else (None, None)
        return cache[rate]

    hours = []
    for h, mean in enumerate(hourly):
        rate = mean * hr
        dis, col = at(rate)
        hours.append({"hour": h, "rate_rps": _r(mean), "sizing_rate_rps": _r(rate),
                      "disaggregated": _side(dis, rate), "colocated": _side(col, rate)})

    peak_hour = max(range(HOURS_PER_DAY), key=lambda h: hourly[h])
    totals = {kind: _totals(hours, kind, peak_hour) for kind in KINDS}
    day = {k: totals[k]["usd_per_day_autoscaled"] for k in KINDS if totals[k]["usd_per_day_autoscaled"] is not None}
    rec = min(day, key=day.get) if day else "none"
    notes = [
        f"each hour sized at its mean rate x {hr:.3g} (the plan's sizing rate / the busiest hour's mean rate, at least 1)",
        "autoscaling: every hour gets the cheapest pools for its own rate; replica start-up time and warm spares are not counted",
        "an hour with no traffic scales to zero",
        f"GPU types searched per hour: {', '.join(sorted(gpu_keys))} (the peak plan's and its runner-ups')",
    ]
    return {"hours": hours, "totals": totals, "recommended": rec, "headroom": _r(hr),
            "gpus_considered": sorted(gpu_keys), "distinct_rates": len(cache), "assumptions": notes}


class RateSolver:
    """planner.sizing.solve.solve at many rates of one workload, sharing the expensive part.

    A replica's capacity within the SLOs (optimizer.candidates: a bisection per GPU type and tp)
    depends on the lengths and SLOs, not on the pool's arrival rate; only the prefill candidates
    depend on the decode pool's network share. solve caches capacities on the search space,
    so after the first rate each one costs the few capacity searches a new rate brings into
    contention and three small integer programs.
    """

    def __init__(self, model, space, d):
        self.model, self.space, self.d = model, space, d

    def __call__(self, lam: float) -> tuple:
        """(disaggregated PlanSide, colocated PlanSide) at `lam` req/s."""
        from types import SimpleNamespace

        from planner.sizing.solve import solve

        dis, col, _ = solve(self.model, SimpleNamespace(rate_rps=lam), self.space, self.d)
        return dis, col


def schedule_for_plan(result) -> dict | None:
    """hourly_schedule for a PlanResult (None when its workload has no hourly profile).

    Searches the GPU types of both chosen plans and of the 2 best runner-ups per role."""
    w = result.workload
    if getattr(w, "hourly_rps", None) is None or result.space is None:
        return None
    keys = {c.gpu.key for side in (result.disaggregated, result.colocated) for pool in side.pools.values() for c, _ in pool.items}
    for rows in (result.runner_ups or {}).values():
        keys.update(x["gpu"] for x in rows[:2])
    if not keys:
        keys = {g.key for g in result.space.gpus}
    return hourly_schedule(result.model, w, result.space, gpu_keys=keys)


def restrict(space, keys):
    """The search space narrowed to GPU types `keys` (per-role lists narrowed too)."""
    keys = set(keys)
    gpus = [g for g in space.gpus if g.key in keys]
    if not gpus:
        raise BadInput(f"schedule: none of the GPU types {sorted(keys)} is in the search space")
    return replace(space, gpus=gpus,
                   prefill_gpus=[g for g in (space.prefill_gpus or gpus) if g.key in keys] or None,
                   decode_gpus=[g for g in (space.decode_gpus or gpus) if g.key in keys] or None)


def _keys_from_solve(model, w_peak, space, d) -> set:
    from planner.sizing.solve import solve
    from planner.sizing.optimizer import single_type_pools

    dis, col, cands = solve(model, w_peak, space, d)
    keys = {c.gpu.key for side in (dis, col) for pool in side.pools.values() for c, _ in pool.items}
    for cs in cands.values():
        for p in single_type_pools(cs, w_peak.rate_rps, top=2):
            keys.add(p.items[0][0].gpu.key)
    return keys or {g.key for g in space.gpus}


def _check_hourly(v) -> tuple:
    if v is None:
        raise BadInput("schedule: the workload has no hourly profile (give hourly_rps: [24 rates] in the workload YAML, or a trace spanning >= 2 hours)")
    rates = tuple(float(x) for x in v)
    if len(rates) != HOURS_PER_DAY:
        raise BadInput(f"schedule: hourly_rps must hold 24 rates (req/s), got {len(rates)}")
    if any(not math.isfinite(x) or x < 0 for x in rates) or max(rates) <= 0:
        raise BadInput("schedule: hourly_rps must be finite, >= 0, with at least one hour > 0")
    return rates


def _side(side, rate: float) -> dict:
    """One kind at one hour. rate 0: nothing runs, $0."""
    if rate <= 0:
        return {"feasible": True, "usd_per_hour": 0.0, "gpus": 0, "pools": {}, "usd_per_hour_by_role": {}}
    if side is None or not side.feasible:
        return {"feasible": False, "usd_per_hour": None, "gpus": None, "pools": {}, "usd_per_hour_by_role": {},
                "why_infeasible": getattr(side, "why_infeasible", "") or "no plan meets the SLOs at this rate"}
    return {"feasible": True, "usd_per_hour": _r(side.usd_per_hour), "gpus": sum(p.gpus for p in side.pools.values()),
            "pools": {role: [{"gpu": c.gpu.key, "tp": c.tp, "replicas": n, "gpus": c.tp * n, "mode": c.mode or None} for c, n in pool.items]
                      for role, pool in side.pools.items()},
            "usd_per_hour_by_role": {role: _r(pool.usd_per_hour) for role, pool in side.pools.items()}}


def _totals(hours: list, kind: str, peak_hour: int) -> dict:
    cost = [h[kind]["usd_per_hour"] for h in hours]
    gpus = [h[kind]["gpus"] for h in hours]
    peak = hours[peak_hour][kind]["usd_per_hour"]
    auto = sum(cost) if all(c is not None for c in cost) else None
    fixed = HOURS_PER_DAY * peak if peak is not None else None
    return {
        "usd_per_day_autoscaled": _r(auto),
        "usd_per_month_autoscaled": _r(auto * DAYS_PER_MONTH) if auto is not None else None,
        "gpu_hours_per_day_autoscaled": sum(gpus) if all(g is not None for g in gpus) else None,
        "peak_hour": peak_hour,
        "usd_per_hour_fixed_peak": _r(peak),
        "usd_per_day_fixed_peak": _r(fixed),
        "usd_per_month_fixed_peak": _r(fixed * DAYS_PER_MONTH) if fixed is not None else None,
        "autoscaling_saving_pct": _r((fixed - auto) / fixed * 100) if auto is not None and fixed else None,
    }


def _r(x, nd: int = 4):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x), nd)
