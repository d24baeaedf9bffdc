"""The pilot as the planning model predicts it: `plan`'s pools (planner.queueing.pools) with the
runtime's Engine and the pilot's limits, its step times slowed by the probed contention, and the
plan's simulator on the very schedule the replay sends (the closed forms' own check).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from planner.queueing.engine import engine_named
from planner.queueing.models import capacity
from planner.queueing.samples import Demand
from planner.queueing.pools import PoolPrediction as Prediction
from planner.queueing.pools import LAYERWISE_KV_LATENCY_S, engine_replica, predict_colocated, predict_split, role_model
from planner.steptime.adjust import Adjusted
from planner.pilot.derive import Pilot


# ---- prediction -----------------------------------------------------------------------------------
# The pilot is predicted by the planning model itself (planner.queueing.pools, `plan`'s pools at a
# rate) configured as this project's runtime (Engine "planner") with the pilot's limits: the
# contract `planner validate --predict-only` == `planner plan --engine planner --current ...`.
def pilot_engine(pilot: Pilot):
    """The engine the pilot runs: this project's runtime with the pilot's ServeConfig limits, or
    an endpoint's engine (vllm) with the limits its profile recorded (0: the engine's defaults)."""
    if pilot.engine == "planner":
        return engine_named("planner").with_limits(pilot.max_seqs, pilot.max_batch_tokens, pilot.chunked_prefill)
    return engine_named(pilot.engine).with_limits(pilot.max_seqs or None, pilot.max_batch_tokens or None)


def relaxed(d: Demand) -> Demand:
    """The same lengths without SLOs: feasibility is then stability (and batch limits) only."""
    return replace(d, ttft_slo_s=math.inf, tpot_slo_s=math.inf, itl_slo_s=None)


def pilot_capacity(pilot: Pilot, rep, d: Demand) -> tuple[float, str]:
    """Predicted throughput capacity of the whole pilot (req/s) and what limits it: the largest
    rate each role's model sustains without SLOs (queueing.capacity) times its workers, the
    smaller pool."""
    eng, dr = pilot_engine(pilot), relaxed(d)
    if pilot.mode == "colocated":
        cap, _, binding = capacity(role_model("colocated", rep, dr, eng, eng.colocated_modes[0]))
        return cap * pilot.workers, f"colocated {binding or 'throughput'}"
    cp, _, bp = capacity(role_model("prefill", rep, dr, eng))
    cd, _, bd = capacity(role_model("decode", rep, dr, eng))
    caps = {"prefill": (cp * pilot.prefill_workers, bp), "decode": (cd * pilot.decode_workers, bd)}
    role = min(caps, key=lambda r: caps[r][0])
    return caps[role][0], f"{role} {caps[role][1] or 'throughput'}"


def balance_split(pilot: Pilot, rep, d: Demand, total: int) -> tuple[int, int]:
    """Without a plan: the (prefill, decode) split of `total` workers with the most capacity,
    min(p * cap_prefill, d * cap_decode): the local plan's rate matching."""
    eng, dr = pilot_engine(pilot), relaxed(d)
    cp, cd = capacity(role_model("prefill", rep, dr, eng))[0], capacity(role_model("decode", rep, dr, eng))[0]
    return max(((p, total - p) for p in range(1, total)), key=lambda s: (min(s[0] * cp, s[1] * cd), -abs(s[0] - s[1])))


def predict(pilot: Pilot, rep, d: Demand, transport_bytes_s: float | None = None, kv_latency_s: float | None = None) -> Prediction:
    """The pilot at its rate, predicted by the planning model (planner.queueing.pools) as this
    runtime runs (pilot_engine); `rep` is the local replica (with contention, pilot_replica),
    `transport_bytes_s` the measured local KV transport (B/s)."""
    eng = pilot_engine(pilot)
    if pilot.mode == "colocated":
        return predict_colocated(rep, d, eng, pilot.workers, pilot.rate_rps, eng.for_replica(rep.gpu, rep.tp).colocated_modes[0])
    if transport_bytes_s is None and pilot.engine != "planner":  # an endpoint's split: the KV path plan assumes
        from planner.sizing.capacities import split_link_bytes_s

        transport_bytes_s = split_link_bytes_s(rep.gpu, rep.tp, rep.gpu, rep.tp)
    return predict_split(rep, rep, d, eng, pilot.prefill_workers, pilot.decode_workers, pilot.rate_rps, transport_bytes_s, kv_latency_s)


