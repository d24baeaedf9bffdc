import math

import pytest

from planner.sizing.optimizer import Candidate, Pool, cheapest_pool, single_type_pools
from planner.queueing.samples import RoleEval


class G:
    def __init__(self, key):
        self.key, self.name = key, key


class P:
    provider, confidence, source_url = "test", "confirmed", "-"


def cand(key, cap, usd, tp=1, net=0.0):
    return Candidate("decode", G(key), tp, P(), usd, cap, RoleEval(True, "", cap), "tpot", net_share_bytes_s=net)


def test_milp_mixes_types_when_cheaper():
    # A: 3 req/s for $1/h, B: 5 req/s for $1.5/h, need 8 req/s. 3A = $3, 2B = $3, A+B = $2.5.
    pool = cheapest_pool([cand("a", 3, 1.0), cand("b", 5, 1.5)], 8)
    assert sorted((c.gpu.key, n) for c, n in pool.items) == [("a", 1), ("b", 1)]
    assert pool.usd_per_hour == pytest.approx(2.5)


def test_milp_single_type_when_that_is_cheapest():
    pool = cheapest_pool([cand("a", 3, 1.0), cand("b", 5, 2.0)], 9)
    assert [(c.gpu.key, n) for c, n in pool.items] == [("a", 3)]


def test_milp_tp_multiplies_price():
    # tp=2 replica at $1/GPU-h costs $2/h per replica.
    pool = cheapest_pool([cand("a", 10, 1.0, tp=2), cand("b", 4, 1.0)], 10)
    assert pool.usd_per_hour == pytest.approx(2.0)
    assert pool.gpus == 2


def test_network_constraint_adds_replicas():
    # Throughput needs one replica, but the KV traffic (30 GB/s) needs 3 NICs of 12.5 GB/s.
    pool = cheapest_pool([cand("a", 100, 1.0, net=12.5e9)], 1, min_net_bytes_s=30e9)
    assert pool.items[0][1] == 3


def test_loads_split_in_proportion_to_capacity():
    a, b = cand("a", 3, 1.0), cand("b", 6, 1.5)
    pool = Pool("decode", [(a, 1), (b, 1)], 6)
    assert pool.loads() == pytest.approx([2.0, 4.0])


def test_runner_ups_sorted_and_distinct():
    cs = [cand("a", 3, 1.0), cand("b", 5, 1.5), cand("c", 1, 0.2)]
    pools = single_type_pools(cs, 8)
    costs = [p.usd_per_hour for p in pools]
    assert costs == sorted(costs)
    assert costs[0] == pytest.approx(min(math.ceil(8 / c.capacity_rps) * c.usd_per_replica_hour for c in cs))


def test_nothing_feasible_gives_none():
    assert cheapest_pool([], 1.0) is None
    assert cheapest_pool([cand("a", 0.0, 1.0)], 1.0) is None
