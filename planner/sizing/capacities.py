"""Each replica type's capacity within the SLOs: the queueing model bisected on the rate, done lazily.

For every (GPU type, tp) of the search space and a role (prefill, decode, colocated in three
modes), a Candidate: one replica and the most req/s it sustains within the SLOs
(planner.queueing.models). planner.sizing.optimizer turns candidates into pools.

The bisection is planner.queueing.models.capacity() run one evaluation at a time (_bisection):
every infeasible rate it meets bounds the capacity from above, so the search can stop the
bisections of replicas that cannot rank among what the pools, the runner-ups and the Pareto
front pick (candidates(lam=...)), and still return bit for bit what a full search returns for
the others. Capacities are cached on the SearchSpace per replica, lengths and the role's SLOs;
queueing evaluations per replica and rate, across SLOs (rejudge).
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass, replace

import numpy as np

from planner.errors import PlannerError
from planner.queueing.engine import GENERIC_COLOCATED_MODES
from planner.queueing.samples import Demand, RoleEval
from planner.queueing.pools import role_model
from planner.steptime.roofline import Replica, kv_transfer_s, valid_tp

TP_SIZES = (1, 2, 4, 8)
COLOCATED_MODES = GENERIC_COLOCATED_MODES  # the generic engine's: unchunked, chunked prefill with these token budgets
REL_TOL = 0.01  # capacity bisection tolerance (relative)

@dataclass(frozen=True)
class Candidate:
    """One replica type for one role, with its capacity within the SLOs."""

    role: str  # "prefill", "decode", "colocated"
    gpu: object  # planner.specs.catalog.GPU
    tp: int
    price: object  # planner.specs.catalog.Price
    usd_per_gpu_hour: float
    capacity_rps: float
    at_capacity: RoleEval
    binding: str  # constraint that stops more load: ttft, tpot, memory, throughput
    mode: str = ""  # colocated: "unchunked" or "chunked N"
    replica: Replica | None = None
    kv_transfer_ms: float = 0.0
    net_share_bytes_s: float = 0.0  # this replica's share of its node's NIC (B/s)
    qmodel: object = None  # the queueing model that evaluates this replica at any load

    @property
    def usd_per_replica_hour(self) -> float:
        return self.usd_per_gpu_hour * self.tp

    @property
    def usd_per_rps_hour(self) -> float:
        return self.usd_per_replica_hour / self.capacity_rps if self.capacity_rps > 0 else math.inf

    def label(self) -> str:
        m = f" {self.mode}" if self.mode and self.mode != "unchunked" else ""
        return f"{self.gpu.key} tp{self.tp}{m}"




def mode_label(chunk: int | None) -> str:
    """How a colocated replica runs prefill: "unchunked" or "chunked N" (N tokens per step)."""
    return "unchunked" if chunk is None else f"chunked {chunk}"


def price_or_none(gpu, provider):
    """The GPU's price from `provider` (cheapest on-demand if None), or None when it has none."""
    try:
        return gpu.price(provider)
    except PlannerError:
        return None


def net_share_bytes_s(gpu, tp: int) -> float:
    """A replica's share of its node's network (B/s): NIC * tp / gpus_per_node."""
    return gpu.network_bytes_s * tp / max(gpu.gpus_per_node, 1)


def split_link_bytes_s(pre_gpu, pre_tp: int, dec_gpu, dec_tp: int) -> float:
    """The KV path between a prefill and a decode replica (B/s): the smaller NIC share."""
    return min(net_share_bytes_s(pre_gpu, pre_tp), net_share_bytes_s(dec_gpu, dec_tp))


