"""The queueing closed forms against the discrete-event simulator, on many random workloads.

For random (GPU type, model, prompt/output mix, load between 30% and 90% of one replica's capacity)
it evaluates one replica per role with planner.queueing.models and simulates the same replica with
planner.simulate.des (the same roofline service times, random routing), then prints the median and
90th-percentile absolute gap per metric and role. This gap is the closed forms' error, published in
the README.

    python benchmarks/model_vs_sim.py [--cases 24] [--requests 3000] [--seed 0]
"""

import argparse
import json

import numpy as np

from planner.specs.catalog import load_catalog
from planner.queueing.models import ColocatedModel, DecodeModel, PrefillModel, capacity
from planner.queueing.samples import Demand
from planner.steptime.roofline import Replica
from planner.simulate.des import simulate_colocated, simulate_disaggregated
from planner.specs.models import PRESETS
from planner.workload.workload import LengthDist

GPUS = ["h100-sxm", "a100-sxm-80gb", "l40s", "l4", "mi300x"]
MODELS = ["llama-3.1-8b", "qwen2.5-7b", "mistral-7b"]


def pcts(a):
    a = a[np.isfinite(a)]
    return np.percentile(a, [50, 90, 99]) * 1e3


def one_case(rng, n_req):
    cat = load_catalog()
    gpu = cat.resolve(rng.choice(GPUS))
    spec = PRESETS[rng.choice(MODELS)]
    rep = Replica(spec, gpu, 1)
    if not rep.fits:
        return None
    inp = LengthDist.lognormal(mean=float(rng.uniform(200, 3000)), sigma=float(rng.uniform(0.3, 1.0)))
    out = LengthDist.lognormal(mean=float(rng.uniform(50, 500)), sigma=float(rng.uniform(0.3, 1.0)))
    frac = float(rng.uniform(0.3, 0.9))
    role = rng.choice(["prefill", "decode", "colocated", "colocated-chunked"])
    # Loose SLOs: capacity is then the throughput limit, and the load fraction is of that.
    d_rng = np.random.default_rng(int(rng.integers(1 << 30)))
    d = Demand(inp.sample(d_rng, 1000).astype(float), out.sample(d_rng, 1000).astype(float), 1e9, 1e9, 90)
    model = {"prefill": PrefillModel(rep, d), "decode": DecodeModel(rep, d), "colocated": ColocatedModel(rep, d),
             "colocated-chunked": ColocatedModel(rep, d, 2048)}[role]
    cap, _, _ = capacity(model)
    if cap <= 0:
        return None
    lam = frac * cap
    e = model.eval(lam)
    if not e.feasible:
        return None
    srng = np.random.default_rng(int(rng.integers(1 << 30)))
    p, o = inp.sample(srng, n_req), out.sample(srng, n_req)
    common = dict(rate_rps=lam, kv_capacity_tokens=rep.kv_capacity_tokens, routing="random", seed=int(rng.integers(1 << 30)))
    if role in ("prefill", "decode"):
        sim = simulate_disaggregated(p, o, rep.prefill_time_s, rep.decode_step_s, lambda l: 0.0, n_prefill=1, n_decode=1,
                                     max_decode_batch=model.max_batch if role == "decode" else 256, **common)
    else:
        chunk = 2048 if role == "colocated-chunked" else None
        sim = simulate_colocated(p, o, rep.prefill_time_s, rep.decode_step_s, n_replicas=1, chunked=chunk is not None,
                                 chunk_tokens=chunk or 512, max_decode_batch=model.dec.max_batch,
                                 mixed_step_s=(lambda pt, b, ctx: rep.decode_step_s(max(b, 1), ctx, pt)) if chunk else None, **common)
    keep = np.arange(n_req) >= int(0.1 * n_req)
    res = {"role": role, "gpu": gpu.key, "model": spec.name, "load_frac": round(frac, 2)}
    if e.ttft_ms and role != "decode":
        s = pcts(sim.ttft_s[keep])
        for q, pv, sv in zip((50, 90, 99), (e.ttft_ms.p50, e.ttft_ms.p90, e.ttft_ms.p99), s):
            res[f"TTFT p{q}"] = (pv - sv) / sv * 100
    if e.tpot_ms and role != "prefill":
        s = pcts(sim.tpot_s[keep])
        for q, pv, sv in zip((50, 90, 99), (e.tpot_ms.p50, e.tpot_ms.p90, e.tpot_ms.p99), s):
            res[f"TPOT p{q}"] = (pv - sv) / sv * 100
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=24)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    rows = []
    while len(rows) < a.cases:
        r = one_case(rng, a.requests)
        if r:
            rows.append(r)
    metrics = ["TTFT p50", "TTFT p90", "TTFT p99", "TPOT p50", "TPOT p90", "TPOT p99"]
    summary = {}
    print(f"{'role':18s} {'metric':9s} {'cases':>5s} {'median |gap|':>13s} {'p90 |gap|':>10s} {'median gap':>11s}")
    for role in ("prefill", "decode", "colocated", "colocated-chunked"):
        for m in metrics:
            g = np.array([r[m] for r in rows if r["role"] == role and m in r])
            if len(g):
                summary[f"{role} {m}"] = {"cases": len(g), "median_abs_gap_pct": round(float(np.median(np.abs(g))), 1),
                                          "p90_abs_gap_pct": round(float(np.percentile(np.abs(g), 90)), 1), "median_gap_pct": round(float(np.median(g)), 1)}
                s = summary[f"{role} {m}"]
                print(f"{role:18s} {m:9s} {len(g):5d} {s['median_abs_gap_pct']:12.1f}% {s['p90_abs_gap_pct']:9.1f}% {s['median_gap_pct']:+10.1f}%")
    print(json.dumps({"cases": len(rows), "requests_per_case": a.requests, "seed": a.seed, "summary": summary}))


if __name__ == "__main__":
    main()
