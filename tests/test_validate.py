"""`planner validate`: pilot derivation, the prediction's known answers, the JSON contract, and
end-to-end pilots of `tiny` on this CPU (a normal run, a worker killed mid-run, Ctrl-C)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from planner.pilot import replay as rp
from planner.pilot import compare, derive, device
from planner.pilot import predict as pilot_predict
from planner.pilot import run as pilot_run
from planner.pilot import validate as v
from planner.queueing.pools import PoolPrediction
from planner.errors import BadInput
from planner.measure.files import save_profile
from planner.queueing import arrivals, greedy, pools
from planner.queueing.samples import Demand, Pcts
from planner.queueing.pools import role_model
from planner.queueing.engine import engine_named
from planner.steptime.adjust import Adjusted, longest_context_pad
from planner.specs.models import resolve_model
from planner.workload.workload import workload_from_flags

SHORT = dict(input_len="uniform:16-48", output_len="uniform:8-24")


def synthetic_profile(path, prefill_s_per_token=3e-4, decode_base_s=0.008, decode_s_per_seq=0.0015):
    """A profile of `tiny` whose times follow a formula (no torch, no minute of measuring)."""
    spec = resolve_model("tiny")
    samples = [{"phase": "prefill", "batch": b, "prompt_len": l, "context_len": 0,
                "seconds": 0.004 + prefill_s_per_token * b * l} for b, l in [(1, 16), (1, 32), (1, 64), (1, 128), (2, 64), (4, 64)]]
    samples += [{"phase": "decode", "batch": b, "prompt_len": 0, "context_len": c,
                 "seconds": decode_base_s + decode_s_per_seq * b} for b in (1, 2, 4, 8, 16, 32) for c in (32, 64)]
    meta = {"kind": "local", "device": {"name": "test cpu", "type": "cpu", "memory_gb": 16.0, "torch_threads": 1},
            "model": spec.to_dict(), "dtype": "fp32", "tp": 1,
            "ceilings": {"matmul_tflops": 0.1, "mem_bw_gbps": 20.0, "link_gbps": None}}
    return save_profile(path, meta, samples)


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    return synthetic_profile(tmp_path_factory.mktemp("prof") / "tiny-test.json")


@pytest.fixture(scope="module")
def rep(profile_path):
    return device.local_replica(resolve_model("tiny"), profile_path)[0]


def _demand(inp="uniform:64-192", out="uniform:32-96"):
    return Demand.from_workload(workload_from_flags(rate=1.0, input_len=inp, output_len=out))


# ---- pilot derivation ------------------------------------------------------------------------------
def test_split_for_ratio_known_answers():
    assert derive.split_for_ratio(0.5, 2) == (1, 1)
    assert derive.split_for_ratio(0.25, 4) == (1, 3)
    assert derive.split_for_ratio(0.6, 5) == (3, 2)
    assert derive.split_for_ratio(0.1, 3) == (1, 2)  # at least one of each


def test_workers_and_threads_from_cores():
    assert derive.default_max_workers("cpu", 2) == 2  # one prefill + one decode on a 2-core machine
    assert derive.default_max_workers("cpu", 16) == 7
    assert derive.default_max_workers("cuda", 64) == 2
    assert derive.threads_per_worker("cpu", 2, 2) == 1
    assert derive.threads_per_worker("cpu", 7, 16) == 2


def test_derive_pilot_model_only():
    w = workload_from_flags(rate=1.0, **SHORT)
    p = derive.derive_pilot("tiny", "cpu", w, cores=2)
    assert p.mode == "disaggregated" and p.threads_per_worker == 1 and p.load_frac == 0.6
    assert p.dtype == "fp32" and any("2 workers fit" in x for x in p.why)
    c = derive.derive_pilot("tiny", "cpu", w, mode="colocated", cores=2)
    assert c.mode == "colocated" and c.workers == 2 and c.n_workers == 2
    with pytest.raises(BadInput):
        derive.derive_pilot("tiny", "cpu", w, load_frac=0.0, cores=2)
    with pytest.raises(BadInput):
        derive.derive_pilot("tiny", "cpu", w, mode="sideways", cores=2)


def test_plan_json_gives_ratio_load_and_workload():
    from planner.api import plan

    doc = json.loads(json.dumps(plan("llama-3.1-8b", rate=40.0, input_len="lognormal:mean=1500,sigma=0.6", output_len="300",
                                     gpus="h100-sxm", pareto=False).to_dict(), default=str))
    s = derive.plan_summary(doc, "plan.json")
    dis = doc["disaggregated"]
    n_p = sum(p["replicas"] for p in dis["prefill"])
    n_d = sum(p["replicas"] for p in dis["decode"])
    assert s["disaggregated"]["replicas"] == {"prefill": n_p, "decode": n_d}
    cap_d = sum(p["replicas"] * p["capacity_rps_per_replica"] for p in dis["decode"])
    assert s["disaggregated"]["load"]["decode"] == pytest.approx(40.0 / cap_d)
    w = s["workload"]
    assert w.rate_rps == pytest.approx(40.0) and w.input.mean == pytest.approx(doc["workload"]["input"]["mean"])
    p = derive.derive_pilot("llama-3.1-8b", "cpu", w, s, max_workers=6, mode="disaggregated", cores=16)
    assert (p.prefill_workers, p.decode_workers) == derive.split_for_ratio(n_p / (n_p + n_d), 6)
    assert p.load_frac == pytest.approx(max(x for x in s["disaggregated"]["load"].values()))
    with pytest.raises(BadInput):
        derive.plan_summary({"nope": 1}, "x.json")


# ---- prediction ------------------------------------------------------------------------------------
def _pilot(mode="disaggregated", rate=1.0, **kw):
    base = derive.Pilot("tiny", "cpu", mode, prefill_workers=1, decode_workers=1, workers=2 if mode == "colocated" else 0,
                   rate_rps=rate)
    return replace(base, **kw)


def test_lifetime_variance_factor_known_values():
    f = arrivals.lifetime_var_factor(np.array([1e-6, 1.0, 100.0]), 1.0)
    assert f[0] == pytest.approx(1.0, abs=1e-3)
    assert f[1] == pytest.approx(2 * math.exp(-1), rel=1e-6)  # 2 (x - 1 + e^-x) / x^2 at x = 1
    assert f[2] == pytest.approx(2 * (99 + math.exp(-100)) / 1e4)


def test_prediction_at_light_load_is_service_time(rep):
    d = _demand()
    p = pilot_predict.predict(_pilot(rate=1e-3), rep, d, transport_bytes_s=1e9)
    pm = role_model("prefill", rep, d, pilot_predict.pilot_engine(_pilot()))
    assert p.feasible
    assert p.ttft_ms.p50 == pytest.approx(float(np.median(pm.s1)) * 1e3, rel=0.02)  # no queue: own prefill
    dm = role_model("decode", rep, d, pilot_predict.pilot_engine(_pilot()))
    assert p.tpot_ms.p50 == pytest.approx(dm.t(1) * 1e3, rel=0.05)  # alone in the batch
    # KV: one layer on the wire (+0.1 ms); an idle decode worker adds no step residual
    layer_ms = d.mean_prompt * rep.kv_bytes_per_token / 6 / 1e9 * 1e3
    assert p.kv_transfer_ms_mean == pytest.approx(layer_ms + 0.1, rel=0.05)
    assert p.utilization["prefill"] < 0.01 and p.utilization["decode"] < 0.01


def test_prediction_grows_with_load_and_fails_past_capacity(rep):
    d = _demand()
    cap, limit = pilot_predict.pilot_capacity(_pilot(), rep, d)
    assert cap > 0 and limit.split()[0] in ("prefill", "decode")
    lo, hi = (pilot_predict.predict(_pilot(rate=f * cap), rep, d, 1e9) for f in (0.3, 0.9))
    assert hi.ttft_ms.p90 > lo.ttft_ms.p90 and hi.tpot_ms.p50 > lo.tpot_ms.p50
    assert hi.batch_mean["decode"] > lo.batch_mean["decode"] > 0
    assert hi.kv_transfer_ms_mean > lo.kv_transfer_ms_mean  # the decode worker is busier
    over = pilot_predict.predict(_pilot(rate=3 * cap), rep, d, 1e9)
    assert not over.feasible and over.tpot_ms is None


def test_colocated_prediction_and_capacity(rep):
    d = _demand()
    cap, _ = pilot_predict.pilot_capacity(_pilot("colocated"), rep, d)
    p = pilot_predict.predict(_pilot("colocated", rate=0.5 * cap), rep, d)
    assert p.feasible and p.ttft_ms.p50 > 0 and p.tpot_ms.p50 > 0
    assert p.kv_transfer_ms_mean is None and 0 < p.utilization["colocated"] <= 1


def test_balance_split_follows_capacities(rep):
    # Long outputs load decode: more decode workers; long prompts and short outputs: more prefill.
    p = _pilot()
    assert pilot_predict.balance_split(p, rep, _demand("16", "400"), 4) == (1, 3)
    assert pilot_predict.balance_split(p, rep, _demand("1000", "2"), 4) == (3, 1)


def test_profiled_replica_reproduces_the_measured_points(profile_path):
    """--roofline profile: on the profiled device the measurements themselves are the step times."""
    r, _ = device.local_replica(resolve_model("tiny"), profile_path, "profile")
    assert r.decode_step_s(4, 32) == pytest.approx(0.008 + 0.0015 * 4)  # a grid point
    assert r.decode_step_s(6, 48) == pytest.approx(0.008 + 0.0015 * 6)  # bilinear inside the grid
    assert r.decode_step_s(64, 64) > r.decode_step_s(32, 64)  # off the grid: the roofline's slope
    assert r.prefill_times_s(np.array([32.0, 48.0])) == pytest.approx([0.004 + 3e-4 * 32, 0.004 + 3e-4 * 48])
    # a batch of k padded rows: t1(longest) x t(k)/t(1) of the batched points
    ratio = (0.004 + 3e-4 * 128) / (0.004 + 3e-4 * 64)
    assert r.prefill_time_s(np.array([20.0, 64.0])) == pytest.approx((0.004 + 3e-4 * 64) * ratio)


def test_profiled_replica_ignores_a_noisy_point(tmp_path):
    """One decode point measured while something else ran (wide p10-p90) must not bend its row:
    each batch's line in context is weighted by the points' repeatability."""
    spec = resolve_model("tiny")
    samples = [{"phase": "prefill", "batch": 1, "prompt_len": l, "context_len": 0, "seconds": 0.01 + 1e-4 * l,
                "p10_s": 0.01 + 1e-4 * l, "p90_s": 0.0101 + 1e-4 * l} for l in (32, 64, 128)]
    for b in (1, 2, 4, 8):
        for c in (100, 200, 300):
            t = 0.010 + 0.002 * b + 1e-5 * b * c
            noisy = (b, c) == (4, 200)
            samples.append({"phase": "decode", "batch": b, "prompt_len": 0, "context_len": c, "seconds": t * (1.6 if noisy else 1.0),
                            "p10_s": t * 0.99, "p90_s": t * (2.0 if noisy else 1.01)})
    meta = {"kind": "local", "device": {"name": "test cpu", "type": "cpu", "memory_gb": 16.0, "torch_threads": 1},
            "model": spec.to_dict(), "dtype": "fp32", "tp": 1, "ceilings": {"matmul_tflops": 0.1, "mem_bw_gbps": 20.0, "link_gbps": None}}
    r, _ = device.local_replica(spec, save_profile(tmp_path / "noisy.json", meta, samples), "profile")
    assert r.decode_step_s(4, 200) == pytest.approx(0.010 + 0.008 + 4e-5 * 200, rel=0.02)  # the line, not the outlier
    assert r.decode_step_s(1, 150) == pytest.approx(0.012 + 1e-5 * 150, rel=1e-6)  # between contexts: on the line
    assert r.decode_step_s(3, 100) == pytest.approx((r.decode_step_s(2, 100) + r.decode_step_s(4, 100)) / 2, rel=0.02)


def test_contention_scales_times_by_the_neighbours_busy_share(rep):
    from planner.pilot.probe import Contention

    s = Adjusted(rep, 0.2, 0.1)
    assert s.prefill_time_s(np.array([64.0])) == pytest.approx(1.2 * rep.prefill_time_s(np.array([64.0])))
    assert s.decode_step_s(4, 100) == pytest.approx(1.1 * rep.decode_step_s(4, 100))
    assert s.kv_bytes_per_token == rep.kv_bytes_per_token and s.model is rep.model  # the rest falls through
    d = _demand()
    p = replace(derive.Pilot("tiny", "cpu", "disaggregated"), rate_rps=2.0)
    same, slow = pilot_predict.pilot_replica(p, rep, d, None, 2.0)
    assert same is rep and slow == {"prefill": 0.0, "decode": 0.0}
    k = Contention(prefill=0.3, decode=0.2)
    r2, slow = pilot_predict.pilot_replica(p, rep, d, k, 2.0)
    u = pilot_predict.predict(p, r2, d).utilization
    # each role slowed by kappa x the other's predicted busy share (the fixed point)
    assert slow["prefill"] == pytest.approx(0.3 * u["decode"], rel=0.05) and 0 < slow["prefill"] < 0.3
    assert slow["decode"] == pytest.approx(0.2 * u["prefill"], rel=0.05) and 0 < slow["decode"] < 0.2
    assert pilot_predict.predict(p, r2, d).ttft_ms.p50 > pilot_predict.predict(p, rep, d).ttft_ms.p50

    assert pilot_predict.contended_capacity(p, rep, d, k)[0] < pilot_predict.pilot_capacity(p, rep, d)[0]
    one = replace(derive.Pilot("tiny", "cpu", "colocated", workers=1), rate_rps=2.0)
    slow1 = pilot_predict.pilot_replica(one, rep, d, Contention(colocated=0.5), 2.0)[1]
    assert (slow1["prefill"], slow1["decode"], slow1["in_situ_prefill"]) == (0.0, 0.0, 1.0)
    two = replace(one, workers=2)
    assert pilot_predict.pilot_replica(two, rep, d, Contention(colocated=0.5), 2.0)[1]["decode"] > 0


def test_the_probes_lone_prompts_scale_prefill_and_widen_ttft(rep):
    """A lone prompt through the pilot's API took 1.25x the profile's prefill: prefill times x1.25
    (before contention), decode steps untouched; the lone TTFTs' spread widens the predicted TTFT
    tail, not its mean; implausible factors are clipped."""
    from planner.pilot.probe import Contention
    from planner.queueing.samples import jittered

    d = _demand()
    p = replace(derive.Pilot("tiny", "cpu", "disaggregated"), rate_rps=1.0)
    t130 = float(rep.prefill_time_s(np.array([130.0])))
    k = Contention(alone_ttft_s=1.25 * t130, prompt_tokens=130)
    assert pilot_predict.in_situ_prefill(rep, k) == pytest.approx(1.25)
    r2, slow = pilot_predict.pilot_replica(p, rep, d, k, 1.0)
    assert slow["in_situ_prefill"] == pytest.approx(1.25) and slow["prefill"] == pytest.approx(0.25)
    assert r2.prefill_time_s(np.array([64.0])) == pytest.approx(1.25 * rep.prefill_time_s(np.array([64.0])))
    assert r2.decode_step_s(4, 100) == pytest.approx(rep.decode_step_s(4, 100))
    assert pilot_predict.in_situ_prefill(rep, Contention(alone_ttft_s=10 * t130, prompt_tokens=130)) == 2.0
    assert pilot_predict.in_situ_prefill(rep, Contention()) == 1.0  # no lone prompt timed
    # the factor pooled over recent probes, where validate set one, not this probe's own
    assert pilot_predict.in_situ_prefill(rep, replace(k, prefill_factor=1.1)) == pytest.approx(1.1)
    base = pilot_predict.predict(p, Adjusted(rep, 0.25, 0.0), d).ttft_ms
    wide = pilot_predict.predict(p, pilot_predict.pilot_replica(p, rep, d, replace(k, ttft_cv=0.2), 1.0)[0], d).ttft_ms
    assert wide.p90 > 1.05 * base.p90 and wide.p50 == pytest.approx(base.p50, rel=0.08)
    x = np.full(20000, 0.1)
    assert jittered(x, 0.0) is x and np.std(jittered(x, 0.2)) == pytest.approx(0.02, rel=0.05)
    assert np.mean(jittered(x, 0.2)) == pytest.approx(0.1, rel=0.01) and (jittered(x, 0.9) >= 0.02 - 1e-12).all()


def test_probe_streams_sit_at_the_predicted_decode_batch(rep):
    """The split's probe runs as many background streams as the pilot's predicted decode batch
    per decode worker (at least 2): a decode worker's pressure on the cores grows with it."""
    d = _demand()
    p = replace(derive.Pilot("tiny", "cpu", "disaggregated"), rate_rps=2.0)
    b = pilot_predict.predict(p, rep, d).batch_mean["decode"]
    assert pilot_predict.probe_streams(p, rep, d) == max(2, min(p.max_seqs, round(b)))
    two = replace(p, decode_workers=2)
    assert pilot_predict.probe_streams(two, rep, d) == 2 * max(2, min(p.max_seqs, round(pilot_predict.predict(two, rep, d).batch_mean["decode"])))
    busy = replace(p, rate_rps=8.0)
    assert pilot_predict.probe_streams(busy, rep, d) > pilot_predict.probe_streams(p, rep, d)
    assert pilot_predict.probe_streams(replace(p, rate_rps=0.01), rep, d) == 2