def pilot_replica(pilot: Pilot, rep, d: Demand, contention, rate_rps: float, transport_bytes_s: float | None = None,
                  iters: int = 4) -> tuple[object, dict]:
    """(replica, slowdowns) for the pilot at `rate_rps` on its serving stack, beside its own busy
    neighbours (planner.pilot.probe): prefill times x the stack's lone-prompt factor (in_situ:
    the probe's lone TTFT / the profile's prefill of that prompt) x (1 + kappa x the neighbour's
    predicted busy share), decode steps x (1 + kappa x the neighbour's share), with the probe's
    prefill jitter; the shares solved by fixed-point iteration (a slower prefill keeps the decode
    worker's neighbour busy longer, and so on). No contention measured: the replica as it is."""
    if contention is None:
        return rep, {"prefill": 0.0, "decode": 0.0}
    s = in_situ_prefill(rep, contention)
    cv = contention.ttft_cv or None
    slowed = lambda a, b: Adjusted(rep, s * (1 + a) - 1, b, prefill_cv=cv)  # noqa: E731
    a = b = 0.0
    p = replace(pilot, rate_rps=rate_rps)
    for _ in range(iters):
        u = predict(p, slowed(a, b), d, transport_bytes_s).utilization
        if pilot.mode == "colocated":
            a = b = contention.colocated * min(1.0, u.get("colocated", 1.0)) if pilot.workers >= 2 else 0.0
        else:
            a = contention.prefill * min(1.0, u.get("decode", 1.0))
            b = contention.decode * min(1.0, u.get("prefill", 1.0))
    out = slowed(a, b)
    return out, {"prefill": out.prefill_slowdown, "decode": b, "in_situ_prefill": s, "prefill_cv": contention.ttft_cv}


def in_situ_prefill(rep, contention) -> float:
    """The serving stack's factor on a lone prefill, within 0.5-2 (a factor outside that is a
    broken probe, not the stack): the probe's lone TTFT through the pilot's API over the
    profile's prefill of the same prompt, or the pooled factor validate set
    (Contention.prefill_factor, planner.pilot.device.pooled_prefill_factor); 1 when the probe
    timed no lone prompt."""
    if contention.prefill_factor > 0:
        return float(np.clip(contention.prefill_factor, 0.5, 2.0))
    if not contention.alone_ttft_s or not contention.prompt_tokens:
        return 1.0
    t = float(rep.prefill_time_s(np.array([float(contention.prompt_tokens)])))
    return float(np.clip(contention.alone_ttft_s / t, 0.5, 2.0)) if t > 0 else 1.0


def probe_streams(pilot: Pilot, rep, d: Demand) -> int:
    """Background decoding streams for the contention probe of a split (planner.pilot.probe):
    the decode batch the pilot is predicted to run at its rate (before contention), per decode
    worker, at least 2: a decode worker's pressure on the shared cores grows with its batch,
    so the probe measures it where the pilot will run."""
    b = predict(pilot, rep, d).batch_mean.get("decode")
    per = round(b) if b is not None and math.isfinite(b) else 4
    return max(2, min(pilot.max_seqs, per)) * max(1, pilot.decode_workers)


def contended_capacity(pilot: Pilot, rep, d: Demand, contention, iters: int = 3) -> tuple[float, str]:
    """pilot_capacity of the replica as the pilot runs it (pilot_replica: the slowdowns the pilot
    suffers near that rate)."""
    cap, limit = pilot_capacity(pilot, pilot_replica(pilot, rep, d, None, 0.0)[0], d)
    for _ in range(iters if contention is not None else 0):
        rep_c, _ = pilot_replica(pilot, rep, d, contention, 0.98 * cap)
        cap, limit = pilot_capacity(pilot, rep_c, d)
    return cap, limit


