"""The optimizer's capacity search against the scalar reference (planner.queueing.models.capacity)."""

import math
import random

import pytest

from planner.api import plan, solve
from planner.queueing.models import capacity
from planner.queueing.samples import Demand
from planner.sizing import capacities as O
from planner.sizing.optimizer import SearchSpace, candidates, cheapest_pool, single_type_pools

CASES = [dict(), dict(model="llama-2-7b", rate=100, input_len="100", output_len="500"),
         dict(model="llama-3.1-70b", rate=20, input_len="8000", output_len="300", tpot_slo_ms=30, ttft_slo_ms=2000)]


@pytest.fixture(scope="module", params=range(len(CASES)))
def case(request):
    r = plan(pareto=False, uncertainty=False, **CASES[request.param])
    return r, Demand.from_workload(r.workload)


def test_stepwise_bisection_equals_the_scalar_reference(case):
    r, d = case
    rng = random.Random(0)
    for role in ("prefill", "decode", "colocated"):
        slots = O._slots(role, r.model, d, SearchSpace(r.space.gpus), r.space.gpus, None)
        for sl in rng.sample(slots, min(12, len(slots))):
            hi = sl.model.lam_max if role == "prefill" else None
            ref = capacity(sl.model, lam_hi=hi, rel_tol=O.REL_TOL)
            gen = O._bisection(sl.memo, hi)
            try:
                while True:
                    next(gen)
            except StopIteration as stop:
                got = stop.value
            assert got[0] == ref[0] and got[2] == ref[2], (role, sl.gpu.key, sl.tp, sl.mode)


def test_lazy_candidates_give_the_same_pools_and_runner_ups(case):
    r, d = case
    lam = r.workload.rate_rps
    for role in ("decode", "colocated"):
        gpus = r.space.gpus
        full = candidates(role, r.model, d, SearchSpace(gpus), gpus)
        lazy = candidates(role, r.model, d, SearchSpace(gpus), gpus, lam=lam, need_net_bytes_s=1e9 if role == "decode" else 0.0)
        assert len(lazy) <= len(full)
        by_label = {c.label(): c for c in full}
        for c in lazy:  # every capacity it computed is the full search's, to the bit
            assert c.capacity_rps == by_label[c.label()].capacity_rps
        net = 1e9 if role == "decode" else 0.0
        a, b = cheapest_pool(full, lam, net), cheapest_pool(lazy, lam, net)
        assert a.usd_per_hour == pytest.approx(b.usd_per_hour)
        assert [(c.label(), n) for c, n in a.items] == [(c.label(), n) for c, n in b.items]
        assert [p.items[0][0].label() for p in single_type_pools(full, lam)] == [p.items[0][0].label() for p in single_type_pools(lazy, lam)]


def test_capacities_are_cached_per_slo_and_shared_by_rates(case):
    r, d = case
    space = SearchSpace(r.space.gpus)
    solve(r.model, r.workload, space, d)
    n = sum(len(v) for k, v in space.cache.items() if isinstance(k, tuple) and k[:1] == ("evals",))
    solve(r.model, r.workload.with_rate(r.workload.rate_rps * 1.0), space, d)
    assert sum(len(v) for k, v in space.cache.items() if isinstance(k, tuple) and k[:1] == ("evals",)) == n  # nothing new evaluated
    assert math.isfinite(n) and n > 0