class _Slot:
    """One (GPU, tp[, mode]) replica of a role before its capacity search. Its queueing model is
    built on first use: a cached capacity or bound needs none."""

    def __init__(self, gpu, tp: int, price, rep: Replica, share: float, mode: str, chunk, make, key: tuple, cache: dict):
        self.gpu, self.tp, self.price, self.rep, self.share, self.mode, self.chunk = gpu, tp, price, rep, share, mode, chunk
        self._make, self.key, self._cache = make, key, cache
        self._model = self._memo = None
        self.xfer_ms = 0.0

    @property
    def model(self):
        if self._model is None:
            self._model = self._make()
            xfer = getattr(self._model, "transfer_s", 0.0)
            self.xfer_ms = float(np.mean(xfer)) * 1e3
        return self._model

    @property
    def memo(self) -> "_Memo":
        if self._memo is None:
            self._memo = _Memo(self.model, self._cache.setdefault(("evals", self.key[0]), {}))
        return self._memo


SOFT_BINDINGS = ("", "ttft", "tpot", "itl")  # verdicts that depend on the SLO targets; any other is a hard limit


def rejudge(e: RoleEval, d: Demand) -> RoleEval:
    """An evaluation judged against d's SLOs. The predicted latencies at a rate do not depend on
    the targets, only the verdict does (queueing.models: each eval ends with the same test), so
    an evaluation made for one SLO serves another: the Pareto front's bisections share theirs."""
    if e.binding not in SOFT_BINDINGS:
        return e
    ok_t = e.ttft_ms is None or e.ttft_ms.at(d.q) <= d.ttft_slo_s * 1e3
    ok_p = e.tpot_ms is None or e.tpot_ms.at(d.q) <= d.tpot_slo_s * 1e3
    ok_i = d.itl_slo_s is None or e.itl_ms is None or e.itl_ms.at(d.q) <= d.itl_slo_s * 1e3
    ok = ok_t and ok_p and ok_i
    b = "" if ok else ("tpot" if not ok_p else "ttft" if not ok_t else "itl")
    return e if (ok, b) == (e.feasible, e.binding) else replace(e, feasible=ok, binding=b)


class _Memo:
    """A queueing model whose evaluations are remembered by rate, across SLOs (`seen` is shared
    by the slots of one replica and lengths; see rejudge)."""

    def __init__(self, m, seen: dict):
        self.m, self.seen = m, seen

    def eval(self, lam: float):
        e = self.seen.get(lam)
        if e is None:
            e = self.seen[lam] = self.m.eval(lam)
        return rejudge(e, self.m.d)

    def upper_bound(self) -> float:
        return self.m.upper_bound()


def _demand_key(role: str, d: Demand) -> tuple:
    """What of the demand a role's capacity depends on: (the lengths and percentile, its own SLOs
    (s)): prefill ignores the output lengths and the TPOT target, decode the TTFT target."""
    itl = math.inf if d.itl_slo_s is None else d.itl_slo_s  # no target: the loosest one
    slo = {"prefill": (d.ttft_slo_s,), "decode": (d.tpot_slo_s, itl)}.get(role, (d.ttft_slo_s, d.tpot_slo_s, itl))
    if role == "prefill":  # a prefill replica never sees the output lengths
        return (hash(d.prompt.tobytes()), d.q), slo
    # Colocated evaluations carry ITL percentiles only when a target asks (models.ColocatedModel):
    # those made without one cannot judge one.
    return (hash(d.prompt.tobytes()), hash(d.output.tobytes()), d.q, d.itl_slo_s is not None), slo


