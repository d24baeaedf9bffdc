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

import math
from dataclasses import dataclass, field

import numpy as np

from planner.queueing.engine import GENERIC, Engine
from planner.queueing.samples import Pcts, RoleEval
from planner.sizing.capacities import (  # noqa: F401 (re-exported: the optimizer's vocabulary)
    COLOCATED_MODES,
    REL_TOL,
    TP_SIZES,
    Candidate,
    candidates,
    mode_label,
    net_share_bytes_s,
    price_or_none,
)
from planner.sizing.pool_ip import solve_pool_ip
from planner.steptime.roofline import Efficiency, Replica

NETWORK_MAX_UTIL = 0.8  # plan KV traffic to at most 80% of the NICs
KV_TRANSFER_WARN_MS = 100.0  # the source blog's threshold: above it, disaggregation's latency gain is gone


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
    engine: Engine = GENERIC  # the serving engine whose behaviour the queueing models take (planner.queueing.engine)
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # replica capacities (candidates); shared by replace()

    def eff(self, gpu) -> Efficiency:
        return self.efficiencies.get(gpu.key) or self.efficiencies.get("*") or Efficiency()

    def replica(self, model, gpu, tp: int) -> Replica:
        """The replica the optimizer prices: on a profiled GPU type at the profiled model, tp and
        dtypes, the profile's measured step times; elsewhere the (calibrated) roofline."""
        rep = Replica(model, gpu, tp, self.weight_dtype, self.kv_dtype, self.eff(gpu))
        prof = self.measured.get(gpu.key)
        if prof is not None:
            from planner.steptime.calibrate import measured_applies
            from planner.steptime.measured import measured_replica

            if measured_applies(prof, model, tp, self.weight_dtype, self.kv_dtype):
                return measured_replica(rep, prof)
        return rep


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


def worst_pcts(ps) -> Pcts | None:
    """Per percentile, the largest of `ps` (ms; None entries skipped): a mixed pool's latencies,
    conservatively; None if none is known."""
    ps = [p for p in ps if p is not None]
    if not ps:
        return None
    return type(ps[0])(max(p.p50 for p in ps), max(p.p90 for p in ps), max(p.p99 for p in ps))


def evaluate_pool(pool: Pool) -> RoleEval:
    """Predicted latencies of a pool at its actual load. With mixed types we report, per
    percentile, the worst replica type (conservative: the pool's mixture is no worse)."""
    evals = [c.qmodel.eval(lam_i) for (c, _), lam_i in zip(pool.items, pool.loads())]
    if len(evals) == 1:
        return evals[0]

    def worst(attr):
        return worst_pcts([getattr(e, attr) for e in evals])

    first = evals[0]
    util = float(np.average([e.utilization for e in evals], weights=[n for _, n in pool.items]))
    return RoleEval(all(e.feasible for e in evals), next((e.binding for e in evals if e.binding), ""), pool.lam_rps,
                    worst("ttft_ms"), worst("tpot_ms"), util, float(np.mean([e.batch_mean for e in evals])), first.extra, worst("itl_ms"))