def test_padded_attention_reads_the_longest_context(rep):
    """The runtime's decode attention reads every row up to the batch's longest context: the
    pad is 0 for one sequence, grows with the batch, and never passes the longest possible."""
    d = _demand("uniform:64-192", "uniform:32-96")
    pad = longest_context_pad(d, 32)
    assert pad(1) == pytest.approx(0.0, abs=2.0)
    assert 0 < pad(2) < pad(8) < pad(32) < (192 + 96) - d.mean_context
    # two sequences: E[max] - E[one] = E|X - Y| / 2 for i.i.d. contexts
    rng = np.random.default_rng(0)
    w = np.maximum(d.output - 1, 1) / np.maximum(d.output - 1, 1).sum()
    i, j = rng.choice(len(w), 20000, p=w), rng.choice(len(w), 20000, p=w)
    x, y = d.prompt[i] + rng.random(20000) * d.output[i], d.prompt[j] + rng.random(20000) * d.output[j]
    assert pad(2) == pytest.approx(np.abs(x - y).mean() / 2, rel=0.05)
    assert pad(np.array([1.0, 4.0]))[1] == pytest.approx(pad(4))
    assert Adjusted(rep, pad=pad).decode_step_s(8, 100.0) == pytest.approx(rep.decode_step_s(8, 100.0 + pad(8)))


