"""Run a pilot of a split on this machine and put measured beside predicted, stage by stage.

The pipeline, one function each:

    derive_pilot     the plan's prefill:decode ratio and per-replica load, scaled to the local
                     workers (or, without a plan, the split that balances the two pools here)
    local_replica    a profile of this device (given, cached under profiles/, or measured now with
                     the pilot's threads per worker) -> calibrate -> Replica on the local device
                     (default: the profile's measured step times, as `plan --profile` uses them)
    measure_contention  a CPU pilot's workers share cores: a few seconds' probe of the pilot's
                     split (planner.pilot.probe) says how much each slows beside a busy neighbour
    pilot_replica    the replica as the pilot runs it: times x (1 + kappa x the neighbour's
                     predicted busy share), decode attention read to the batch's longest context
    predict          the plan's queueing models (planner.queueing.models) at the pilot's per-replica load,
                     with the runtime's own batching limits; see `predict` for where this runtime
                     differs from what `plan` assumes, and what that changes
    simulate_pilot   the plan's discrete-event simulator on the very schedule the replay sends:
                     the closed forms' own check, reported beside them ("simulated")
    run_pilot        `planner serve` with the pilot's split (or an --endpoint), warm-up, open-loop
                     replay (planner.pilot.replay), /metrics before and after, worker CPU time
    compare          predicted vs measured, relative error (predicted - measured) / measured

`validate(...)` joins them and returns a ValidateResult whose `to_dict()` is the JSON contract:
`pilot`, `metrics` (each of METRICS -> {predicted, measured, rel_error}), `requests` {sent,
completed, failed, lost}, `valid`, `samples` {ttft_ms, tpot_ms}, and the details behind them.

A result is `valid` only when nothing spoiled the comparison: no failed request, no worker death,
no interruption, and no pilot process starved of CPU (run-queue waits, /proc/<pid>/schedstat:
on a shared machine a pilot measures everyone's work). An invalid result still reports everything
it measured, but its errors are not the model's errors. torch is imported only to profile;
aiohttp only to replay.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from planner.errors import BadInput
from planner.queueing.samples import Demand
from planner.queueing.pools import PoolPrediction as Prediction
from planner.pilot.compare import RunResult, ValidateResult
from planner.pilot.derive import DEFAULT_INPUT_LEN, DEFAULT_OUTPUT_LEN, RUNTIME_MAX_BATCH_TOKENS, RUNTIME_MAX_SEQS, Pilot, default_max_workers, derive_pilot, endpoint_pilot
from planner.pilot.device import (STEP_TIME_MODELS, cached_profile_path, ensure_profile, local_replica, measure_transport,
                                  pooled_prefill_factor, profile_age_h, profile_grid, profile_noise)
from planner.pilot.predict import (balance_split, contended_capacity, in_situ_prefill, pilot_engine, predict, predict_replay,
                                   predicted_throughput, probe_streams, simulate_pilot)
from planner.pilot.run import CONTENTION_CORES, machine_busy_cores, measure_contention, run_pilot, set_priority

# ---- the whole thing -----------------------------------------------------------------------------
def _length_flag(dist) -> str:
    """A length distribution as the --input-len/--output-len text that parses back to it."""
    if dist.kind == "fixed":
        return f"{dist.value_tok:g}"
    if dist.kind == "uniform":
        return f"uniform:{dist.low_tok:g}-{dist.high_tok:g}"
    if dist.kind == "lognormal" and math.isinf(dist.high_tok):
        return f"lognormal:mean={dist.mean!r},sigma={dist.sigma!r}"
    return "<as in the workload file>"


@dataclass
class PredictOnly:
    """`validate --predict-only`: the derived pilot and the planning model's prediction of it."""

    pilot: Pilot
    prediction: Prediction
    workload: object
    calibration: dict
    notes: list

    def plan_command(self, profile: str) -> str:
        """The `planner plan` call that predicts the same pools (the contract a test holds)."""
        p, w = self.pilot, self.workload
        pools = f"--current {p.workers}xlocal" if p.mode == "colocated" else f"--current-split {p.prefill_workers}xlocal+{p.decode_workers}xlocal"
        return (f"planner plan --model {p.model} --profile {profile} --gpus local --engine planner {pools} --rate {p.rate_rps!r} "
                f"--input-len {_length_flag(w.input)} --output-len {_length_flag(w.output)} --weight-dtype {p.dtype} --kv-dtype {p.dtype}")

    def to_dict(self) -> dict:
        pr = self.prediction
        return {"pilot": self.pilot.to_dict(), "predict_only": True, "predicted": pr.predicted(), "feasible": pr.feasible,
                "binding": pr.binding, "utilization": pr.utilization, "batch_mean": pr.batch_mean,
                "kv_transfer_ms_mean": pr.kv_transfer_ms_mean, "engine": pilot_engine(self.pilot).describe(),
                "workload": self.workload.to_dict(), "calibration": self.calibration, "notes": list(self.notes) + list(pr.notes),
                "equivalent_plan": self.plan_command(self.calibration.get("path", "PROFILE"))}


