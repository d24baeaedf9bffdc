"""Predicted beside measured: relative errors (predicted - measured) / measured, stage by stage,
and when a run is valid (nothing spoiled the comparison: no failed request, no worker death,
no interruption, no pilot process starved of CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from planner.queueing.pools import PoolPrediction as Prediction
from planner.steptime.adjust import without_pad
from planner.pilot.derive import Pilot
from planner.pilot.run import Measurement, STARVED_SHARE


METRICS = ("ttft_ms_p50", "ttft_ms_p90", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p90", "tpot_ms_p99",
           "throughput_rps", "output_tokens_per_s", "kv_transfer_ms_mean")
#: Runtime defaults the prediction must share, read from the runtime's own config.

# ---- comparing --------------------------------------------------------------------------------------
def rel_error(predicted, measured) -> float | None:
    """(predicted - measured) / measured; None when either is missing or measured is 0."""
    if predicted is None or measured is None or not math.isfinite(predicted) or not math.isfinite(measured) or measured == 0:
        return None
    return (predicted - measured) / measured


def _entry(p, m) -> dict:
    r = lambda x: None if x is None or not math.isfinite(x) else round(float(x), 4)  # noqa: E731
    e = rel_error(p, m)
    return {"predicted": r(p), "measured": r(m), "rel_error": None if e is None else round(e, 4)}


@dataclass
class RunResult:
    """One pilot run: the pilot, its prediction and measurement, compared."""

    pilot: Pilot
    prediction: Prediction
    measurement: Measurement
    throughput_pred: tuple
    slo: object
    schedule_len: int
    simulated: dict | None = None  # SimResult.summary() of simulate_pilot
    contention: object = None  # planner.pilot.probe.Contention the prediction used (None: not probed)
    slowdowns: dict = field(default_factory=dict)  # role -> share its times were scaled by (pilot_replica)
    schedule: list = field(default=None, repr=False)  # the replayed ReplayRequests
    replica: object = field(default=None, repr=False)  # the step-time model that timed the prediction (pilot_replica)

    @property
    def requests(self) -> dict:
        return self.measurement.state.counts()

    def invalid_reasons(self) -> list[str]:
        m, why = self.measurement, []
        c = self.requests
        if m.interrupted:
            why.append("interrupted before the schedule finished")
        if c["failed"]:
            why.append(f"{c['failed']} of {c['sent']} requests failed")
        if c["lost"]:
            why.append(f"{c['lost']} requests lost (neither completed nor failed)")
        if m.worker_deaths:
            why.append(f"{m.worker_deaths:g} worker(s) died during the run")
        if c["sent"] < self.schedule_len and not m.interrupted:
            why.append(f"only {c['sent']} of {self.schedule_len} scheduled requests were sent")
        if c["completed"] == 0:
            why.append("no request completed")
        starved = {n: w for n, w in (m.cpu.get("run_queue_wait_share") or {}).items() if w > STARVED_SHARE}
        if starved:
            worst = max(starved, key=starved.get)
            foreign = m.cpu.get("foreign_cores")
            why.append(f"the pilot was starved of CPU: {worst} waited {starved[worst]:.0%} of the run for a core"
                       + (f" (other processes used {foreign:.2f} of {m.cpu.get('cores')} cores)" if foreign is not None else ""))
        return why

    @property
    def valid(self) -> bool:
        return not self.invalid_reasons()

    def metrics(self) -> dict:
        p, m = self.prediction, self.measurement
        cl = m.client
        out = {}
        for q in ("p50", "p90", "p99"):
            out[f"ttft_ms_{q}"] = _entry(getattr(p.ttft_ms, q) if p.ttft_ms else None, cl.get("ttft_ms", {}).get(q))
        for q in ("p50", "p90", "p99"):
            out[f"tpot_ms_{q}"] = _entry(getattr(p.tpot_ms, q) if p.tpot_ms else None, cl.get("tpot_ms", {}).get(q))
        itl = p.itl_ms
        for q in ("p50", "p90", "p99"):
            out[f"itl_ms_{q}"] = _entry(getattr(itl, q) if itl else None, cl.get("itl_ms", {}).get(q))
        out["throughput_rps"] = _entry(self.throughput_pred[0], cl.get("throughput_rps"))
        out["output_tokens_per_s"] = _entry(self.throughput_pred[1], cl.get("output_tokens_per_s"))
        kv_meas = m.server.get("server_kv_mean_s")
        out["kv_transfer_ms_mean"] = _entry(p.kv_transfer_ms_mean, kv_meas * 1e3 if kv_meas is not None else None)
        if self.simulated:
            for k, e in out.items():
                sim = self.simulated.get(k) if k != "kv_transfer_ms_mean" else None
                e["simulated"] = None if sim is None or not math.isfinite(sim) else round(float(sim), 4)
                e["sim_rel_error"] = None if (r := rel_error(e["simulated"], e["measured"])) is None else round(r, 4)
        return out

    def stages(self) -> dict:
        """Per-stage extras: utilization, batch, prefill queue and time, KV bytes, decode batch."""
        p, m = self.prediction, self.measurement
        out = {}
        sim = self.simulated or {}
        for role, u in p.utilization.items():
            out[f"utilization_{role}"] = _entry(u, m.utilization.get(role))
            su = sim.get(f"utilization_{'replica' if role == 'colocated' else role}")
            if su is not None:
                out[f"utilization_{role}"]["simulated"] = round(float(su), 4)
        srv = m.server
        if self.pilot.mode == "disaggregated":
            out["prefill_queue_ms_mean"] = _entry(p.prefill_wait_ms_mean, _ms(srv.get("server_queue_mean_s")))
            out["prefill_time_ms_mean"] = _entry(p.prefill_service_ms_mean, _ms(srv.get("server_prefill_mean_s")))
            n = srv.get("server_kv_count")
            out["kv_bytes_per_request"] = _entry(p.kv_bytes_mean, srv.get("kv_bytes_total", 0) / n if n else None)
        # Little's law on the client's clock: sequences decoding at once = sum of decode times / span.
        st = m.state
        ok = [r for r in st.records.values() if r.ok and r.e2e_s is not None and r.ttft_s is not None]
        span = m.client.get("makespan_s") or 0
        role = "colocated" if self.pilot.mode == "colocated" else "decode"
        workers = self.pilot.workers if self.pilot.mode == "colocated" else self.pilot.decode_workers
        meas_b = sum(r.e2e_s - r.ttft_s for r in ok) / span / workers if span > 0 and ok else None
        out["decode_batch_mean"] = _entry(p.batch_mean.get(role), meas_b)
        if sim.get("mean_decode_batch") is not None:
            out["decode_batch_mean"]["simulated"] = round(float(sim["mean_decode_batch"]), 4)
        out["e2e_s_mean"] = _entry(p.e2e_s_mean, m.client.get("e2e_s_mean"))
        if sim.get("e2e_s_mean") is not None:
            out["e2e_s_mean"]["simulated"] = round(float(sim["e2e_s_mean"]), 4)
        step = self.decode_step_ms()
        if step is not None:
            out["decode_step_ms_mean"] = _entry(*step)
        return out

    def decode_step_ms(self) -> tuple[float, float] | None:
        """(predicted, measured) mean decode step (ms) over the steps the workers ran in the replay:
        the prediction's step-time model (profile, contention) at each step's own batch and longest
        context, beside what the step took. It isolates the step times from the queueing: a TPOT
        error with this one near zero is the queueing model's; with this one as large, the device's."""
        steps = self.measurement.decode_steps
        if not steps or self.replica is None:
            return None
        rep = without_pad(self.replica)
        n = sum(v[0] for v in steps.values())
        measured = sum(v[1] for v in steps.values()) / n
        predicted = sum(v[0] * float(rep.decode_step_s(float(b), v[2] / v[0] - 1.0)) for b, v in steps.items()) / n
        return predicted * 1e3, measured * 1e3

    def suspect_server_metrics(self) -> list[str]:
        """Server figures that cannot be right, said once so nobody reads them as model error."""
        st, notes = self.stages(), []
        kb = st.get("kv_bytes_per_request", {})
        if kb.get("measured") is not None and kb.get("predicted") and kb["measured"] < 0.01 * kb["predicted"]:
            notes.append("the server's planner:kv_transfer_bytes_total is ~1000x below prompt tokens x KV bytes/token: "
                         "the runtime counts frame lengths, not bytes (runtime/worker.py: len(memoryview) of a 3-D view)")
        q, srv = st.get("prefill_queue_ms_mean", {}), self.measurement.server
        ttft, pre = srv.get("server_ttft_mean_s"), srv.get("server_prefill_mean_s")
        if q.get("measured") is not None and q["measured"] < 1.0 and ttft and pre and (ttft - pre) * 1e3 > 5.0:
            notes.append(f"the server's queue histogram says {q['measured']:.2f} ms while TTFT - prefill is {(ttft - pre) * 1e3:.0f} ms: "
                         "it misses the time prompts wait in the prefill worker's socket (queue_s starts when the worker reads them)")
        return notes

    def verdict(self) -> dict:
        q = self.slo.percentile
        meas = self.measurement.client
        pred = self.prediction

        itl_slo = self.slo.itl_ms

        def judge(ttft, tpot, itl):
            if ttft is None or tpot is None:
                return None
            meets = ttft <= self.slo.ttft_ms and tpot <= self.slo.tpot_ms
            out = {"ttft_ms": ttft, "tpot_ms": tpot, "meets": meets}
            if itl_slo is not None:
                out.update(itl_ms=itl, meets=meets and itl is not None and itl <= itl_slo)
            return out

        pitl = pred.itl_ms
        return {"slo": self.slo.to_dict(),
                "measured": judge(meas.get("ttft_ms", {}).get(f"p{q}"), meas.get("tpot_ms", {}).get(f"p{q}"), meas.get("itl_ms", {}).get(f"p{q}")),
                "predicted": judge(getattr(pred.ttft_ms, f"p{q}") if pred.ttft_ms else None,
                                   getattr(pred.tpot_ms, f"p{q}") if pred.tpot_ms else None, getattr(pitl, f"p{q}") if pitl else None)}

    def to_dict(self) -> dict:
        m, p = self.measurement, self.prediction
        ok = [r for r in m.state.records.values() if r.ok]
        reasons = self.invalid_reasons()
        return {
            "pilot": {**self.pilot.to_dict(), "url": m.url, "cold_start_s": m.cold_start_s, "workers_detail": m.workers},
            "metrics": self.metrics(),
            "stages": self.stages(),
            "requests": self.requests,
            "valid": not reasons,
            "invalid_reasons": reasons,
            "interrupted": m.interrupted,
            "verdict": self.verdict(),
            "prediction": {"feasible": p.feasible, "binding": p.binding, "utilization": p.utilization,
                           "batch_mean": p.batch_mean, "notes": list(p.notes),
                           "contention": self.contention.to_dict() if self.contention is not None else None,
                           "slowdowns": {k: round(v, 4) for k, v in self.slowdowns.items()},
                           "ttft_ms": p.ttft_ms.to_dict() if p.ttft_ms else None,
                           "tpot_ms": p.tpot_ms.to_dict() if p.tpot_ms else None},
            "measured": {"client": _round(m.client), "server": _round(m.server), "utilization": _round(m.utilization),
                         "cpu": _round(m.cpu),
                         "decode_steps": {str(b): [v[0], round(v[1], 6), v[2]] for b, v in m.decode_steps.items()},
                         "worker_deaths": m.worker_deaths, "errors": [{"message": e, "count": c} for e, c in m.state.errors()],
                         "notes": m.notes + self.suspect_server_metrics()},
            "samples": {"ttft_ms": [round(r.ttft_s * 1e3, 3) for r in ok if r.ttft_s is not None],
                        "tpot_ms": [round(r.tpot_s * 1e3, 3) for r in ok if r.tpot_s is not None],
                        "predicted_ttft_ms": _quantile_grid(p.ttft_samples_ms),
                        "predicted_tpot_ms": _quantile_grid(p.tpot_samples_ms)},
            "requests_detail": [r.to_dict() for r in sorted(m.state.records.values(), key=lambda r: r.index)],
        }


def _ms(x):
    return None if x is None else x * 1e3


def _round(d):
    if isinstance(d, dict):
        return {k: _round(v) for k, v in d.items()}
    if isinstance(d, float):
        return round(d, 6) if math.isfinite(d) else None
    return d


def _quantile_grid(samples_ms, k: int = 101):
    """k evenly spaced quantiles (0..100%) of predicted samples: enough for a CDF, small in JSON."""
    if samples_ms is None or len(samples_ms) == 0:
        return []
    return [round(float(x), 3) for x in np.percentile(np.asarray(samples_ms), np.linspace(0, 100, k))]


@dataclass
class ValidateResult:
    """The primary run, and the colocated run of the same pilot when asked (`--compare-colocated`)."""

    run: RunResult
    workload: object
    calibration: dict
    transport: dict
    notes: list
    colocated: RunResult | None = None

    @property
    def valid(self) -> bool:
        return self.run.valid and (self.colocated is None or self.colocated.valid)

    @property
    def interrupted(self) -> bool:
        return self.run.measurement.interrupted or bool(self.colocated and self.colocated.measurement.interrupted)

    def to_dict(self) -> dict:
        import planner

        d = self.run.to_dict()
        d["valid"] = self.valid
        out = {"planner_version": planner.__version__, **d, "workload": self.workload.to_dict(),
               "calibration": self.calibration, "transport": self.transport, "notes": self.notes}
        if self.colocated is not None:
            out["compare"] = {"colocated": self.colocated.to_dict()}
        return out
