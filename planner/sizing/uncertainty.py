"""How sure is a plan? Monte Carlo over the roofline's calibrated parameters, propagated to every
prediction the plan makes: TTFT/TPOT percentiles, capacity, replica counts, cost, and the verdict.

What is uncertain. Every step time comes from the roofline's Efficiency (planner.steptime.roofline):
compute and memory efficiency and the two fixed overheads. Each draw multiplies them by lognormal
factors exp(sigma z), z standard normal, from a seeded generator (the same plan gives the same
intervals). The spread sigma (relative, 1 standard deviation) of each GPU type is

    sigma^2 = sigma_base^2 + sigma_type^2

  * sigma_base, shared by every type in a draw (they all inherit the same efficiencies):
    - calibrated by a profile: the fit's own error, per phase (compute efficiency and prefill
      overhead from the prefill residuals, memory efficiency and decode overhead from the decode
      residuals): 1.4826 x the median absolute relative error (the normal sigma a median absolute
      deviation implies), at least 2%;
    - no profile: DEFAULT_SIGMA (10%) on the efficiencies and DEFAULT_OVERHEAD_SIGMA (30%) on the
      overheads: the defaults reproduce public Llama-3.1-8B H100 figures, which engines and
      versions spread by about that much.
  * sigma_type, drawn independently per type: 0 for a type a profile calibrated (or, without
    profiles, the H100 SXM the defaults come from), EXTRAPOLATED_SIGMA (15%) for every type the
    efficiencies are carried to through datasheet specs alone.

What is propagated. For each draw the plan's chosen pools are re-evaluated with the drawn step
times: each pool item's capacity within the SLOs (a fresh bisection), the pool re-sized to the
rate with the same GPU types (the pool integer program), its cost, and the latencies of the plan
as sized at its load. The plan is not re-optimised across the catalog per draw (that would cost
a full search per draw); the intervals are those of the chosen plans. Intervals are the 5th-95th
percentiles over the draws, widened to include the point prediction; `p_disaggregated_cheaper` is
the share of draws in which the re-sized split costs less than the re-sized colocated pool, and
`p_meets_slo` the share in which the plan as sized still meets its SLOs.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from planner.queueing.models import ColocatedModel, DecodeModel, PrefillModel
from planner.sizing.capacities import search_capacity
from planner.sizing.pool_ip import solve_pool_ip
from planner.steptime.roofline import Efficiency

DRAWS = 32
SEED = 0
DEFAULT_SIGMA = 0.10  # efficiencies, no profile: public H100 figures spread about this much across engines
DEFAULT_OVERHEAD_SIGMA = 0.30  # fixed overheads, no profile
EXTRAPOLATED_SIGMA = 0.15  # a type reached through datasheet specs only
MIN_FIT_SIGMA = 0.02
REFERENCE_GPU = "h100-sxm"  # the type the default efficiencies reproduce
INTERVAL = (5, 95)  # percentiles of the draws
MC_REL_TOL = 0.02  # capacity bisection tolerance within a draw


def spreads(calibration: dict, gpu_keys) -> dict:
    """Per GPU type: {compute, memory, prefill_overhead, decode_overhead} base sigmas and the
    type's own sigma (relative), with where they come from (module doc)."""
    cal = (calibration or {}).get("gpus") or {}
    if cal:
        fits = [v for v in cal.values() if v.get("prefill") or v.get("decode")]
        pre = [v["prefill"]["median_abs_error_pct"] for v in fits if v.get("prefill")]
        dec = [v["decode"]["median_abs_error_pct"] for v in fits if v.get("decode")]
        sp = max(1.4826 * float(np.median(pre)) / 100, MIN_FIT_SIGMA) if pre else DEFAULT_SIGMA
        sd = max(1.4826 * float(np.median(dec)) / 100, MIN_FIT_SIGMA) if dec else DEFAULT_SIGMA
        base = {"compute": sp, "prefill_overhead": sp, "memory": sd, "decode_overhead": sd}
        source = "fit residuals of the profile(s)"
        own = {k: (0.0 if k in cal else EXTRAPOLATED_SIGMA) for k in gpu_keys}
    else:
        base = {"compute": DEFAULT_SIGMA, "memory": DEFAULT_SIGMA, "prefill_overhead": DEFAULT_OVERHEAD_SIGMA, "decode_overhead": DEFAULT_OVERHEAD_SIGMA}
        source = "default spread (no profile)"
        own = {k: (0.0 if k == REFERENCE_GPU else EXTRAPOLATED_SIGMA) for k in gpu_keys}
    return {k: {"base": base, "type_sigma": own[k], "source": source, "extrapolated": own[k] > 0} for k in gpu_keys}