def test_decode_arrivals_smoother_than_poisson_known_values():
    """QNA rules: an idle prefill worker passes Poisson on; a saturated one with constant
    service spaces decodes evenly; a least-loaded split over n workers divides the SCV by n."""
    assert arrivals.decode_arrival_scv("disaggregated", 0.0, 0.3, 1, 1, 1) == pytest.approx(1.0)
    assert arrivals.decode_arrival_scv("disaggregated", 1.0, 0.0, 1, 1, 1) == pytest.approx(0.0)
    assert arrivals.decode_arrival_scv("disaggregated", 0.5, 0.2, 1, 1, 1) == pytest.approx(0.25 * 0.2 + 0.75)
    assert arrivals.decode_arrival_scv("disaggregated", 0.0, 0.3, 1, 2, 1) == pytest.approx(0.5)
    assert arrivals.decode_arrival_scv("disaggregated", 1.0, 0.0, 4, 1, 1) == pytest.approx(0.75)  # merged: toward Poisson
    assert arrivals.decode_arrival_scv("colocated", 0.0, 0.3, 1, 1, 2) == pytest.approx(0.5)
    # GI/G/inf: Poisson arrivals see b others; evenly spaced ones, with constant lives, one fewer
    life = np.full(1000, 0.3)
    assert arrivals.smooth_arrivals(1.0, life) == pytest.approx(0.0)
    assert arrivals.smooth_arrivals(0.0, life) == pytest.approx(-1.0)
    assert -1.0 < arrivals.smooth_arrivals(0.0, np.random.default_rng(0).exponential(0.3, 5000)) < -0.4  # beta = 1/2
    # alone all its life: Poisson -> e^-m e^-lam L; a binomial start (z < 1) is alone more often
    assert arrivals.alone_share(0.5, 1.0, 2.0, np.array([0.2]), 1.0)[0] == pytest.approx(math.exp(-0.5 - 0.4))
    assert arrivals.alone_share(0.5, 0.6, 2.0, np.array([0.2]), 0.5)[0] > arrivals.alone_share(0.5, 1.0, 2.0, np.array([0.2]), 1.0)[0]
    o = arrivals.others_over_life(0.4, np.full(20000, 0.8), np.full(20000, 0.5), 20000)
    assert (o == 0).mean() == pytest.approx(0.5, abs=0.02) and o.mean() == pytest.approx(0.4, rel=0.05)