def _check_flags(requests, duration_s, endpoint, compare_colocated, roofline, predict_only, engine) -> None:
    """Refuse contradictory flags before minutes of profiling, not after."""
    if requests is not None and requests < 1:
        raise BadInput(f"--requests must be >= 1, got {requests}")
    if requests is None and not (duration_s and duration_s > 0):
        raise BadInput(f"--duration must be > 0 s, got {duration_s}")
    if endpoint and compare_colocated:
        raise BadInput("--compare-colocated starts local pilots: it cannot be combined with --endpoint")
    if roofline not in STEP_TIME_MODELS:  # before minutes of profiling, not after
        raise BadInput(f"--roofline {roofline!r}: expected {', '.join(STEP_TIME_MODELS)}")
    if predict_only and endpoint:
        raise BadInput("--predict-only predicts a local pilot from its profile: it cannot be combined with --endpoint")
    if endpoint is None and engine not in (None, "planner"):
        raise BadInput(f"--engine {engine!r}: a local pilot runs this project's runtime (planner serve); "
                       "give --endpoint URL to validate another engine")


def _local_side(spec, model, device, pilot, d, profile, roofline, predict_only, nice, notes, say, fresh=False) -> tuple:
    """(replica, calibration) of a local pilot: a profile of this device (given, cached, or
    measured now with the pilot's threads per worker) and what it says about its own quality."""
    if nice:  # the profile's times must not be other processes' either
        notes.extend(set_priority([os.getpid()], nice))
    if predict_only and profile is None:
        cached = cached_profile_path(model, device, pilot.threads_per_worker, pilot.dtype, profile_grid(d, pilot.max_seqs))
        if not cached.exists():
            raise BadInput("--predict-only runs nothing: give --profile FILE (a `planner profile local` profile of this device)")
    try:
        path = ensure_profile(model, device, pilot.threads_per_worker, pilot.dtype, profile_grid(d, pilot.max_seqs), profile, say,
                              fresh)
    finally:
        if nice:
            set_priority([os.getpid()], 0)
    rep, calibration = local_replica(spec, path, roofline)
    noisy = profile_noise(path)
    if noisy is not None and noisy > 0.3:
        notes.append(f"the profile is noisy: its points' p10-p90 spread is {noisy:.0%} of the median (median over points); "
                     "a busy machine? delete it and measure again when idle")
    age_h = profile_age_h(path)
    if device == "cpu" and age_h is not None and age_h > 1.0:
        notes.append(f"the profile was measured {age_h:.1f} h ago: this machine's speed may have drifted since "
                     "(--reprofile measures it again)")
    t_prof = calibration.get("torch_threads")
    if device == "cpu" and t_prof and t_prof != pilot.threads_per_worker:
        notes.append(f"the profile ran {t_prof} torch threads, each pilot worker runs {pilot.threads_per_worker}: "
                     "step times are extrapolated")
    return rep, calibration