def simulate_pilot(pilot: Pilot, rep, d: Demand, schedule, transport_bytes_s: float | None = None,
                   kv_latency_s: float = LAYERWISE_KV_LATENCY_S):
    """The plan's discrete-event simulator (planner.simulate.des, `plan --simulate`'s check) run on the
    very schedule the replay sends, with the replica's step times and the runtime's rules:
    a prefill batch is padded to its longest prompt (time of rows x longest), at most
    max_batch_tokens padded tokens and 16 prompts; decode batches of at most max_seqs; requests go to the
    least-loaded worker; the KV transfer (last layer on the wire) delays the second token and
    admission waits for a step boundary. No warm-up is dropped: the replay measures every request.
    Where the closed forms (`predict`) and this disagree, the gap is the closed forms' error; where
    this and the measurement disagree, it is the step-time model's or the runtime's."""
    from planner.simulate.des import simulate_colocated, simulate_disaggregated

    eng = pilot_engine(pilot)
    rep = engine_replica(rep, d, eng)  # the same padded attention the closed forms use
    p = np.array([r.prompt_tokens for r in schedule])
    out = np.array([r.output_tokens for r in schedule])
    at = np.array([r.at_s for r in schedule], dtype=float)

    def prefill_s(lengths):
        return rep.prefill_time_s(np.full(len(lengths), float(np.max(lengths))))  # right-padded rows

    def step_s(b, c):
        return rep.decode_step_s(b, c)

    if pilot.mode == "colocated":
        return simulate_colocated(p, out, prefill_s, step_s, arrival_s=at, n_replicas=pilot.workers,
                                  max_batch_tokens=pilot.max_batch_tokens, max_decode_batch=pilot.max_seqs,
                                  chunked=pilot.chunked_prefill, chunk_tokens=max(pilot.max_batch_tokens, pilot.max_seqs + 1),
                                  routing="jsq", warmup_frac=0.0, padded_budget=True)
    layers = rep.model.layers
    bw = transport_bytes_s or math.inf
    return simulate_disaggregated(p, out, prefill_s, step_s, lambda n: n * rep.kv_bytes_per_token / layers / bw + kv_latency_s,
                                  arrival_s=at, n_prefill=pilot.prefill_workers, n_decode=pilot.decode_workers,
                                  max_prefill_tokens=pilot.max_batch_tokens, max_prefill_batch=eng.prefill_slots,
                                  max_decode_batch=pilot.max_seqs, routing="jsq", warmup_frac=0.0, padded_budget=True)


def _span_s(schedule) -> float:
    """Seconds from a schedule's first arrival to its last."""
    return max(r.at_s for r in schedule) - min(r.at_s for r in schedule)


def replayed_rate(schedule, nominal_rps: float) -> float:
    """The arrival rate a schedule sends (req/s): its n - 1 gaps over the span from the first
    arrival to the last; `nominal_rps` when it has fewer than 2 arrivals or no span. A draw of n
    Poisson arrivals lands within about 1/sqrt(n) of its nominal rate (13% at 60 requests); the
    fidelity pilots' seed-0 schedules all sent 0.5-15% less than nominal, so predicting at the
    nominal rate counted the draw as the model's error."""
    span = _span_s(schedule) if len(schedule) > 1 else 0.0
    return (len(schedule) - 1) / span if span > 0 else float(nominal_rps)


def predict_replay(pilot: Pilot, rep, d: Demand, contention, schedule, transport_bytes_s: float | None = None):
    """(the pilot at the rate `schedule` sends, its replica as it runs (pilot_replica), the
    slowdowns, the prediction): what validate predicts for a replay, the load it sends, not the
    rate it was drawn at (replayed_rate); the prediction's notes say which."""
    sent = replace(pilot, rate_rps=replayed_rate(schedule, pilot.rate_rps))
    rep, slow = pilot_replica(sent, rep, d, contention, sent.rate_rps, transport_bytes_s)
    pred = predict(sent, rep, d, transport_bytes_s)
    if len(schedule) > 1:
        pred = replace(pred, notes=pred.notes + (
            f"predicted at the rate the schedule sends, {sent.rate_rps:.3g} req/s ({len(schedule)} arrivals over "
            f"{_span_s(schedule):.1f} s; drawn at {pilot.rate_rps:.3g} req/s)",))
    return sent, rep, slow, pred


def predicted_throughput(schedule, e2e_s_mean: float | None, capacity_rps: float) -> tuple[float | None, float | None]:
    """(req/s, output tok/s) over the run's makespan, first send to last completion: the
    schedule's requests over (last arrival + mean end-to-end) when the pilot keeps up, else the
    capacity. The schedule (arrival times, lengths) is known before the run, like the workload."""
    if not schedule:
        return None, None
    n = len(schedule)
    out = sum(r.output_tokens for r in schedule)
    span = _span_s(schedule)
    if e2e_s_mean is None:
        return capacity_rps, capacity_rps * out / n
    makespan = span + e2e_s_mean
    return n / makespan, out / makespan
