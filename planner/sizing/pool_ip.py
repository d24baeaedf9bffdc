"""The pool integer program, solved exactly by a small branch and bound (no solver import).

    minimize  sum_i cost_i n_i
    s.t.      sum_i cap_i n_i >= need            (throughput within the SLOs, req/s)
              sum_i net_i n_i >= need_net        (optional: KV traffic fits the NICs, B/s)
              0 <= n_i <= ub_i, n_i integer

The optimizer hands it at most ~24 replica types (optimizer.cheapest_pool prunes), so a
depth-first branch and bound over the types, cheapest per unit of capacity first, finishes in
well under a millisecond at most loads. The bound at a node is the larger of the two
single-constraint LP relaxations (fractional knapsacks), each a valid lower bound. It stops at the
relative gap HiGHS (scipy.optimize.milp) uses by default, 1e-4, so both return the same plans up
to ties; past `max_nodes` it hands the problem to scipy.optimize.milp, imported only then (the
import alone costs ~0.35 s, a third of a plan). planner/tests check it against milp.
"""

from __future__ import annotations

import math

MIP_REL_GAP = 1e-4  # HiGHS' default mip_rel_gap, which scipy.optimize.milp uses
MAX_NODES = 20000


def solve_pool_ip(cost, cap, need: float, ub, net=None, need_net: float = 0.0, max_nodes: int = MAX_NODES) -> list[int] | None:
    """Counts n_i (one per entry) of the cheapest cover (module doc), or None if none exists.
    cost ($/h), cap (req/s), ub (max count) and net (B/s) are sequences of equal length; each
    ub_i must be at least the count of type i that covers both needs on its own."""
    n = len(cost)
    net = list(net) if net is not None and need_net > 0 else [0.0] * n
    need_net = need_net if any(net) else 0.0
    if need_net > 0 and not any(x > 0 for x in net):
        return None
    idx = _undominated(cost, cap, net, ub)
    if sum(cap[i] * ub[i] for i in idx) < need * (1 - 1e-12) or sum(net[i] * ub[i] for i in idx) < need_net * (1 - 1e-12):
        return None
    order = sorted(idx, key=lambda i: (cost[i] / cap[i] if cap[i] > 0 else math.inf, cost[i]))
    c = [float(cost[i]) for i in order]
    a = [float(cap[i]) for i in order]
    b = [float(net[i]) for i in order]
    u = [int(ub[i]) for i in order]
    m = len(order)
    # Per suffix j, the types j.. ordered by cost per unit of network (for the second bound).
    net_order = [sorted(range(j, m), key=lambda i: c[i] / b[i] if b[i] > 0 else math.inf) for j in range(m + 1)]
    eps_a, eps_b = need * 1e-12, need_net * 1e-12

    def frac(j: int, rest: float, w: list, seq) -> float:
        """Fractional-knapsack cost of covering `rest` with types `seq` (in cost/unit order)."""
        total = 0.0
        for i in seq:
            if rest <= 0:
                return total
            if w[i] <= 0:
                break
            take = min(u[i], rest / w[i])
            total += take * c[i]
            rest -= take * w[i]
        return total if rest <= 1e-12 * max(need, need_net, 1.0) else math.inf

    best = [math.inf, None]
    counts = [0] * m
    nodes = [0]

    def dfs(j: int, ra: float, rb: float, spent: float) -> bool:
        """Returns False when the node budget ran out."""
        nodes[0] += 1
        if nodes[0] > max_nodes:
            return False
        if j == m:
            return True
        k_need = 0
        if ra > eps_a:
            k_need = math.ceil(ra / a[j] - 1e-12)
        if rb > eps_b and b[j] > 0:
            k_need = max(k_need, math.ceil(rb / b[j] - 1e-12))
        for k in range(min(u[j], k_need), -1, -1):
            ra2, rb2, s2 = ra - k * a[j], rb - k * b[j], spent + k * c[j]
            counts[j] = k
            limit = best[0] * (1 - MIP_REL_GAP)
            if ra2 <= eps_a and rb2 <= eps_b:
                if s2 < best[0]:
                    best[0], best[1] = s2, counts[:j + 1] + [0] * (m - j - 1)
                continue
            la = frac(j + 1, ra2, a, range(j + 1, m)) if ra2 > eps_a else 0.0
            if s2 + la >= limit:
                if k * a[j] < ra:  # fewer of this type only raises the capacity bound: done
                    break
                continue
            lb = frac(j + 1, rb2, b, net_order[j + 1]) if rb2 > eps_b else 0.0
            if s2 + lb >= limit:
                continue
            if not dfs(j + 1, ra2, rb2, s2):
                return False
        counts[j] = 0
        return True

    if not dfs(0, float(need), float(need_net), 0.0):
        return _milp(cost, cap, need, ub, net, need_net)
    if best[1] is None:
        return None
    out = [0] * n
    for pos, i in enumerate(order):
        out[i] = best[1][pos]
    return out


def _undominated(cost, cap, net, ub) -> list[int]:
    """Types no other type beats on every count (cheaper or equal, with at least the capacity and
    network share): an optimum never needs a dominated type, provided (as cheapest_pool ensures)
    each ub_k is at least the count of type k that covers both needs alone, so no bound binds."""
    n = len(cost)
    keep = []
    for i in range(n):
        if cap[i] <= 0 and net[i] <= 0:
            continue
        dominated = False
        for k in range(n):
            if k == i:
                continue
            if cost[k] <= cost[i] and cap[k] >= cap[i] and net[k] >= net[i]:
                if (cost[k], cap[k], net[k]) != (cost[i], cap[i], net[i]) or k < i:
                    dominated = True
                    break
        if not dominated:
            keep.append(i)
    return keep


def _milp(cost, cap, need, ub, net, need_net) -> list[int] | None:
    """The same program through scipy.optimize.milp (HiGHS): the fallback and the reference."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp

    cons = [LinearConstraint(np.asarray(cap, dtype=float)[None, :], lb=need, ub=np.inf)]
    if need_net > 0:
        cons.append(LinearConstraint(np.asarray(net, dtype=float)[None, :], lb=need_net, ub=np.inf))
    k = len(cost)
    res = milp(c=np.asarray(cost, dtype=float), constraints=cons, integrality=np.ones(k), bounds=Bounds(np.zeros(k), np.asarray(ub, dtype=float)))
    if not res.success:
        return None
    return [int(x) for x in np.round(res.x)]