def _draw_eff(eff: Efficiency, sp: dict, z_base: np.ndarray, z_type: np.ndarray) -> Efficiency:
    b, s = sp["base"], sp["type_sigma"]
    f = [math.exp(b[k] * z_base[i] + s * z_type[i]) for i, k in enumerate(("compute", "memory", "prefill_overhead", "decode_overhead"))]
    return replace(eff, compute=min(eff.compute * f[0], 1.0), memory=min(eff.memory * f[1], 1.0),
                   prefill_overhead_s=eff.prefill_overhead_s * f[2], decode_overhead_s=eff.decode_overhead_s * f[3])


def _model_for(c, rep, d, space):
    """The candidate's queueing model rebuilt on replica `rep` (drawn step times)."""
    if c.role == "prefill":
        return PrefillModel(rep, d, transfer_s=c.qmodel.transfer_s)  # the KV transfer is no roofline time: kept
    if c.role == "decode":
        return DecodeModel(rep, d)
    chunk = int(c.mode.split()[1]) if c.mode.startswith("chunked") else None
    return ColocatedModel(rep, d, chunk)


def _side_draw(side, space, model, d, lam: float, need_net: float, latencies: bool = True) -> dict:
    """One draw of one side: re-sized cost, per item capacity and count, latencies as sized."""
    out = {"usd": 0.0, "caps": [], "counts": [], "ttft": None, "tpot": None, "meets": True}
    worst: dict = {}
    for role, pool in side.pools.items():
        models, caps = [], []
        for c, _ in pool.items:
            m = _model_for(c, space.replica(model, c.gpu, c.tp), d, space)
            # Bracketed from the point capacity: a draw moves it by tens of %, not by 10x; a 2%
            # bisection tolerance is plenty for a 90% interval.
            hi = min(m.lam_max, 1.5 * c.capacity_rps) if c.role == "prefill" else 1.5 * c.capacity_rps
            cap = search_capacity(m, lam_hi=hi, rel_tol=MC_REL_TOL)[0]
            models.append(m)
            caps.append(cap)
        cost = [c.usd_per_replica_hour for c, _ in pool.items]
        if all(x > 0 for x in caps):
            net = [c.net_share_bytes_s for c, _ in pool.items] if role != "pool" and need_net > 0 else None
            ub = [math.ceil(lam / x) + 1 for x in caps]
            if net:
                ub = [max(u, math.ceil(need_net / max(b, 1e-9)) + 1) for u, b in zip(ub, net)]
            n = solve_pool_ip(cost, caps, lam, ub, net, need_net if net else 0.0)
        else:
            n = None
        if n is None:
            out["usd"] = math.inf
            n = [math.nan] * len(caps)
        else:
            out["usd"] += sum(ci * k for ci, k in zip(cost, n))
        out["caps"] += caps
        out["counts"] += list(n)
        own = {"prefill": ("ttft_ms",), "decode": ("tpot_ms",)}.get(role, ("ttft_ms", "tpot_ms"))
        for m, lam_i in zip(models, pool.loads() if latencies else ()):  # the plan as sized, at its own load
            e = m.eval(lam_i)
            out["meets"] = out["meets"] and e.feasible
            for attr in own:  # mixed pools: the worst type per percentile, as evaluate_pool
                p = getattr(e, attr)
                new = (p.p50, p.p90, p.p99) if p is not None else (math.inf,) * 3  # overloaded: no finite latency
                worst[attr] = tuple(max(a, b) for a, b in zip(worst.get(attr, (-math.inf,) * 3), new))
    out["ttft"], out["tpot"] = worst.get("ttft_ms"), worst.get("tpot_ms")
    return out


def _interval(xs, point) -> list | None:
    """[lo, hi]: nearest-rank INTERVAL percentiles of the draws, widened to hold the point; an end
    that is infinite (draws that overload the plan as sized) is None."""
    s = sorted(float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x)))
    if not s:
        return None
    n = len(s) - 1
    lo, hi = s[int(round(INTERVAL[0] / 100 * n))], s[int(round(INTERVAL[1] / 100 * n))]
    if point is not None and math.isfinite(point):
        lo, hi = min(lo, point), max(hi, point)
    return [_r(lo), _r(hi)]


