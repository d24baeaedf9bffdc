"""The closed forms (planner.queueing.models) against the discrete-event simulator on the same replica.

Tolerances are the gaps benchmarks/model_vs_sim.py measures at moderate load (the README publishes
them); a change that makes the closed forms drift from the simulation fails here.
"""

import numpy as np
import pytest

from planner.specs.catalog import load_catalog
from planner.queueing.models import ColocatedModel, DecodeModel, PrefillModel, capacity
from planner.queueing.samples import Demand
from planner.steptime.roofline import Replica
from planner.simulate.des import simulate_colocated, simulate_disaggregated
from planner.specs.models import PRESETS
from planner.workload.workload import LengthDist

REP = Replica(PRESETS["llama-3.1-8b"], load_catalog().resolve("h100-sxm"), 1)
INP = LengthDist.lognormal(mean=1000, sigma=0.5)
OUT = LengthDist.lognormal(mean=200, sigma=0.5)
N = 6000


def demand():
    rng = np.random.default_rng(0)
    return Demand(INP.sample(rng, 1000).astype(float), OUT.sample(rng, 1000).astype(float), 1e9, 1e9, 90)


def lengths():
    rng = np.random.default_rng(1)
    return INP.sample(rng, N), OUT.sample(rng, N)


def p(a, q):
    return float(np.nanpercentile(a[int(0.1 * len(a)):], q)) * 1e3


@pytest.mark.parametrize("frac", [0.3, 0.6])
def test_prefill_ttft(frac):
    m = PrefillModel(REP, demand())
    lam = frac * capacity(m)[0]
    e = m.eval(lam)
    pl, ol = lengths()
    sim = simulate_disaggregated(pl, ol, REP.prefill_time_s, REP.decode_step_s, lambda l: 0.0, rate_rps=lam, routing="random", seed=3)
    assert e.ttft_ms.p50 == pytest.approx(p(sim.ttft_s, 50), rel=0.25)
    assert e.ttft_ms.p90 == pytest.approx(p(sim.ttft_s, 90), rel=0.30)


@pytest.mark.parametrize("frac", [0.3, 0.6, 0.9])
def test_decode_tpot(frac):
    m = DecodeModel(REP, demand())
    lam = frac * capacity(m)[0]
    e = m.eval(lam)
    pl, ol = lengths()
    sim = simulate_disaggregated(pl, ol, REP.prefill_time_s, REP.decode_step_s, lambda l: 0.0, rate_rps=lam, n_prefill=4,
                                 max_decode_batch=m.max_batch, routing="random", seed=3)
    assert e.tpot_ms.p50 == pytest.approx(p(sim.tpot_s, 50), rel=0.12)
    assert e.tpot_ms.p90 == pytest.approx(p(sim.tpot_s, 90), rel=0.15)


def _colocated(chunk, frac):
    m = ColocatedModel(REP, demand(), chunk)
    lam = frac * capacity(m)[0]
    e = m.eval(lam)
    pl, ol = lengths()
    sim = simulate_colocated(pl, ol, REP.prefill_time_s, REP.decode_step_s, rate_rps=lam, chunked=chunk is not None, chunk_tokens=chunk or 512,
                             max_decode_batch=m.dec.max_batch, routing="random", seed=3,
                             mixed_step_s=(lambda pt, b, ctx: REP.decode_step_s(max(b, 1), ctx, pt)) if chunk else None)
    return e, sim


@pytest.mark.parametrize("chunk", [None, 2048])
def test_colocated(chunk):
    e, sim = _colocated(chunk, 0.5)
    assert e.tpot_ms.p50 == pytest.approx(p(sim.tpot_s, 50), rel=0.15)
    assert e.ttft_ms.p50 == pytest.approx(p(sim.ttft_s, 50), rel=0.35)


def test_colocated_tpot_tail_at_high_load():
    """Unchunked at 80% load: a request's stalls lengthen its life, which collects more stalls (the
    busy-period spread of queueing.samples.stall_samples); as a plain Poisson count over the mean
    life the TPOT p99 sat 23% under the simulator's here, now ~13%."""
    e, sim = _colocated(None, 0.8)
    assert e.tpot_ms.p90 == pytest.approx(p(sim.tpot_s, 90), rel=0.12)
    assert e.tpot_ms.p99 == pytest.approx(p(sim.tpot_s, 99), rel=0.18)


def test_chunked_tpot_at_high_load():
    """Chunked at 80% load a mixed step carries what queued during the step before, given that
    something did (ColocatedModel.stalls): fewer, fuller mixed steps. Unconditioned, TPOT p50 sat
    25% under the simulator's here and p90 28%; now within a few percent."""
    e, sim = _colocated(2048, 0.8)
    assert e.tpot_ms.p50 == pytest.approx(p(sim.tpot_s, 50), rel=0.10)
    assert e.tpot_ms.p90 == pytest.approx(p(sim.tpot_s, 90), rel=0.12)