def _with_rate(pilot: Pilot, cap: float, limit: str, pilot_rate: float | None, traffic_rps: float | None) -> Pilot:
    """The pilot at its rate: --pilot-rate, or its load fraction of the predicted capacity `cap`
    (req/s, bound by `limit`), with the share of production traffic that is."""
    if pilot_rate is not None:
        rate = float(pilot_rate)
        kept = tuple(x for x in pilot.why if not x.startswith("load:"))
        pilot = replace(pilot, why=kept + (f"rate {rate:.3g} req/s given (--pilot-rate)",))
    else:
        if cap <= 0:
            raise BadInput("cannot choose a pilot rate: no predicted capacity (give --pilot-rate)")
        rate = pilot.load_frac * cap
    pilot = replace(pilot, rate_rps=rate, capacity_rps=cap, load_frac=rate / cap if cap > 0 else pilot.load_frac,
                    traffic_share=rate / traffic_rps if traffic_rps else None,
                    why=pilot.why + (f"predicted capacity {cap:.3g} req/s (bound: {limit}); pilot rate {rate:.3g} req/s",))
    if pilot.traffic_share is not None:
        pilot = replace(pilot, why=pilot.why + (f"the pilot carries {pilot.traffic_share:.3g} of the workload's {traffic_rps:.4g} req/s "
                                                "(on this device; the plan's replicas are other hardware)",))
    return pilot


def _schedule(workload, rate: float, requests, duration_s, min_requests, replay_trace: bool, seed: int, cap_len: int, notes: list):
    """What the replay sends: the trace's own timing scaled to `rate` (req/s), or Poisson arrivals;
    a slow pilot replays at least `min_requests` (percentiles of a dozen requests are noise)."""
    from planner.pilot import replay as rp

    if min_requests and requests is None and duration_s and rate * duration_s < min_requests:
        requests = int(min_requests)
        notes.append(f"{requests} requests replayed (more than {duration_s:g} s of arrivals at {rate:.3g} req/s): --min-requests")
    if workload.timestamps_s is not None and replay_trace:
        notes.append("arrivals: the trace's own timestamps, scaled to the pilot rate")
        return rp.trace_schedule(workload, rate, requests, None if requests else duration_s, cap_len)
    return rp.poisson_schedule(workload, rate, requests, None if requests else duration_s, seed, cap_len)


def _endpoint_side(spec, model, engine, profile, roofline, mode, plan, prefill_workers, decode_workers, workers,
                   load_frac, notes) -> tuple:
    """(replica, calibration, pilot) for a pilot at --endpoint: predicted from a profile of that
    very engine (a profile of another engine, dtype or device cannot predict it: refused), or,
    without a profile, measured only."""
    if profile is None:
        notes.append("no --profile of the endpoint: nothing to predict, measured values only "
                     "(profile it first: planner profile endpoint --url URL --gpu KEY|local --tp N ...)")
        return None, {"status": "no profile"}, endpoint_pilot(model, engine or "unknown", mode, plan, prefill_workers,
                                                               decode_workers, workers, load_frac, None, None, "no profile")
    path = Path(profile)
    if not path.exists():
        raise BadInput(f"--profile {path}: file not found")
    rep, calibration = local_replica(spec, path, roofline)
    prof_eng = calibration["engine"]
    if calibration["kind"] != "endpoint":
        raise BadInput(f"--profile {path}: a local profile times this project's torch engine, not the server at --endpoint: "
                       "profile the endpoint itself (planner profile endpoint)")
    name = engine or prof_eng["name"]
    if prof_eng["name"] != name:
        raise BadInput(f"--profile {path} measured engine {prof_eng['name']!r}, --engine is {name!r}: "
                       "a prediction needs a profile of the engine being validated")
    from planner.queueing.engine import ENGINE_NAMES

    if name not in ENGINE_NAMES:
        raise BadInput(f"--engine {name!r}: no model of that engine (known: {', '.join(ENGINE_NAMES)})")
    src = f"profile {path}: {name} {prof_eng.get('version') or ''}".rstrip()
    pilot = endpoint_pilot(model, name, mode, plan, prefill_workers, decode_workers, workers, load_frac,
                           prof_eng["max_num_seqs"], prof_eng["max_num_batched_tokens"], src)
    return rep, calibration, pilot