def test_window_dispersion_tells_batches_from_spaced_departures():
    """Variance / mean of counts per window: Poisson 1, Poisson batches of 3 at once 3, evenly
    spaced events 0; too short a record says 1 (nothing known)."""
    rng = np.random.default_rng(0)
    poisson = np.cumsum(rng.exponential(0.1, 40000))
    assert arrivals.window_dispersion(poisson, 0.5) == pytest.approx(1.0, abs=0.05)
    assert arrivals.window_dispersion(np.repeat(poisson, 3), 0.5) == pytest.approx(3.0, abs=0.15)
    assert arrivals.window_dispersion(np.arange(0.0, 4000.0, 0.1), 0.5) < 0.05
    assert arrivals.window_dispersion(poisson[:10], 0.5) == 1.0


def test_greedy_departures_carry_their_batch_mates():
    """A prompt batch ends all at once: at a load where the worker batches, its departures are
    burstier than the QNA rule for single departures from a busy server says (rho^2 c_s^2 +
    1 - rho^2, smoother than Poisson), and the pools' decode arrivals take the simulated ones."""
    d = _demand("100", "10")
    g = greedy.greedy_prefill(_BatchCost(0.1), d, 8.0, 2048)
    assert g.batch_mean > 1.2 and len(g.departures_s) == greedy.COPIES * len(g.wait_s)  # every simulated prompt after the warm-up
    assert np.all(np.diff(g.departures_s) >= 0)
    qna = 1 - g.busy ** 2  # the QNA rule with constant service (c_s^2 = 0)
    dep = arrivals.window_dispersion(g.departures_s, 0.5)
    assert dep > qna + 0.3
    assert arrivals.decode_arrival_scv("disaggregated", g.busy, 0.0, 1, 1, 1, dep) == pytest.approx(dep)


def test_colocated_decode_starts_come_in_prefill_batches():
    """A colocated worker of the runtime prefills what is queued as one batch, so at load its
    decodes start in bunches: its prefills simulated (fed as the router's round robin over the
    workers spaces them) put the decode arrivals' SCV well above the QNA rule for single
    prefills from a busy worker (rho^2 c_s^2 + (1 - rho^2) / workers), which has no batch-mates;
    at light load what is left is the router's spacing, about 1 / workers."""
    d, eng = _demand("100", "10"), engine_named("planner")
    light = pools._greedy_colocated_scv(_BatchCost(0.1), d, eng, 2, 0.5, 4.0, -1.0)
    assert 0.45 < light < 0.65
    busy = 0.8  # 8 req/s of 0.1 s prefills
    qna = arrivals.decode_arrival_scv("colocated", busy, 0.0, 1, 1, 1)
    got = pools._greedy_colocated_scv(_BatchCost(0.1), d, eng, 1, 8.0, 0.5, -1.0)
    assert qna == pytest.approx(1 - busy ** 2) and got > qna + 0.4
    assert pools._greedy_colocated_scv(_BatchCost(0.1), d, eng, 1, 10.5, 0.5, -1.0) == -1.0  # overloaded: the fallback


