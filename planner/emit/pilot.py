"""The pilot: the smallest deployment that keeps the plan's prefill:decode ratio and per-replica load.

A pilot runs a fraction of production traffic on the team's own engine, so that what is measured
is what was planned. Whole replicas make the fraction approximate; the rule, per role (prefill,
decode, or the colocated pool) with N plan replicas over its GPU types:

    k       = max(1, ceil(f * N))                    pilot replicas of the role (at least f)
    n_i'    = k spread over the role's GPU types by largest remainder of k * n_i / N
    phi     = sum_i cap_i * n_i' / sum_i cap_i * n_i  share of the role's capacity kept
    rate'   = rate * min over roles of phi           the pilot's arrival rate (req/s)

The role with the smallest phi runs at exactly the plan's per-replica load (req/s per replica);
every other role runs at or below it, so the plan's predicted latencies are what the pilot should
reach (or beat). The pilot's prefill:decode ratio is as close to the plan's as whole replicas allow
at that size: 11 prefill : 2 decode at f = 0.1 becomes 2 : 1.
"""

from __future__ import annotations

import math


def role_replicas(counts: list[int], fraction: float) -> list[int]:
    """Pilot replicas of each GPU type of one role (module docstring: ceil, then largest remainder)."""
    assert counts and all(n >= 0 for n in counts) and sum(counts) > 0
    assert 0 < fraction <= 1
    total = sum(counts)
    k = max(1, math.ceil(fraction * total - 1e-9))  # 1e-9: 0.1 * 20 must stay 2, not 3
    exact = [k * n / total for n in counts]
    out = [math.floor(x) for x in exact]
    # Hand out what the floors left, largest remainder first; ties go to the type with more replicas.
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - out[i]), -counts[i], i))
    for i in order[: k - sum(out)]:
        out[i] += 1
    return out


def capacity_share(counts: list[int], pilot: list[int], capacity_rps: list[float]) -> float:
    """phi: the share of a role's capacity (req/s) that the pilot keeps."""
    full = sum(c * n for c, n in zip(capacity_rps, counts))
    return sum(c * n for c, n in zip(capacity_rps, pilot)) / full if full > 0 else 0.0


def per_replica_loads(rate_rps: float, counts: list[int], capacity_rps: list[float]) -> list[float]:
    """Load per replica of each GPU type (req/s): arrivals split in proportion to capacity, as the
    plan's optimizer assumes (planner.sizing.optimizer.Pool.loads)."""
    cap = sum(c * n for c, n in zip(capacity_rps, counts))
    return [rate_rps * c / cap if cap > 0 else 0.0 for c in capacity_rps]