def validate(model: str = "tiny", device: str = "cpu", workload=None, plan: dict | None = None,
             max_workers: int | None = None, mode: str | None = None, prefill_workers: int | None = None,
             decode_workers: int | None = None, workers: int | None = None, load_frac: float | None = None,
             pilot_rate: float | None = None, duration_s: float | None = 40.0, requests: int | None = None,
             profile: str | Path | None = None, endpoint: str | None = None, served_model: str | None = None,
             compare_colocated: bool = False, seed: int = 0, timeout_s: float = 60.0,
             max_seqs: int = RUNTIME_MAX_SEQS, max_batch_tokens: int = RUNTIME_MAX_BATCH_TOKENS,
             chunked_prefill: bool = False, replay_trace: bool = True, progress: bool = True,
             traffic_rps: float | None = None, roofline: str = "profile", nice: int = 0, on_serving=None,
             probe: bool = True, min_requests: int | None = None, predict_only: bool = False, engine: str | None = None,
             reprofile: bool = False, say=print):
    """Derive, predict, run and compare a pilot (module docstring). `workload` is a planner
    Workload (None: validate's defaults, DEFAULT_INPUT_LEN / DEFAULT_OUTPUT_LEN at rate 1, whose
    absolute rate only matters for a trace); `plan` a `plan_summary` of a plan JSON; `traffic_rps`
    the production rate the pilot's share is stated against (default: the plan's).
    `on_serving(handle)` is called as the measured replay starts (tests inject faults with it).
    `predict_only`: derive and predict the pilot, run nothing (no profiling, probe or replay), and
    return a PredictOnly: the prediction `planner plan --engine planner --current ...` makes too.
    `engine`: the serving engine at `endpoint` (planner.queueing.engine; default: the one its
    profile measured); a local pilot runs this project's runtime ("planner"). `reprofile`: measure
    the local profile again even when a cached one exists."""
    from planner.specs.models import resolve_model
    from planner.workload.workload import workload_from_flags

    spec = resolve_model(model)
    if traffic_rps is None and plan:
        traffic_rps = plan["workload"].rate_rps
    if workload is None:
        workload = plan["workload"] if plan else workload_from_flags(rate=1.0, input_len=DEFAULT_INPUT_LEN, output_len=DEFAULT_OUTPUT_LEN)
    _check_flags(requests, duration_s, endpoint, compare_colocated, roofline, predict_only, engine)
    pilot = None if endpoint else derive_pilot(model, device, workload, plan, max_workers, mode, prefill_workers, decode_workers,
                                               workers, load_frac, max_seqs, max_batch_tokens, chunked_prefill)
    notes: list = []
    cap_len = spec.max_position
    d = _servable_demand(workload, cap_len, notes)

    rep, calibration = None, {"status": "no profile"}
    if endpoint is not None:
        rep, calibration, pilot = _endpoint_side(spec, model, engine, profile, roofline, mode, plan, prefill_workers,
                                                 decode_workers, workers, load_frac, notes)
    else:
        rep, calibration = _local_side(spec, model, device, pilot, d, profile, roofline, predict_only, nice, notes, say,
                                       reprofile and not predict_only)

    if pilot.mode == "disaggregated" and not pilot.prefill_workers and endpoint is None:
        total = max_workers or default_max_workers(device)
        p, dd = balance_split(pilot, rep, d, total) if rep is not None else (1, total - 1)
        pilot = replace(pilot, prefill_workers=p, decode_workers=dd,
                        why=pilot.why + (f"split {p} + {dd}: the most capacity from {total} workers, "
                                         "max of min(p x prefill capacity, d x decode capacity)",))
    contention = None
    if rep is not None and endpoint is None and device == "cpu" and probe and not predict_only:
        contention, calibration = _probe_contention(pilot, rep, d, cap_len, pilot_rate, traffic_rps, timeout_s, say, nice, calibration)
    cap, limit = contended_capacity(pilot, rep, d, contention) if rep is not None else (0.0, "unknown")
    pilot = _with_rate(pilot, cap, limit, pilot_rate, traffic_rps)
    rate = pilot.rate_rps
    if predict_only:
        from planner.sizing.capacities import split_link_bytes_s

        # The KV path plan assumes for these devices (nothing is measured): the contract with plan.
        link = split_link_bytes_s(rep.gpu, 1, rep.gpu, 1) if pilot.mode == "disaggregated" else None
        return PredictOnly(pilot, predict(pilot, rep, d, link), workload, calibration, notes)
    schedule = _schedule(workload, rate, requests, duration_s, min_requests, replay_trace, seed, cap_len, notes)
    longest = max(r.prompt_tokens + r.output_tokens for r in schedule)
    pilot = replace(pilot, max_model_len=min(cap_len, int(math.ceil((longest + 1) / 64) * 64)))  # less KV cache to allocate
    transport = _kv_transport(rep, d, spec) if pilot.mode == "disaggregated" and rep is not None and endpoint is None else {}
    if endpoint is None and device == "cpu":
        _warn_if_busy(say)
    primary = _run_one(pilot, rep, d, schedule, workload, transport, endpoint, timeout_s, seed, progress, on_serving, say,
                       served_model, nice, contention)
    result = ValidateResult(primary, workload, calibration, transport, notes)
    if compare_colocated and not primary.measurement.interrupted:
        col = pilot.as_colocated()
        cont_c = measure_contention(col, d, cap_len, timeout_s, say, nice) if contention is not None else None
        cont_c = _pooled(cont_c, rep, col, calibration, say)
        cap_c, limit_c = contended_capacity(col, rep, d, cont_c)
        col = replace(col, capacity_rps=cap_c, load_frac=rate / cap_c if cap_c else 0.0,
                      why=col.why + (f"colocated capacity {cap_c:.3g} req/s (bound: {limit_c}) at the same {rate:.3g} req/s",))
        result.colocated = _run_one(col, rep, d, schedule, workload, {}, None, timeout_s, seed, progress, None, say,
                                    served_model, nice, cont_c)
    return result