def test_the_mean_step_averages_the_curve_over_the_batch_a_request_meets():
    """Little's law with E[t(1 + N)], N ~ Poisson(m): a line in the batch gives t(1 + m); a
    curve that jumps (a CPU's batch 4 much slower than its 3) gives the jump's share, not the
    side of it the mean lands on."""
    line = lambda n: 0.01 + 0.002 * np.asarray(n, dtype=float)  # noqa: E731
    assert arrivals.mean_step(line, 2.5) == pytest.approx(float(line(3.5)))
    assert arrivals.mean_step(line, 0.0) == pytest.approx(float(line(1.0)))
    jump = lambda n: np.where(np.asarray(n) <= 3, 0.015, 0.025)  # noqa: E731
    p_le2 = math.exp(-2.0) * (1 + 2.0 + 2.0)  # P(N <= 2), N ~ Poisson(2)
    assert arrivals.mean_step(jump, 2.0) == pytest.approx(0.015 * p_le2 + 0.025 * (1 - p_le2))
    # the fixed point is the same average: b = lam E[steps] E[t(1 + N)] at N's mean b
    b = arrivals.occupancy(1.0, 50.0, jump)
    assert 0.75 < b < 1.25 and b == pytest.approx(50.0 * arrivals.mean_step(jump, b), rel=1e-3)


class _BatchCost:
    """A replica whose prefill batch of k prompts costs per_prompt x k + fixed seconds, any length."""

    def __init__(self, per_prompt, fixed=0.0):
        self.per_prompt, self.fixed = per_prompt, fixed

    def prefill_time_s(self, lengths):
        return self.fixed + self.per_prompt * len(np.atleast_1d(lengths))

    def prefill_times_s(self, lengths):
        return np.full(len(np.atleast_1d(lengths)), self.fixed + self.per_prompt)


def test_greedy_prefill_batches_whatever_is_queued():
    """The runtime's rule: batching that does not pay (a CPU: k prompts cost k times one) leaves
    the capacity at one prompt per service time; batching that is free multiplies it (up to the
    16 prompts a batch holds); at light load a prompt runs alone."""
    d = _demand("100", "10")
    assert greedy.greedy_prefill_capacity(_BatchCost(0.1), d, 2048) == pytest.approx(10.0, rel=0.02)
    assert greedy.greedy_prefill_capacity(_BatchCost(0.0, 0.1), d, 2048) > 50.0
    light = greedy.greedy_prefill(_BatchCost(0.1), d, 0.05, 2048)
    assert light.busy == pytest.approx(0.005, rel=0.1) and np.median(light.ttft_s) == pytest.approx(0.1)
    busy = greedy.greedy_prefill(_BatchCost(0.1), d, 8.0, 2048)
    assert busy.busy == pytest.approx(0.8, rel=0.02) and busy.batch_mean > 1.0
    # a prompt that finds a batch running waits for it, then runs with what queued meanwhile
    assert np.percentile(busy.ttft_s, 90) > 2 * 0.1 and (busy.wait_s > 0).mean() == pytest.approx(0.8, abs=0.03)
    assert greedy.greedy_prefill(_BatchCost(0.1), d, 10.5, 2048) is None


def test_greedy_prefill_keeps_what_the_budget_leaves_queued():
    """A budget of one prompt a batch makes the runtime's worker an M/D/1 queue, whose mean wait
    is rho S / (2 (1 - rho)): 0.2 s at rho = 0.8, S = 0.1 s. What the budget leaves queued waits
    for later batches (a model that runs all of it in the next batch caps the wait at one
    batch, 0.05 s on average here); the saturated rate is one prompt per 0.1 s."""
    d = _demand("100", "10")
    assert greedy.greedy_prefill_capacity(_BatchCost(0.1), d, 100) == pytest.approx(10.0, rel=0.01)
    g = greedy.greedy_prefill(_BatchCost(0.1), d, 8.0, 100)
    assert g.batch_mean == 1.0 and g.busy == pytest.approx(0.8, rel=0.05)
    assert g.wait_s.mean() == pytest.approx(0.2, rel=0.15)
    assert (g.ttft_s - g.wait_s) == pytest.approx(0.1)  # each prompt's own batch: itself alone


def test_the_stack_factor_is_pooled_over_the_recent_probes_of_a_profile(tmp_path):
    """Each probe's factor is kept beside the profile; a pilot predicts with the median of the
    last PROBE_HISTORY; an unreadable history starts again; an unwritable one leaves the probe's own."""
    prof = tmp_path / "validate-x.json"
    prof.write_text("{}")
    said = []
    got = [device.pooled_prefill_factor(prof, f, {"mode": "colocated"}, said.append) for f in (1.3, 1.1, 1.2)]
    assert got == [(1.3, 1), (pytest.approx(1.2), 2), (pytest.approx(1.2), 3)]
    hist = json.loads(device.probe_history_path(prof).read_text())["probes"]
    assert [x["factor"] for x in hist] == [1.3, 1.1, 1.2] and hist[0]["mode"] == "colocated"
    for i in range(device.PROBE_HISTORY):  # the oldest fall out of the window
        last = device.pooled_prefill_factor(prof, 2.0, {}, said.append)
    assert last == (2.0, device.PROBE_HISTORY)
    device.probe_history_path(prof).write_text("not json")
    assert device.pooled_prefill_factor(prof, 1.05, {}, said.append) == (1.05, 1) and "unreadable" in said[-1]
    device.probe_history_path(prof).unlink()
    device.probe_history_path(prof).mkdir()  # not a regular file: never written over
    assert device.pooled_prefill_factor(prof, 1.4, {}, said.append) == (1.4, 1) and "alone" in said[-1]


def test_unknown_step_time_model_is_refused_before_profiling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a profile measured by mistake would land in ./profiles
    with pytest.raises(BadInput, match="--roofline 'bogus'"):
        v.validate("tiny", "cpu", roofline="bogus", say=lambda m: None)
    assert not (tmp_path / "profiles").exists()


def test_predicted_throughput_over_the_makespan():
    sched = [rp.ReplayRequest(i, float(i), 10, 20) for i in range(11)]  # arrivals 0..10 s
    assert pilot_predict.predicted_throughput(sched, 1.0, 5.0) == pytest.approx((11 / 11.0, 220 / 11.0))
    assert pilot_predict.predicted_throughput(sched, None, 5.0) == pytest.approx((5.0, 100.0))  # overloaded: capacity


