"""Pools of replicas at a total arrival rate: the prediction `plan` prints and `validate` checks.

`role_model` builds the engine's model of one replica in one role (what the optimizer prices);
`predict_split` and `predict_colocated` predict whole pools of given sizes (the chosen plan,
`plan --current`, `plan --current-split`, and every `validate` pilot): the same role models at
each replica's share of the rate, plus what only a pool knows, how smooth the arrivals at a
decode replica are (planner.queueing.arrivals). Which engine behaviours apply is the Engine's
(planner.queueing.engine):

1. TTFT. A "whole" KV transfer moves before the first token and counts in TTFT. A "layerwise"
   one (this project's runtime) moves layer by layer during the prefill: the first token streams
   as the prefill ends and what is left of the transfer (the last layer, plus the rest of a decode
   step in progress when the decode replica is busy, probability 1 - e^-b) delays the *second*.
2. TPOT "per-step": percentiles of the step time at the running batch's quantiles (DecodeModel).
   "per-request", (last token - first token) / (n - 1): a request decodes beside the others on its
   replica, whose number over its life is the time-average of the occupancy; with arrivals of SCV
   c_a^2 it sees b + (c_a^2 - 1) beta others (GI/G/inf), none at all with probability
   `alone_share`, and itself: TPOT_i = t(1 + others_i) + first_gap_extra_i / (n_i - 1).
3. Arrivals at a decode replica: "poisson", or "departures" of the prefill stage split over the
   decode replicas (QNA rules, planner.queueing.arrivals.decode_arrival_scv; for an engine that
   batches greedily, the departures of its simulated prefills, batch-mates starting together:
   arrivals.window_dispersion). Little's law takes the step averaged over the batch a request
   meets (arrivals.mean_step), not the step at the mean batch.
Rates in req/s, times in s unless a name says ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from planner.queueing.arrivals import (_scv, alone_share, decode_arrival_scv, lifetime_var_factor, occupancy,
                                       others_over_life, smooth_arrivals, window_dispersion)
from planner.queueing.engine import Engine
from planner.queueing.greedy import GreedyPrefillModel, greedy_departures
from planner.queueing.models import ColocatedModel, DecodeModel, PrefillModel
from planner.queueing.samples import N_SAMPLES, Demand, Pcts, itl_samples, jittered, stall_samples
from planner.steptime.adjust import Adjusted, longest_context_pad

#: Fixed latency of one KV message between processes on a host (s): ZeroMQ over loopback.
LAYERWISE_KV_LATENCY_S = 1e-4


@dataclass(frozen=True)
class PoolPrediction:
    """What the model says pools of replicas do at a total rate. Latencies in ms; rates in req/s."""

    mode: str  # "disaggregated" | "colocated"
    feasible: bool  # stable (and within the engine's batch limits); SLOs are judged by the caller
    binding: str
    ttft_ms: Pcts | None
    tpot_ms: Pcts | None
    kv_transfer_ms_mean: float | None
    kv_bytes_mean: float | None
    utilization: dict  # role -> busy share 0..1
    batch_mean: dict  # role -> mean batch (decode: sequences running; prefill: prompts per batch)
    prefill_wait_ms_mean: float | None
    prefill_service_ms_mean: float | None
    e2e_s_mean: float | None
    ttft_samples_ms: np.ndarray = field(repr=False, default=None)
    tpot_samples_ms: np.ndarray = field(repr=False, default=None)
    notes: tuple = ()
    itl_ms: Pcts | None = None  # every inter-token gap (percentiles over gaps, not requests)

    def predicted(self) -> dict:
        """The JSON block `plan` and `validate` both print: {ttft_ms, tpot_ms, itl_ms} x {p50, p90, p99}."""
        return {"ttft_ms": self.ttft_ms.to_dict() if self.ttft_ms else None, "tpot_ms": self.tpot_ms.to_dict() if self.tpot_ms else None,
                "itl_ms": self.itl_ms.to_dict() if self.itl_ms else None}


def engine_replica(rep, d: Demand, engine: Engine):
    """`rep` as the engine runs it: decode attention padded to the longest context where it is."""
    if engine.padded_attention:
        return Adjusted(rep, pad=longest_context_pad(d, engine.max_num_seqs))
    return rep


def colocated_prefill_budget(d: Demand, engine: Engine) -> int:
    """A colocated replica's prefill batch budget (tokens): the engine's, and at most its prompt
    slots of mean-length prompts where the engine caps prompts per batch."""
    if engine.prefill_batching == "greedy-padded":
        return int(min(engine.prefill_token_budget, engine.prefill_slots * max(d.mean_prompt, 1)))
    return engine.prefill_token_budget


def role_model(role: str, rep, d: Demand, engine: Engine, chunk: int | None = None, transfer_s=0.0):
    """The engine's model of one replica in `role` ("prefill", "decode", "colocated"), with eval(lam)
    -> RoleEval and upper_bound(). `transfer_s` (s, scalar or per sample) is the KV transfer a
    prefill replica's TTFT pays (only for a "whole" transfer). `rep` is taken as the engine runs it,
    with the engine's limits on that device (Engine.for_replica)."""
    engine = engine.for_replica(rep.gpu, rep.tp)
    if role == "prefill":
        xfer = transfer_s if engine.kv_transfer == "whole" else 0.0
        if engine.prefill_batching == "greedy-padded":
            return GreedyPrefillModel(rep, d, engine.prefill_token_budget, engine.prefill_slots, transfer_s=xfer)
        return PrefillModel(rep, d, token_budget=engine.prefill_token_budget, transfer_s=xfer)
    rep = engine_replica(rep, d, engine)
    if role == "decode":
        return DecodeModel(rep, d, max_batch=engine.max_num_seqs)
    cm = ColocatedModel(rep, d, chunk, max_batch=engine.max_num_seqs)
    cm.pre = PrefillModel(rep, d, token_budget=colocated_prefill_budget(d, engine))
    return cm


