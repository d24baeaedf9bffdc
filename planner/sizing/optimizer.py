"""What to buy: the cheapest disaggregated plan and the cheapest colocated plan, side by side.

For every (GPU type, tp) in the search space and every role (prefill, decode, colocated) we find by
bisection the capacity of one replica: the most req/s it sustains within the SLOs (planner.queueing.models).
A pool that may mix types is then the integer program

    minimize  sum_i usd_per_gpu_hour_i * tp_i * n_i
    s.t.      sum_i capacity_i * n_i >= lam                (throughput within SLOs)
              sum_i net_share_i * n_i >= kv_bytes_rate     (disaggregated: KV fits the network)
              n_i integer >= 0

solved exactly by a small branch and bound (planner.sizing.pool_ip, which falls back on
scipy.optimize.milp only past its node budget). Disaggregated = cheapest decode pool + cheapest prefill pool
whose TTFT budget already pays for the KV transfer between the two pools.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass, field, replace

import numpy as np

from planner.errors import PlannerError
from planner.sizing.pool_ip import solve_pool_ip
from planner.queueing.models import ColocatedModel, DecodeModel, Demand, PrefillModel, RoleEval
from planner.steptime.roofline import Efficiency, Replica, kv_transfer_s, valid_tp

TP_SIZES = (1, 2, 4, 8)
COLOCATED_MODES = (None, 512, 2048)  # unchunked, chunked prefill with these token budgets
NETWORK_MAX_UTIL = 0.8  # plan KV traffic to at most 80% of the NICs
REL_TOL = 0.01  # capacity bisection tolerance (relative)
KV_TRANSFER_WARN_MS = 100.0  # the source blog's threshold: above it, disaggregation's latency gain is gone


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


@dataclass
class Pool:
    """A chosen pool: how many replicas of which candidates, and what they cost."""

    role: str
    items: list[tuple[Candidate, int]]
    lam_rps: float

    @property
    def usd_per_hour(self) -> float:
        return sum(c.usd_per_replica_hour * n for c, n in self.items)

    @property
    def gpus(self) -> int:
        return sum(c.tp * n for c, n in self.items)

    @property
    def capacity_rps(self) -> float:
        return sum(c.capacity_rps * n for c, n in self.items)

    def loads(self) -> list[float]:
        """Per-replica rate of each item (req/s): arrivals split in proportion to capacity."""
        cap = self.capacity_rps
        return [self.lam_rps * c.capacity_rps / cap if cap else 0.0 for c, _ in self.items]

    def to_list(self) -> list[dict]:
        return [
            {"gpu": c.gpu.key, "gpu_name": c.gpu.name, "tp": c.tp, "replicas": n, "gpus": c.tp * n, "mode": c.mode or None,
             "provider": c.price.provider, "usd_per_gpu_hour": c.usd_per_gpu_hour, "capacity_rps_per_replica": round(c.capacity_rps, 4),
             "binding": c.binding}
            for c, n in self.items
        ]


@dataclass
class SearchSpace:
    """The hardware the optimizer may choose from, and how prices are read."""

    gpus: list  # catalog GPUs for colocated (and both roles unless narrowed)
    prefill_gpus: list | None = None
    decode_gpus: list | None = None
    provider: str | None = None
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    kv_compression: str = "none"
    efficiencies: dict = field(default_factory=dict)  # gpu key -> Efficiency (calibrated)
    skipped: list = field(default_factory=list)  # (gpu key, why)
    measured: dict = field(default_factory=dict)  # gpu key -> Profile whose points time that type (calibrate)
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # replica capacities (candidates); shared by replace()

    def eff(self, gpu) -> Efficiency:
        return self.efficiencies.get(gpu.key) or self.efficiencies.get("*") or Efficiency()

    def replica(self, model, gpu, tp: int) -> Replica:
        """The replica the optimizer prices: on a profiled GPU type at the profiled model, tp and
        dtypes, the profile's measured step times; elsewhere the (calibrated) roofline."""
        rep = Replica(model, gpu, tp, self.weight_dtype, self.kv_dtype, self.eff(gpu))
        prof = self.measured.get(gpu.key)
        if prof is not None:
            from planner.steptime.calibrate import measured_applies, measured_replica

            if measured_applies(prof, model, tp, self.weight_dtype, self.kv_dtype):
                return measured_replica(rep, prof)
        return rep


def price_or_none(gpu, provider):
    """The GPU's price from `provider` (cheapest on-demand if None), or None when it has none."""
    try:
        return gpu.price(provider)
    except PlannerError:
        return None


def net_share_bytes_s(gpu, tp: int) -> float:
    """A replica's share of its node's network (B/s): NIC * tp / gpus_per_node."""
    return gpu.network_bytes_s * tp / max(gpu.gpus_per_node, 1)


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


SOFT_BINDINGS = ("", "ttft", "tpot")  # verdicts that depend on the SLO targets; any other is a hard limit


def rejudge(e: RoleEval, d: Demand) -> RoleEval:
    """An evaluation judged against d's SLOs. The predicted latencies at a rate do not depend on
    the targets, only the verdict does (queueing.models: each eval ends with the same test), so
    an evaluation made for one SLO serves another: the Pareto front's bisections share theirs."""
    if e.binding not in SOFT_BINDINGS:
        return e
    ok_t = e.ttft_ms is None or e.ttft_ms.at(d.q) <= d.ttft_slo_s * 1e3
    ok_p = e.tpot_ms is None or e.tpot_ms.at(d.q) <= d.tpot_slo_s * 1e3
    ok = ok_t and ok_p
    b = "" if ok else ("tpot" if not ok_p else "ttft")
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
    slo = {"prefill": (d.ttft_slo_s,), "decode": (d.tpot_slo_s,)}.get(role, (d.ttft_slo_s, d.tpot_slo_s))
    if role == "prefill":  # a prefill replica never sees the output lengths
        return (hash(d.prompt.tobytes()), d.q), slo
    return (hash(d.prompt.tobytes()), hash(d.output.tobytes()), d.q), slo