def test_replayed_rate_is_what_the_schedule_sends():
    sched = [rp.ReplayRequest(i, 0.5 * i, 10, 20) for i in range(11)]  # 10 gaps of 0.5 s
    assert pilot_predict.replayed_rate(sched, 3.0) == pytest.approx(2.0)
    assert pilot_predict.replayed_rate(sched[:1], 3.0) == 3.0  # one arrival: no rate to read
    # a Poisson draw misses its nominal rate by sampling alone; seeded, the miss is repeatable
    w = workload_from_flags(rate=1.0, **SHORT)
    drawn = rp.poisson_schedule(w, 4.0, n=60, seed=0)
    assert pilot_predict.replayed_rate(drawn, 4.0) != pytest.approx(4.0, rel=0.01)


def test_rel_error():
    assert compare.rel_error(110.0, 100.0) == pytest.approx(0.1)
    assert compare.rel_error(90.0, 100.0) == pytest.approx(-0.1)
    assert compare.rel_error(None, 1.0) is None and compare.rel_error(1.0, 0.0) is None and compare.rel_error(1.0, None) is None


def test_profile_grid_and_cache_path():
    g = device.profile_grid(_demand(), 32)
    assert g["batches"][-1] == 32 and g["prefill_batch_len"] == pytest.approx(128, abs=3)
    # the batches where a CPU's decode step is not the line between the powers of two
    assert g["batches"] == [1, 2, 3, 4, 6, 8, 12, 14, 16, 24, 32] and device.profile_grid(_demand(), 20)["batches"][-2:] == [16, 20]
    assert 64 <= g["prompt_lens"][0] <= g["prompt_lens"][-1] <= 192
    a = device.cached_profile_path("tiny", "cpu", 1, "fp32", g)
    assert a.parent.name == "profiles" and "1t" in a.name
    assert a != device.cached_profile_path("tiny", "cpu", 2, "fp32", g)


def test_measure_transport_is_positive():
    assert device.measure_transport(256 * 1024, n=10) > 1e7  # loopback moves > 10 MB/s


# ---- the JSON contract ------------------------------------------------------------------------------
def _fake_run(failed=0):
    st = rp.ReplayState()
    for i in range(6):
        st.records[i] = rp.RequestRecord(i, 0.1 * i, 20, 11, sent_s=0.1 * i, ttft_s=0.05, e2e_s=0.55, output_tokens=11, done=True)
    for i in range(6, 6 + failed):
        st.records[i] = rp.RequestRecord(i, 0.1 * i, 20, 11, sent_s=0.1 * i, error="error event after 3 tokens: boom", done=True)
    meas = pilot_run.Measurement(st, rp.summarize(st), {"server_kv_mean_s": 0.004, "server_kv_count": 6, "kv_bytes_total": 6e6},
                         {"prefill": 0.2, "decode": 0.5}, {}, cpu={"foreign_cores": 0.0, "cores": 2})
    pred = PoolPrediction("disaggregated", True, "", Pcts(50.0, 60.0, 70.0), Pcts(50.0, 55.0, 60.0), 5.0, 1e6,
                        {"prefill": 0.25, "decode": 0.5}, {"prefill": 1.0, "decode": 2.0}, 1.0, 40.0, 0.55,
                        np.full(10, 50.0), np.full(10, 50.0))
    return compare.RunResult(_pilot(rate=10.0), pred, meas, (10.0, 110.0), workload_from_flags(rate=1.0).slo, 6 + failed)


def test_decode_steps_between_health_snapshots():
    before = {"workers": [{"name": "d0", "decode_steps": {"1": [4, 0.04, 400]}}, {"name": "p0"}]}
    after = {"workers": [{"name": "d0", "decode_steps": {"1": [10, 0.10, 1000], "3": [5, 0.1, 600]}},
                         {"name": "d1", "decode_steps": {"3": [2, 0.05, 200]}},  # started (or restarted) since
                         {"name": "p0"}]}
    got = pilot_run.decode_steps_between(before, after)
    assert list(got) == [1, 3] and got[1][0] == 6 and got[1][1] == pytest.approx(0.06) and got[1][2] == 600
    assert got[3] == [7, pytest.approx(0.15), 800]
    restarted = {"workers": [{"name": "d0", "decode_steps": {"1": [2, 0.02, 100]}}]}  # counts from its restart
    assert pilot_run.decode_steps_between(before, restarted) == {1: [2, 0.02, 100]}


def test_decode_step_stage_times_the_steps_run_without_the_expected_pad():
    from planner.specs.catalog import load_catalog
    from planner.steptime.roofline import Replica

    base = Replica(resolve_model("tiny"), load_catalog().gpus["h100-sxm"], 1, "bf16", "bf16")
    run = _fake_run()
    run.replica = Adjusted(Adjusted(base, pad=lambda b: 1000.0 * np.ones_like(np.asarray(b, float))), 0.1, 0.25)
    run.measurement.decode_steps = {2: [10, 0.5, 10 * 101], 8: [30, 3.0, 30 * 301]}
    st = run.stages()["decode_step_ms_mean"]
    want = (10 * base.decode_step_s(2.0, 100.0) + 30 * base.decode_step_s(8.0, 300.0)) / 40 * 1.25 * 1e3
    assert st["predicted"] == pytest.approx(want, rel=1e-3) and st["measured"] == pytest.approx(87.5)
    run.measurement.decode_steps = {}
    assert "decode_step_ms_mean" not in run.stages()  # no step records (an endpoint): no row


def test_json_contract_fields_and_errors():
    d = _fake_run().to_dict()
    assert set(compare.METRICS) <= set(d["metrics"])
    for k in compare.METRICS:
        assert set(d["metrics"][k]) == {"predicted", "measured", "rel_error"}
    assert d["metrics"]["ttft_ms_p50"]["measured"] == pytest.approx(50.0)
    assert d["metrics"]["ttft_ms_p50"]["rel_error"] == pytest.approx(0.0)
    assert d["metrics"]["tpot_ms_p50"]["measured"] == pytest.approx(50.0)  # (550 - 50) ms / 10 tokens
    assert d["metrics"]["kv_transfer_ms_mean"]["rel_error"] == pytest.approx(0.25)  # 5 ms vs 4 ms
    assert d["requests"] == {"sent": 6, "completed": 6, "failed": 0, "lost": 0}
    assert d["valid"] is True and d["pilot"]["label"] == "1 prefill + 1 decode"
    assert len(d["samples"]["ttft_ms"]) == 6 and len(d["samples"]["tpot_ms"]) == 6
    assert d["stages"]["utilization_decode"]["measured"] == pytest.approx(0.5)
    json.dumps(d)  # plain JSON