def _per_request_tpot(t, b: float, shift: float, lam: float, steps: np.ndarray, ca2: float, share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(per-request mean step (s), decode life (s)) of N_SAMPLES requests on a replica whose mean
    occupancy is b, arrivals of SCV ca2 (shift = smooth_arrivals), stalls taking `share` of its time."""
    m_o, z = max(0.0, b + shift), max(0.05, 1.0 + shift)
    life = steps * t(1 + m_o) / (1 - share)
    others = others_over_life(m_o, z * lifetime_var_factor(life, float(life.mean())), alone_share(m_o, z, lam, life, ca2), N_SAMPLES)
    return np.asarray(t(1.0 + others), dtype=float), life


def predict_split(pre_rep, dec_rep, d: Demand, engine: Engine, n_prefill: int, n_decode: int, rate_rps: float,
                  link_bytes_s: float | None = None, kv_latency_s: float | None = None, compression: str = "none") -> PoolPrediction:
    """`n_prefill` prefill and `n_decode` decode replicas at `rate_rps` (module doc). `link_bytes_s`:
    the KV path's bandwidth (B/s): a replica's NIC share for a "whole" transfer, the measured local
    transport for a "layerwise" one (None: wire time taken as 0, said in the notes); `compression` of
    a whole transfer (roofline.KV_COMPRESSION_FACTOR)."""
    from planner.steptime.roofline import kv_transfer_s

    steps = np.maximum(d.output - 1, 1)
    lam_p, lam_d = rate_rps / n_prefill, rate_rps / n_decode
    notes = []
    bw = link_bytes_s or math.inf
    if link_bytes_s is None:
        notes.append("KV transport bandwidth not measured: wire time taken as 0")
    kv_bytes = d.prompt * dec_rep.kv_bytes_per_token
    whole = kv_transfer_s(d.prompt, dec_rep.kv_bytes_per_token, bw, latency_s=1e-3 if kv_latency_s is None else kv_latency_s,
                          compression=compression)
    pm = role_model("prefill", pre_rep, d, engine, transfer_s=whole)
    dm = role_model("decode", dec_rep, d, engine)
    engine = engine.for_replica(dec_rep.gpu, dec_rep.tp)  # the decode side's limits from here on
    de = dm.eval(lam_d)
    gp = None
    if isinstance(pm, GreedyPrefillModel):
        gp = pm.stage(lam_p)
        busy_p = 1.0 if gp is None else gp.busy
        pre_ttft, pre_wait, k = (None, None, float(pm.slots)) if gp is None else (gp.ttft_s + pm.transfer_s, gp.wait_s, gp.batch_mean)
    else:
        pe = pm.eval(lam_p)
        busy_p = pe.utilization
        if pe.ttft_ms is None:
            pre_ttft, pre_wait, k = None, None, float(pm.k_max)
        else:
            wait, _, _, k = pm.wait_samples(lam_p)
            pre_ttft, pre_wait = wait + pm.s1 + (pm.T(k) - pm.T(1)) + pm.transfer_s, wait
    ca2 = 1.0
    if engine.decode_arrivals == "departures":
        dep = None
        if gp is not None and de.batch_mean is not None:  # a greedy stage that keeps up
            # the simulated departures over a decode life (at the batch Poisson arrivals give)
            dep = window_dispersion(gp.departures_s, float(steps.mean()) * dm.t(1.0 + de.batch_mean))
        ca2 = decode_arrival_scv("disaggregated", busy_p, _scv(pm.s1), n_prefill, n_decode, 1, dep)
    shift = smooth_arrivals(ca2, steps * dm.t(1.0))
    b = None
    if de.tpot_ms is not None:
        b = occupancy(lam_d, float(steps.mean()), dm.t_many, b_max=4 * engine.max_num_seqs + 10, shift=shift) if engine.tpot == "per-request" else de.batch_mean
    if pre_ttft is None or b is None:
        why = "prefill" if pre_ttft is None else "decode"
        return PoolPrediction("disaggregated", False, "prefill throughput" if pre_ttft is None else f"decode {de.binding}",
                              None if pre_ttft is None else Pcts.of(pre_ttft), None, None, None, {"prefill": busy_p, "decode": 1.0},
                              {"prefill": k, "decode": b or float(engine.max_num_seqs)}, None, None, None,
                              notes=(f"overloaded: {why} cannot keep up at {rate_rps:.3g} req/s",))
    ttft = jittered(pre_ttft, getattr(pre_rep, "prefill_cv", 0.0))
    service = ttft - pre_wait
    if engine.kv_transfer == "layerwise":
        # the last layer on the wire, then the rest of a decode step in progress
        lat = LAYERWISE_KV_LATENCY_S if kv_latency_s is None else kv_latency_s
        kv_s = kv_bytes / dec_rep.model.layers / bw + lat + (1 - math.exp(-b)) * dm.t(1 + b) / 2
        first_gap = kv_s
    else:
        kv_s, first_gap = np.broadcast_to(np.asarray(whole, dtype=float), d.prompt.shape), 0.0
    if engine.tpot == "per-request":
        step, _ = _per_request_tpot(dm.t_many, b, shift, lam_d, steps, ca2)
        tpot = step + first_gap / steps
        tpot_p = Pcts.of(tpot)
        util_d = 1 - math.exp(-b)
        itl = itl_samples(dm.t_many, b + shift, steps, first_gap=first_gap)
    else:
        tpot_p, util_d = de.tpot_ms, de.utilization
        tpot = np.full(N_SAMPLES, tpot_p.p50 / 1e3)
        itl = itl_samples(dm.t_many, b, steps)
    ttft_ok = Pcts.of(ttft).at(d.q) <= d.ttft_slo_s * 1e3
    return PoolPrediction("disaggregated", True, de.binding if ttft_ok else "ttft", Pcts.of(ttft), tpot_p, float(np.mean(kv_s)) * 1e3,
                          float(kv_bytes.mean()), {"prefill": busy_p, "decode": util_d}, {"prefill": k, "decode": b},
                          float(pre_wait.mean()) * 1e3, float(service.mean()) * 1e3, float(ttft.mean() + (steps * tpot).mean()),
                          ttft * 1e3, tpot * 1e3, tuple(notes), itl_ms=Pcts.of(itl))


def _greedy_colocated_scv(rep, d: Demand, engine: Engine, workers: int, lam: float, life_s: float, fallback: float) -> float:
    """The SCV of a colocated worker's decode starts when it batches the runtime's way: its
    prefills simulated (queueing.greedy) at `lam` req/s spaced as the router's round robin over
    `workers` spaces them, the departures' window dispersion over a decode life `life_s` (s).
    A batch that ends starts all its prompts' decodes at once; the QNA rule for single prefills
    (decode_arrival_scv) has no batch-mates. `fallback` when the stage cannot keep up."""
    dep = greedy_departures(rep, d, lam, colocated_prefill_budget(d, engine), engine.prefill_slots, erlang=workers)
    return fallback if dep is None else window_dispersion(dep, life_s)


def predict_colocated(rep, d: Demand, engine: Engine, workers: int, rate_rps: float, chunk: int | None = None) -> PoolPrediction:
    """`workers` colocated replicas at `rate_rps`, running chunked prefill of `chunk` tokens (None:
    unchunked), prefill-prioritised: one prefill batch between decode steps."""
    steps = np.maximum(d.output - 1, 1)
    engine = engine.for_replica(rep.gpu, rep.tp)
    cm = role_model("colocated", rep, d, engine, chunk)
    lam = rate_rps / workers
    e = cm.eval(lam)
    over = (f"overloaded at {lam:.3g} req/s per worker",)
    if e.ttft_ms is None:
        return PoolPrediction("colocated", False, e.binding or "throughput", None, None, None, None, {"colocated": 1.0},
                              {"colocated": e.batch_mean}, None, None, None, notes=over)
    if engine.tpot != "per-request":
        itl = cm.itl_pcts(e.batch_mean, *cm.stalls(lam, e.batch_mean))
        return PoolPrediction("colocated", True, e.binding, e.ttft_ms, e.tpot_ms, None, None, {"colocated": e.utilization},
                              {"colocated": e.batch_mean}, None, None, None, itl_ms=itl)
    wait, mean_wait, _, k = cm.pre.wait_samples(lam)
    service = cm.pre.s1 + (cm.pre.T(k) - cm.pre.T(1))
    stall_share = lambda x: cm.stalls(lam, x)[2]  # noqa: E731
    b_max = 4 * engine.max_num_seqs + 10
    ca2 = 1.0
    if engine.decode_arrivals == "departures":
        # the prefill busy share that spaces decode arrivals, at the occupancy Poisson arrivals give
        busy_p = stall_share(occupancy(lam, float(steps.mean()), cm.dec.t_many, stall_share, b_max) or 0.0)
        ca2 = decode_arrival_scv("colocated", busy_p, _scv(service), 1, 1, workers)
        if engine.prefill_batching == "greedy-padded":
            ca2 = _greedy_colocated_scv(rep, d, engine, workers, lam, float(steps.mean()) * cm.dec.t(1.0 + e.batch_mean), ca2)
    shift = smooth_arrivals(ca2, steps * cm.dec.t(1.0))
    b = occupancy(lam, float(steps.mean()), cm.dec.t_many, stall_share, b_max, shift)
    if b is None:
        return PoolPrediction("colocated", False, "throughput", None, None, None, None, {"colocated": 1.0},
                              {"colocated": float(engine.max_num_seqs)}, None, None, None, notes=over)
    rate_stall, stall_s, share = cm.stalls(lam, b)
    step, life = _per_request_tpot(cm.dec.t_many, b, shift, lam, steps, ca2, share)
    stalled = stall_samples(np.random.default_rng(2), *cm.stall_events(lam, rate_stall, stall_s, share),
                            life + cm.own_prefill_s(lam, b), share)  # the same stalls as ColocatedModel.eval
    tpot = step + stalled / steps
    if cm.chunk:  # ColocatedModel's own chunked TTFT; no per-request samples
        ttft, tt_samples, wait_ms, service_ms = e.ttft_ms, None, None, None
        mean_ttft = e.ttft_ms.p50 / 1e3
    else:  # the terms ColocatedModel.eval sums: wait, own prefill, batch-mates, half a step
        t_s = jittered(wait + service + cm.dec.t(b) / 2, getattr(rep, "prefill_cv", 0.0))
        ttft, tt_samples, mean_ttft = Pcts.of(t_s), t_s * 1e3, float(t_s.mean())
        wait_ms, service_ms = mean_wait * 1e3, float(service.mean()) * 1e3
    util = share + (1 - share) * (1 - math.exp(-b))
    return PoolPrediction("colocated", True, e.binding, ttft, Pcts.of(tpot), None, None, {"colocated": min(util, 1.0)},
                          {"colocated": b}, wait_ms, service_ms, mean_ttft + float((steps * tpot).mean()),
                          tt_samples, tpot * 1e3, itl_ms=cm.itl_pcts(b + shift, rate_stall, stall_s, share))