def _slots(role: str, model, d: Demand, space, gpus, decode_link_bytes_s: float | None) -> list[_Slot]:
    """Every (GPU, tp[, mode]) replica that fits, in catalog order, with its queueing model."""
    out, (dkey, slo) = [], _demand_key(role, d)
    mkey = (model.name, hash(model))
    for g in gpus:
        price = price_or_none(g, space.provider)
        if price is None:
            continue
        for tp in TP_SIZES:
            if not valid_tp(model, g, tp):
                continue
            rep = space.replica(model, g, tp)
            if not rep.fits:
                continue
            share = net_share_bytes_s(g, tp)
            eng = space.engine.for_replica(g, tp)
            # Dataclass fields hash themselves on every lookup: key on their hashes, computed once.
            base = (role, mkey, g.key, tp, price.usd_per_gpu_hour, space.weight_dtype, space.kv_dtype, space.kv_compression,
                    hash(space.eff(g)), id(space.measured.get(g.key)), dkey, eng)
            if role == "prefill":
                link = min(share, decode_link_bytes_s) if decode_link_bytes_s else share

                def make(rep=rep, link=link, eng=eng):
                    return role_model("prefill", rep, d, eng,
                                      transfer_s=kv_transfer_s(d.prompt, rep.kv_bytes_per_token, link, compression=space.kv_compression))

                out.append(_Slot(g, tp, price, rep, share, "", None, make, (base + (link,), slo), space.cache))
            elif role == "decode":
                out.append(_Slot(g, tp, price, rep, share, "", None, lambda rep=rep, eng=eng: role_model("decode", rep, d, eng),
                                 (base, slo), space.cache))
            else:
                for chunk in eng.colocated_modes:
                    out.append(_Slot(g, tp, price, rep, share, mode_label(chunk), chunk,
                                     lambda rep=rep, chunk=chunk, eng=eng: role_model("colocated", rep, d, eng, chunk),
                                     (base + (chunk,), slo), space.cache))
    return out


def _bisection(model, lam_hi: float | None = None, rel_tol: float = REL_TOL):
    """planner.queueing.models.capacity(), one evaluation per step: the same rates in the same
    order, so the same answer. Yields a rate known to be infeasible after each step (inf while
    none is); returns (capacity_rps, evaluation at capacity, binding). The probe at ~0 load comes
    last, and only when no rate was feasible (_with_probe)."""
    bound = getattr(model, "upper_bound", None)
    hi = lam_hi or (bound() if bound else 0.0) or 1.0
    lo, best = 0.0, None
    e = model.eval(hi)
    for _ in range(60):  # the bound was not binding: grow until infeasible
        if not e.feasible:
            break
        lo, best, hi = hi, e, hi * 2
        yield math.inf
        e = model.eval(hi)
    else:
        return _with_probe(model, lo, best, "")
    binding = e.binding
    yield hi
    while lo == 0.0 and hi > 1e-6:
        mid = hi / 2
        e = model.eval(mid)
        if e.feasible:
            lo, best = mid, e
        else:
            hi, binding = mid, e.binding
        yield hi
    while lo > 0 and hi - lo > rel_tol * lo:
        mid = (lo + hi) / 2
        e = model.eval(mid)
        if e.feasible:
            lo, best = mid, e
        else:
            hi, binding = mid, e.binding
        yield hi
    return _with_probe(model, lo, best, binding)


def search_capacity(model, lam_hi: float | None = None, rel_tol: float = REL_TOL):
    """_bisection run to the end: queueing.models.capacity()'s answer (capacity_rps, evaluation
    at capacity, binding) without its probe when a rate is feasible."""
    gen = _bisection(model, lam_hi, rel_tol)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _with_probe(model, lo, best, binding):
    """capacity() first checks a near-zero load; a feasible rate lo > 0 already answers it (the
    same monotonicity in the rate the bisection rests on), so only lo == 0 pays for the probe."""
    if lo > 0 and best is not None:
        return lo, best, binding
    probe = model.eval(1e-6)
    if not probe.feasible:
        return 0.0, probe, probe.binding
    return lo, best or probe, binding


def _finish(role: str, sl: _Slot, cache: dict, result) -> "Candidate | None":
    cap, at, why = result
    cache.setdefault(("at slo", sl.key[0]), []).append((sl.key[1], cap))
    c = Candidate(role, sl.gpu, sl.tp, sl.price, sl.price.usd_per_gpu_hour, cap, at, why or "throughput", sl.mode, sl.rep, sl.xfer_ms,
                  sl.share, sl.model) if cap > 0 else None
    cache[sl.key] = c
    return c