def test_failures_make_the_result_invalid():
    r = _fake_run(failed=2)
    d = r.to_dict()
    assert d["requests"] == {"sent": 8, "completed": 6, "failed": 2, "lost": 0}
    assert d["valid"] is False and any("2 of 8 requests failed" in x for x in d["invalid_reasons"])
    assert d["measured"]["errors"][0]["count"] == 2


def test_starved_pilot_makes_the_result_invalid():
    r = _fake_run()
    r.measurement.cpu.update(foreign_cores=1.2, run_queue_wait_share={"decode-0": 0.4, "prefill-0": 0.05})
    assert not r.valid and any("decode-0 waited 40%" in x for x in r.invalid_reasons())
    r.measurement.cpu["run_queue_wait_share"] = {"decode-0": 0.02}
    assert r.valid  # others were busy, but the pilot got its CPU


def test_cpu_watch_sees_a_busy_child():
    import subprocess as sp

    child = sp.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<0.6: pass"])
    w = pilot_run.CpuWatch({"child": child.pid})
    w.start()
    child.wait()
    time.sleep(0.05)
    out = w.stop()
    # a dead child cannot be read at the end: it is simply absent, not a crash
    assert set(out) >= {"wall_s", "process_cores", "run_queue_wait_share"}
    me = pilot_run.CpuWatch({"me": os.getpid()})
    me.start()
    t = time.time()
    while time.time() - t < 0.3:
        pass
    got = me.stop()
    assert 0.2 < got["process_cores"]["me"] + got["run_queue_wait_share"]["me"] < 1.3


def test_markdown_report_has_the_table():
    from planner.cli.validate import render_markdown

    run = _fake_run().to_dict()
    md = render_markdown({**run, "workload": workload_from_flags(rate=1.0).to_dict(), "notes": ["n1"]})
    assert "| TTFT p50 | ms | 50 | 50 | +0% | - | - |" in md and "Requests: sent 6, completed 6, failed 0, lost 0" in md


# ---- end to end on the runtime (tiny, this CPU) ------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False



@pytest.mark.e2e
def test_end_to_end_tiny_pilot(profile_path, tmp_path):
    """The runtime must exist: this fails (never skips) if planner serve cannot start."""
    w = workload_from_flags(rate=1.0, **SHORT)
    res = v.validate("tiny", "cpu", w, profile=profile_path, pilot_rate=3.0, duration_s=5.0, progress=False, say=lambda m: None)
    d = res.to_dict()
    assert d["requests"]["lost"] == 0 and d["requests"]["failed"] == 0
    assert d["requests"]["completed"] == d["requests"]["sent"] >= 5
    for k in compare.METRICS:
        assert d["metrics"][k]["measured"] is not None and d["metrics"][k]["predicted"] is not None, k
    # exact lengths: each request got its drawn output length
    for r in d["requests_detail"]:
        assert r["output_tokens"] == r["max_tokens"]
    assert d["stages"]["kv_bytes_per_request"]["measured"] is not None
    assert d["metrics"]["ttft_ms_p50"]["simulated"] > 0  # the plan's simulator on the same schedule
    # the decode worker's own step records: every output token after the first is one step of a
    # batch (the replay's steps only, not the warm-up's)
    steps = d["measured"]["decode_steps"]
    out_tokens = sum(r["output_tokens"] - 1 for r in d["requests_detail"])
    assert sum(int(b) * v[0] for b, v in steps.items()) == out_tokens
    assert d["stages"]["decode_step_ms_mean"]["measured"] > 0 and d["stages"]["decode_step_ms_mean"]["predicted"] > 0
    # the contention probe ran first and the prediction used it
    c = d["calibration"]["contention"]
    assert c["prefill"] >= 0 and c["decode"] >= 0 and c["ttft_alone_ms"] > 0 and c["gap_quiet_ms"] > 0
    # alternating rounds, each a pair of adjacent windows; the kappas are their medians
    assert len(c["rounds"]) == 4 and all(r["gap_quiet_ms"] > 0 and 0 < r["prefill_share"] <= 1 for r in c["rounds"])
    assert c["alone_ttft_ms"] > 0 and 0 < c["ttft_cv"] < 1 and c["prompt_tokens"] > 0
    assert c["streams"] >= 2
    # the stack's factor: this probe's recorded beside the profile, the pooled one predicted with
    hist = json.loads(device.probe_history_path(profile_path).read_text())["probes"]
    assert hist[-1]["factor"] == pytest.approx(c["prefill_factor_own"], abs=1e-3) and c["prefill_factor_probes"] == len(hist)
    assert c["prefill_factor"] == pytest.approx(float(np.median([x["factor"] for x in hist])), abs=1e-3)
    assert d["prediction"]["slowdowns"]["in_situ_prefill"] == pytest.approx(min(2.0, max(0.5, c["prefill_factor"])), abs=1e-3)
    kd = sorted((r["gap_beside_prefill_ms"] / r["gap_quiet_ms"] - 1) / max(r["prefill_share"], 0.1) for r in c["rounds"])
    assert c["decode"] == pytest.approx(max(0.0, (kd[1] + kd[2]) / 2), abs=2e-3)
    assert d["prediction"]["contention"] == c and any("share this machine's cores" in n for n in d["prediction"]["notes"])
    # predicted at the rate the schedule sent, not the 3.0 req/s it was drawn at
    sent = pilot_predict.replayed_rate(res.run.schedule, 3.0)
    assert sent != pytest.approx(3.0, rel=1e-3)
    assert any(f"the schedule sends, {sent:.3g} req/s" in n for n in d["prediction"]["notes"])
    assert d["pilot"]["max_model_len"] >= max(r["prompt_tokens"] + r["max_tokens"] for r in d["requests_detail"])
    pids = [w["pid"] for w in d["pilot"]["workers_detail"].values()]
    assert len(pids) == 2 and not any(_alive(p) for p in pids)  # torn down