def _slots(role: str, model, d: Demand, space: SearchSpace, gpus, decode_link_bytes_s: float | None) -> list[_Slot]:
    """Every (GPU, tp[, mode]) replica that fits, in catalog order, with its queueing model."""
    out, (dkey, slo) = [], _demand_key(role, d)
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
            base = (role, model, g.key, tp, price.usd_per_gpu_hour, space.weight_dtype, space.kv_dtype, space.kv_compression,
                    space.eff(g), id(space.measured.get(g.key)), dkey)
            if role == "prefill":
                link = min(share, decode_link_bytes_s) if decode_link_bytes_s else share

                def make(rep=rep, link=link):
                    return PrefillModel(rep, d, transfer_s=kv_transfer_s(d.prompt, rep.kv_bytes_per_token, link, compression=space.kv_compression))

                out.append(_Slot(g, tp, price, rep, share, "", None, make, (base + (link,), slo), space.cache))
            elif role == "decode":
                out.append(_Slot(g, tp, price, rep, share, "", None, lambda rep=rep: DecodeModel(rep, d), (base, slo), space.cache))
            else:
                for chunk in COLOCATED_MODES:
                    out.append(_Slot(g, tp, price, rep, share, "unchunked" if chunk is None else f"chunked {chunk}", chunk,
                                     lambda rep=rep, chunk=chunk: ColocatedModel(rep, d, chunk), (base + (chunk,), slo), space.cache))
    return out


def _bisection(model, lam_hi: float | None = None, rel_tol: float = REL_TOL):
    """planner.queueing.models.capacity(), one evaluation per step: the same rates in the same
    order, so the same answer. Yields a rate known to be infeasible after each step (inf while
    none is); returns (capacity_rps, evaluation at capacity, binding). The probe at ~0 load comes
    last: it decides only whether the answer is 0, which no later rate can change."""
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


def _with_probe(model, lo, best, binding):
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


def candidates(role: str, model, d: Demand, space: SearchSpace, gpus, decode_link_bytes_s: float | None = None,
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


def cheapest_pool(cands: list[Candidate], lam: float, min_net_bytes_s: float = 0.0) -> Pool | None:
    """Solve the mixed-type pool integer program (module docstring). None if nothing can serve."""
    cands = [c for c in cands if c.capacity_rps > 0]
    if not cands:
        return None
    # Prune so the MILP stays tiny (milliseconds): at high load the best $ per req/s wins, at low
    # load the cheapest replica that covers the rate, at any load a big NIC share for the network.
    keep = sorted(cands, key=lambda c: c.usd_per_rps_hour)[:12]
    keep += sorted(cands, key=lambda c: c.usd_per_replica_hour * math.ceil(lam / c.capacity_rps))[:8]
    if min_net_bytes_s > 0:
        keep += sorted(cands, key=lambda c: c.usd_per_replica_hour / max(c.net_share_bytes_s, 1e-9))[:4]
    cands = list({id(c): c for c in keep}.values())
    cost = [c.usd_per_replica_hour for c in cands]
    caps = [c.capacity_rps for c in cands]
    ub = [math.ceil(lam / c.capacity_rps) + 1 for c in cands]
    net = None
    if min_net_bytes_s > 0:
        net = [c.net_share_bytes_s for c in cands]
        if max(net) <= 0:
            return None
        ub = [max(u, math.ceil(min_net_bytes_s / max(x, 1e-9)) + 1) for u, x in zip(ub, net)]
    n = solve_pool_ip(cost, caps, lam, ub, net, min_net_bytes_s)
    if n is None:
        return None
    items = [(c, int(k)) for c, k in zip(cands, n) if k > 0]
    return Pool(cands[0].role, items, lam)


def single_type_pools(cands: list[Candidate], lam: float, top: int = 5) -> list[Pool]:
    """The cheapest pools of one replica type each (the runner-ups a person compares)."""
    pools = [Pool(c.role, [(c, math.ceil(lam / c.capacity_rps))], lam) for c in cands if c.capacity_rps > 0]
    pools.sort(key=lambda p: p.usd_per_hour)
    seen, out = set(), []
    for p in pools:
        key = p.items[0][0].label()
        if key not in seen:
            seen.add(key)
            out.append(p)
        if len(out) == top:
            break
    return out


def evaluate_pool(pool: Pool) -> RoleEval:
    """Predicted latencies of a pool at its actual load. With mixed types we report, per
    percentile, the worst replica type (conservative: the pool's mixture is no worse)."""
    evals = [c.qmodel.eval(lam_i) for (c, _), lam_i in zip(pool.items, pool.loads())]
    if len(evals) == 1:
        return evals[0]

    def worst(attr):
        ps = [getattr(e, attr) for e in evals if getattr(e, attr) is not None]
        if not ps:
            return None
        return type(ps[0])(max(p.p50 for p in ps), max(p.p90 for p in ps), max(p.p99 for p in ps))

    first = evals[0]
    util = float(np.average([e.utilization for e in evals], weights=[n for _, n in pool.items]))
    return RoleEval(all(e.feasible for e in evals), next((e.binding for e in evals if e.binding), ""), pool.lam_rps,
                    worst("ttft_ms"), worst("tpot_ms"), util, float(np.mean([e.batch_mean for e in evals])), first.extra)