def _probe_contention(pilot, rep, d: Demand, cap_len: int, pilot_rate, traffic_rps, timeout_s: float, say, nice: int,
                      calibration: dict) -> tuple:
    """(contention or None, calibration with it) of a CPU pilot: the probe of
    planner.pilot.run.measure_contention, its background streams at the decode batch predicted
    for the pilot's rate before contention."""
    guess = _with_rate(pilot, *contended_capacity(pilot, rep, d, None), pilot_rate, traffic_rps)
    c = measure_contention(pilot, d, cap_len, timeout_s, say, nice, probe_streams(guess, rep, d))
    c = _pooled(c, rep, pilot, calibration, say)
    return c, (calibration if c is None else {**calibration, "contention": c.to_dict()})


def _pooled(c, rep, pilot, calibration: dict, say):
    """The probe `c` with the stack's factor pooled over the recent probes of this profile
    (planner.pilot.device.pooled_prefill_factor); as it is without a lone prompt or a profile file."""
    if c is None or not c.alone_ttft_s or not calibration.get("path"):
        return c
    own = in_situ_prefill(rep, c)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")  # as a profile's own stamp
    entry = {"created": created, "mode": pilot.mode, "prompt_tokens": c.prompt_tokens,
             "alone_ttft_ms": round(c.alone_ttft_s * 1e3, 3)}
    pooled, n = pooled_prefill_factor(calibration["path"], own, entry, say)
    return replace(c, prefill_factor=pooled, detail={**c.detail, "prefill_factor_own": round(own, 4), "prefill_factor_probes": n})