@pytest.mark.e2e
def test_contention_probe_of_a_colocated_pilot():
    """The colocated probe: one stream alone, then one per worker; the pilot is torn down."""
    pilot = derive.Pilot("tiny", "cpu", "colocated", workers=2, threads_per_worker=1)
    c = pilot_run.measure_contention(pilot, _demand(SHORT["input_len"], SHORT["output_len"]), 2048, timeout_s=20.0, say=lambda m: None)
    assert c is not None and c.prefill == 0 and c.decode == 0 and c.colocated >= 0
    assert c.detail["gap_one_stream_ms"] > 0 and c.detail["gap_two_streams_ms"] > 0
    k = sorted(r["gap_two_streams_ms"] / r["gap_one_stream_ms"] - 1 for r in c.detail["rounds"])
    assert len(k) == 4 and c.colocated == pytest.approx(max(0.0, (k[1] + k[2]) / 2), abs=2e-3)
    assert c.alone_ttft_s > 0 and c.ttft_cv > 0 and all(r["ttft_alone_ms"] > 0 for r in c.detail["rounds"])
    assert pilot_run.measure_contention(replace(pilot, workers=1), _demand(), 2048, say=lambda m: None) is None


@pytest.mark.e2e
def test_worker_killed_mid_run_is_reported_invalid(profile_path):
    # Outputs long enough that the decode worker always holds requests when it is killed (with the
    # short mix it was idle at the kill about half the time, and nothing failed).
    w = workload_from_flags(rate=1.0, input_len="uniform:16-48", output_len="uniform:64-128")
    killed = {}

    def kill_decode(handle):
        pid = handle.worker_pids()["decode-0"]
        killed["pid"] = pid
        threading.Timer(1.5, os.kill, (pid, signal.SIGKILL)).start()

    res = v.validate("tiny", "cpu", w, profile=profile_path, pilot_rate=4.0, duration_s=5.0, progress=False,
                     on_serving=kill_decode, say=lambda m: None, timeout_s=20.0)
    d = res.to_dict()
    assert d["requests"]["lost"] == 0 and d["requests"]["failed"] > 0
    assert d["requests"]["sent"] == d["requests"]["completed"] + d["requests"]["failed"]
    assert d["valid"] is False and any("failed" in x for x in d["invalid_reasons"])
    assert any("died" in x for x in d["invalid_reasons"])
    assert not any(_alive(w["pid"]) for w in d["pilot"]["workers_detail"].values())


@pytest.mark.e2e
def test_ctrl_c_tears_down_and_saves_partial_report(profile_path, tmp_path):
    out = tmp_path / "partial.json"
    cmd = [sys.executable, "-m", "planner", "validate", "--model", "tiny", "--profile", str(profile_path),
           "--pilot-rate", "3", "--duration", "60", "--input-len", SHORT["input_len"], "--output-len", SHORT["output_len"],
           "--json", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            cwd=tmp_path)
    deadline = time.monotonic() + 120
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "replaying" in line or time.monotonic() > deadline:
            break
    time.sleep(2.0)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(lines) + rest
    d = json.loads(out.read_text())
    assert d["interrupted"] is True and d["valid"] is False
    assert d["requests"]["lost"] == 0 and d["requests"]["sent"] >= 1
    pids = [w["pid"] for w in d["pilot"]["workers_detail"].values()]
    time.sleep(0.5)
    assert pids and not any(_alive(p) for p in pids)


@pytest.mark.e2e
def test_endpoint_pilot_without_profile_measures_only(tmp_path):
    """--endpoint drives an external deployment (here the fake server); with no profile of its
    device there is nothing to predict, and the report says so instead of inventing numbers."""
    from fake_server import FakeServerConfig, start_fake_server
    from planner.cli.validate import write_outputs

    w = workload_from_flags(rate=1.0, **SHORT)
    cfg = FakeServerConfig(prefill_base_s=0.005, decode_base_s=0.004, decode_s_per_seq=0.0, tokenize=None)
    with start_fake_server(cfg) as srv:
        with pytest.raises(BadInput, match="--mode colocated"):  # what serves it is never assumed
            v.validate("tiny", "cpu", w, endpoint=srv.url + "/v1", pilot_rate=10.0, requests=12, progress=False, say=lambda m: None)
        res = v.validate("tiny", "cpu", w, endpoint=srv.url + "/v1", served_model="fake-model", pilot_rate=10.0,
                         requests=12, progress=False, say=lambda m: None, mode="colocated")
    d = res.to_dict()
    assert d["requests"] == {"sent": 12, "completed": 12, "failed": 0, "lost": 0}
    assert d["metrics"]["ttft_ms_p50"]["predicted"] is None and d["metrics"]["ttft_ms_p50"]["measured"] > 4
    assert d["measured"]["server"]["server_ttft_count"] == 12  # vLLM-style histogram deltas
    assert any("no --profile" in n for n in d["notes"])
    assert d["pilot"]["label"] == "colocated x1" and "machine" not in " ".join(d["pilot"]["why"])  # no local-worker talk

    class Quiet:
        def print(self, *a, **k):
            pass

    write_outputs(d, str(tmp_path / "r.json"), tmp_path / "r.html", Quiet())
    assert json.loads((tmp_path / "r.json").read_text())["requests"]["lost"] == 0
    assert "<html" in (tmp_path / "r.html").read_text().lower()


def test_endpoint_prediction_refuses_a_profile_of_another_engine(profile_path):
    """A local profile times this project's torch engine: it cannot predict a server at --endpoint."""
    w = workload_from_flags(rate=1.0, **SHORT)
    with pytest.raises(BadInput, match="local profile"):
        v.validate("tiny", "cpu", w, endpoint="http://127.0.0.1:9", profile=profile_path, mode="colocated", pilot_rate=1.0,
                   requests=2, progress=False, say=lambda m: None, engine="vllm")
    with pytest.raises(BadInput, match="--engine 'vllm': a local pilot"):
        v.validate("tiny", "cpu", w, profile=profile_path, engine="vllm", say=lambda m: None)