def _looser_bound(sl: _Slot, cache: dict) -> float:
    """The end of a finished bisection at SLOs at least as loose as this slot's (the Pareto front
    tightens them): capacity cannot be higher (req/s); inf if none."""
    slo = sl.key[1]
    return min([cap * (1 + REL_TOL) * (1 + 1e-9) for s, cap in cache.get(("at slo", sl.key[0]), ()) if all(a >= b for a, b in zip(s, slo))],
               default=math.inf)


def candidates(role: str, model, d: Demand, space, gpus, decode_link_bytes_s: float | None = None,
               lam: float | None = None, need_net_bytes_s: float = 0.0) -> list[Candidate]:
    """The feasible (GPU, tp[, mode]) replicas for `role`, with their capacity (req/s).

    Without `lam`: every one of them. With `lam` (req/s): only those that can change the plan,
    the runner-ups or the Pareto front at that rate, i.e. those cheapest_pool and
    single_type_pools can pick (the 12 best $ per req/s, the 8 cheapest pools of one type, the 4
    best $ per NIC share when KV needs the network). Every bisection step leaves a rate known
    to be infeasible, a strict upper bound on the capacity; the bisections advance best-first,
    and one whose bound already ranks it below the k-th finished candidate stops there. The
    finished ones are exactly what capacity() gives, so the plan is the one a search of all of
    them gives, at a fraction of the evaluations. Capacities are cached on the space
    (space.cache) per replica, lengths and the role's SLOs; queueing evaluations per replica and
    rate, across SLOs (rejudge)."""
    slots = _slots(role, model, d, space, gpus, decode_link_bytes_s)
    cache = space.cache
    done: dict[int, Candidate | None] = {i: cache[sl.key] for i, sl in enumerate(slots) if sl.key in cache}
    gens, bound = {}, {}
    for i, sl in enumerate(slots):
        if i in done:
            continue
        bound[i] = _looser_bound(sl, cache)
        if bound[i] <= 0:
            done[i] = None  # serves nothing at looser SLOs already
        else:
            gens[i] = _bisection(sl.memo, sl.model.lam_max if role == "prefill" else None)

    def step(i):
        try:
            bound[i] = min(bound[i], next(gens[i]))
        except StopIteration as stop:
            done[i] = _finish(role, slots[i], cache, stop.value)
            del gens[i]

    if lam is None:
        for i in list(gens):
            while i in gens:
                step(i)
        return [done[i] for i in sorted(done) if done[i] is not None]
    price = [sl.price.usd_per_gpu_hour * sl.tp for sl in slots]
    rules = [(12, lambda i, cap: price[i] / cap), (8, lambda i, cap: price[i] * math.ceil(lam / cap))]
    if need_net_bytes_s > 0:
        rules.append((4, lambda i, cap: price[i] / max(slots[i].share, 1e-9)))
    for k, key in rules:
        # Ranks are (key, catalog order): the stable sorts in cheapest_pool break ties that way.
        finished = sorted((key(j, c.capacity_rps), j) for j, c in done.items() if c is not None)
        heap = [(key(i, bound[i]), i) for i in gens]
        heapq.heapify(heap)
        while heap:
            rank = heapq.heappop(heap)
            i = rank[1]
            if i not in gens:
                continue
            now = (key(i, bound[i]), i)  # optimistic: capacity at its bound
            if now > rank:  # the bound tightened since it was pushed
                heapq.heappush(heap, now)
                continue
            if len(finished) >= k and now > finished[k - 1]:
                break  # this one and every one after it rank below the k-th found
            step(i)
            if i in gens:
                heapq.heappush(heap, (key(i, bound[i]), i))
            elif done[i] is not None:
                bisect.insort(finished, (key(i, done[i].capacity_rps), i))
    return [done[i] for i in sorted(done) if done[i] is not None]