def _pooled_note(c) -> str:
    """How the stack's factor was pooled, for the contention note ("" when it was not)."""
    n, own = c.detail.get("prefill_factor_probes"), c.detail.get("prefill_factor_own")
    if not n or own is None:
        return ""
    return f": the median of the last {n} probes with this profile, this one's x{own:.3f}"


def _servable_demand(workload, cap_len: int, notes: list) -> Demand:
    """The workload's demand with lengths as the pilot can serve them (clipped to the model's
    context, cap_len tokens), for the prediction and the replay alike."""
    from planner.pilot import replay as rp

    d = Demand.from_workload(workload)
    pr, out = rp._clip_lengths(d.prompt, d.output, cap_len)
    if (pr != d.prompt).any() or (out != d.output).any():
        notes.append(f"lengths clipped to the model's context ({cap_len} tokens)")
    return replace(d, prompt=pr.astype(float), output=out.astype(float))


def _kv_transport(rep, d: Demand, spec) -> dict:
    """The local split's KV wire: one mean layer message over loopback ZeroMQ, measured unloaded."""
    layer_bytes = int(d.mean_prompt * rep.kv_bytes_per_token / spec.layers)
    return {"kind": "zeromq tcp loopback", "message_bytes": layer_bytes, "measured_bytes_per_s": measure_transport(layer_bytes),
            "note": "PUSH->PULL of one mean KV layer message, unloaded: the wire-time ceiling"}


def _warn_if_busy(say) -> None:
    busy = machine_busy_cores(1.0)
    if busy is not None and busy > CONTENTION_CORES:
        say(f"warning: this machine is already busy ({busy:.2f} of {os.cpu_count()} cores in use by other processes): "
            "the pilot will share the CPU and is likely to be marked invalid")


def _run_one(pilot, rep, d, schedule, workload, transport, endpoint, timeout_s, seed, progress, on_serving, say, served_model,
             nice=0, contention=None) -> RunResult:
    simulated = None
    slow = {}
    if rep is not None:
        bw = transport.get("measured_bytes_per_s")
        sent, rep, slow, pred = predict_replay(pilot, rep, d, contention, schedule, bw)
        if contention is not None:
            pred = replace(pred, notes=pred.notes + (
                "workers share this machine's cores: prefill times x{:.3f} (the stack's lone prompt x{:.3f}{}, then probed "
                "contention x the neighbour's predicted busy share), decode steps x{:.3f}; TTFT jitter {:.0%} (std / mean "
                "of the probe's lone prompts)".format(1 + slow["prefill"], slow["in_situ_prefill"], _pooled_note(contention),
                                                      1 + slow["decode"], slow["prefill_cv"]),))
        try:
            sr = simulate_pilot(sent, rep, d, schedule, bw)
            simulated = {**sr.summary(), "e2e_s_mean": float(np.mean(sr.e2e_s))}
        except BadInput as e:  # the simulator refuses a configuration: say so, keep the closed forms
            say(f"simulation skipped: {e}")
    else:
        pred = Prediction(pilot.mode, False, "no profile", None, None, None, None, {}, {}, None, None, None)
    thr = predicted_throughput(schedule, pred.e2e_s_mean, pilot.capacity_rps) if rep is not None else (None, None)
    say(f"pilot: {pilot.label()} at {pilot.rate_rps:.3g} req/s, {len(schedule)} requests over "
        f"{schedule[-1].at_s:.0f} s")
    meas = run_pilot(pilot, schedule, endpoint, timeout_s, seed, progress, on_serving, say, served_model, nice)
    return RunResult(pilot, pred, meas, thr, workload.slo, len(schedule), simulated, contention, slow, schedule, rep)
