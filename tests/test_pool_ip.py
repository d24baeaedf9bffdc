"""The pool integer program's branch and bound against scipy's HiGHS milp (the reference)."""

import math

import numpy as np
import pytest

from planner.sizing.pool_ip import MIP_REL_GAP, _milp, solve_pool_ip


def _cost(cost, n):
    return sum(c * k for c, k in zip(cost, n))


def _check(cost, cap, need, ub, net=None, need_net=0.0):
    got = solve_pool_ip(cost, cap, need, ub, net, need_net)
    ref = _milp(cost, cap, need, ub, net if need_net > 0 else None, need_net)
    assert (got is None) == (ref is None)
    if got is None:
        return
    assert all(0 <= k <= u for k, u in zip(got, ub))
    assert sum(a * k for a, k in zip(cap, got)) >= need * (1 - 1e-9)
    if need_net > 0:
        assert sum(b * k for b, k in zip(net, got)) >= need_net * (1 - 1e-9)
    # Both stop at HiGHS' relative gap: neither may be worse than the other by more than it.
    assert _cost(cost, got) <= _cost(cost, ref) * (1 + 2 * MIP_REL_GAP) + 1e-9
    assert _cost(cost, ref) <= _cost(cost, got) * (1 + 2 * MIP_REL_GAP) + 1e-9


@pytest.mark.parametrize("seed", range(60))
def test_random_pools_match_milp(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 24))
    cap = list(rng.lognormal(1.0, 1.0, k))
    cost = [float(a * rng.lognormal(0.0, 0.4) * rng.choice([1, 2, 4, 8])) for a in cap]
    need = float(rng.choice([0.5, 3.0, 10.0, 100.0, 1e3, 1e5]))
    ub = [math.ceil(need / a) + 1 for a in cap]
    net = need_net = None
    if seed % 3 == 0:
        net = list(rng.lognormal(20, 1, k))
        need_net = float(sum(net) / k * rng.uniform(0.5, 5))
        ub = [max(u, math.ceil(need_net / x) + 1) for u, x in zip(ub, net)]
    _check(cost, cap, need, ub, net, need_net or 0.0)


def test_known_answer():
    # 7 req/s from types of 5 req/s at $3 and 2 req/s at $1: 1 x 5 + 1 x 2 = $4 beats 2 x 5 = $6, 4 x 2 = $4 ties.
    n = solve_pool_ip([3.0, 1.0], [5.0, 2.0], 7.0, [3, 5])
    assert _cost([3.0, 1.0], n) == 4.0
    assert solve_pool_ip([1.0], [1.0], 5.0, [3]) is None  # the bound leaves too little capacity
