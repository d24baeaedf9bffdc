"""Check a plan's closed-form percentiles by discrete-event simulation of the same pools.

`planner plan --simulate` runs the chosen disaggregated and colocated plans through planner.simulate.des
with the roofline's service times and the workload's lengths (seeded), and reports, per metric, the
closed form, the simulated value and their gap. The gap is the queueing model's error, which the
README publishes; the simulator itself is checked against M/M/1, M/D/1 and Erlang C in its tests.

Conventions aligned with the closed forms: TTFT includes the KV transfer (the simulator records it
separately, after the first token), and TPOT excludes it.
"""

from __future__ import annotations

import numpy as np

from planner.queueing.models import DEFAULT_PREFILL_TOKEN_BUDGET, MAX_DECODE_BATCH
from planner.queueing.samples import Demand
from planner.steptime.roofline import kv_transfer_s

SIM_REQUESTS = 4000


def _first(pool):
    """The main replica type of a pool (simulating mixed pools as their main type: stated)."""
    c, _ = max(pool.items, key=lambda it: it[1] * it[0].capacity_rps)
    return c


def _pcts(a: np.ndarray) -> dict:
    a = a[np.isfinite(a)]
    return {q: float(np.percentile(a, q)) * 1e3 for q in (50, 90, 99)} if len(a) else {q: float("nan") for q in (50, 90, 99)}


def simulate_plan(result, d: Demand | None = None, n: int = SIM_REQUESTS, seed: int = 0) -> dict:
    """Simulate the feasible plans of `result` (a PlanResult); return the comparison table."""
    from planner.simulate.des import simulate_colocated, simulate_disaggregated

    w = result.workload
    rng = np.random.default_rng(seed)
    prompts = w.input.sample(rng, n)
    outputs = w.output.sample(rng, n)
    plans: dict = {}
    for side in (result.disaggregated, result.colocated):
        if not side.feasible:
            continue
        if side.kind == "disaggregated":
            pre, dec = _first(side.pools["prefill"]), _first(side.pools["decode"])
            n_pre = sum(k for _, k in side.pools["prefill"].items)
            n_dec = sum(k for _, k in side.pools["decode"].items)
            link = min(c.net_share_bytes_s for pool in side.pools.values() for c, _ in pool.items)  # as the plan assumed
            kvb = pre.replica.kv_bytes_per_token
            comp = result.space.kv_compression if result.space else "none"
            sim = simulate_disaggregated(
                prompts, outputs, pre.replica.prefill_time_s, dec.replica.decode_step_s,
                lambda l: kv_transfer_s(l, kvb, link, compression=comp),
                rate_rps=w.rate_rps, n_prefill=n_pre, n_decode=n_dec, max_prefill_tokens=DEFAULT_PREFILL_TOKEN_BUDGET,
                max_decode_batch=dec.qmodel.max_batch if dec.qmodel else MAX_DECODE_BATCH,
                kv_capacity_tokens=dec.replica.kv_capacity_tokens, routing="random", seed=seed)
        else:
            c = _first(side.pools["pool"])
            n_rep = sum(k for _, k in side.pools["pool"].items)
            chunk = int(c.mode.split()[-1]) if c.mode.startswith("chunked") else None
            rep = c.replica
            sim = simulate_colocated(
                prompts, outputs, rep.prefill_time_s, rep.decode_step_s, rate_rps=w.rate_rps, n_replicas=n_rep,
                max_batch_tokens=DEFAULT_PREFILL_TOKEN_BUDGET, max_decode_batch=c.qmodel.dec.max_batch if c.qmodel else MAX_DECODE_BATCH,
                kv_capacity_tokens=rep.kv_capacity_tokens, chunked=chunk is not None, chunk_tokens=chunk or 512,
                mixed_step_s=(lambda pt, b, ctx: rep.decode_step_s(max(b, 1), ctx, pt)) if chunk else None,
                routing="random", seed=seed)
        keep = np.arange(len(sim.ttft_s)) >= int(sim.warmup_frac * len(sim.ttft_s))
        xfer = np.nan_to_num(sim.kv_transfer_s)
        ttft = (sim.ttft_s + xfer)[keep]
        steps = np.maximum(sim.output_len - 1, 1)
        tpot = np.where(sim.output_len > 1, (sim.e2e_s - sim.ttft_s - xfer) / steps, np.nan)[keep]
        got = {"ttft_ms": _pcts(ttft), "tpot_ms": _pcts(tpot)}
        rows = {}
        for metric, pred in (("ttft_ms", side.ttft), ("tpot_ms", side.tpot)):
            for q in (50, 90, 99):
                p = pred.at(q) if pred else None
                s = got[metric][q]
                rows[f"{metric.split('_')[0].upper()} p{q}"] = {"predicted": p, "simulated": s, "gap_pct": (p - s) / s * 100 if p is not None and s > 0 else None}
        plans[side.kind] = rows
    gaps = [abs(v["gap_pct"]) for rows in plans.values() for v in rows.values() if v["gap_pct"] is not None]
    return {"requests": n, "seed": seed, "routing": "random split (as the closed forms assume)", "plans": plans,
            "median_abs_gap_pct": float(np.median(gaps)) if gaps else None, "max_abs_gap_pct": float(np.max(gaps)) if gaps else None}