def _r(x, nd: int = 4):
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def plan_uncertainty(result, d, draws: int = DRAWS, seed: int = SEED, latencies: bool = True) -> dict:
    """Intervals for a PlanResult's predictions (module doc). Returns the JSON-ready dict:
    {sides: {kind: {predicted_interval, usd_per_hour_interval, items: [...], p_meets_slo}},
     savings_pct_interval, p_disaggregated_cheaper, method: {...}}."""
    space, model, w = result.space, result.model, result.workload
    lam = w.rate_rps
    sides = {k: s for k, s in (("disaggregated", result.disaggregated), ("colocated", result.colocated)) if s.feasible}
    keys = sorted({c.gpu.key for s in sides.values() for p in s.pools.values() for c, _ in p.items})
    sp = spreads(result.calibration, keys)
    kv_rate = lam * d.mean_prompt * model.kv_bytes_per_token(space.kv_dtype) * (0.5 if space.kv_compression != "none" else 1.0)
    from planner.sizing.optimizer import NETWORK_MAX_UTIL

    need_net = kv_rate / NETWORK_MAX_UTIL
    rng = np.random.default_rng(seed)
    samples = {k: [] for k in sides}
    for _ in range(draws):
        z_base = rng.standard_normal(4)
        effs = {g: _draw_eff(space.eff(_gpu(sides, g)), sp[g], z_base, rng.standard_normal(4)) for g in keys}
        sub = replace(space, efficiencies={**space.efficiencies, **effs}, cache={})
        for kind, side in sides.items():
            samples[kind].append(_side_draw(side, sub, model, d, lam, need_net, latencies))
    out = {"sides": {}}
    for kind, side in sides.items():
        ss = samples[kind]
        pi = {}
        for attr, point in (("ttft", side.ttft), ("tpot", side.tpot)):
            vals = [s[attr] for s in ss] if latencies else []
            if point is None or not vals or all(v is None for v in vals):
                pi[f"{attr}_ms"] = None
                continue
            pi[f"{attr}_ms"] = {q: _interval([v[i] if v else None for v in vals], getattr(point, q)) for i, q in enumerate(("p50", "p90", "p99"))}
        items, i = [], 0
        for pool in side.pools.values():
            for c, n in pool.items:
                items.append({"capacity_rps_per_replica_interval": _interval([s["caps"][i] for s in ss], c.capacity_rps),
                              "replicas_interval": _int_interval([s["counts"][i] for s in ss], n)})
                i += 1
        out["sides"][kind] = {"predicted_interval": pi, "usd_per_hour_interval": _interval([s["usd"] for s in ss], side.usd_per_hour),
                              "items": items, "p_meets_slo": round(sum(s["meets"] for s in ss) / len(ss), 3) if latencies else None}
    if len(sides) == 2:
        sav = []
        for a, b in zip(samples["disaggregated"], samples["colocated"]):
            sav.append((b["usd"] - a["usd"]) / b["usd"] * 100 if math.isfinite(b["usd"]) and b["usd"] > 0 and math.isfinite(a["usd"]) else math.nan)
        ok = [x for x in sav if math.isfinite(x)]
        cheaper = [a["usd"] < b["usd"] for a, b in zip(samples["disaggregated"], samples["colocated"]) if math.isfinite(a["usd"]) or math.isfinite(b["usd"])]
        out["savings_pct_interval"] = _interval(ok, result.savings_pct) if ok else None
        out["p_disaggregated_cheaper"] = round(sum(cheaper) / len(cheaper), 3) if cheaper else None
    else:
        out["savings_pct_interval"], out["p_disaggregated_cheaper"] = None, (1.0 if "disaggregated" in sides else 0.0) if sides else None
    out["method"] = {"draws": draws, "seed": seed, "interval": f"p{INTERVAL[0]}-p{INTERVAL[1]} of the draws, widened to include the point",
                     "parameters": "roofline compute/memory efficiency and fixed overheads, lognormal",
                     "spread_by_gpu": {k: {"sigma_compute": _r(math.hypot(v["base"]["compute"], v["type_sigma"]), 3),
                                           "sigma_memory": _r(math.hypot(v["base"]["memory"], v["type_sigma"]), 3),
                                           "source": v["source"], "extrapolated": v["extrapolated"]} for k, v in sp.items()},
                     "propagation": "the chosen pools re-sized per draw with the same GPU types; not re-optimised across the catalog"}
    return out


def _int_interval(xs, point) -> list | None:
    """Replica counts: as _interval, over the draws that could be re-sized at all."""
    iv = _interval([float(x) for x in xs if x == x], float(point))
    return [int(math.floor(iv[0])), int(math.ceil(iv[1]))] if iv and None not in iv else iv


def _gpu(sides, key):
    for s in sides.values():
        for p in s.pools.values():
            for c, _ in p.items:
                if c.gpu.key == key:
                    return c.gpu
    raise KeyError(key)
