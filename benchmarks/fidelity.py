"""How well does the plan's model predict a real pilot? A grid of `planner validate` runs on this machine.

    python benchmarks/fidelity.py                 # 12 pilots x 20 s (60 requests at least): 2 mixes x 2 modes x loads 30/60/90%
    python benchmarks/fidelity.py --quick         # 6 pilots x 15 s: loads 30/90%, chat mix for colocated
    python benchmarks/fidelity.py --roofline plan # main figures with the fitted roofline's step times
    python benchmarks/fidelity.py --reprofile first  # profile once per mix, not before every pilot (faster)
    python benchmarks/fidelity.py --out DIR       # keep every pilot's validate JSON and profile (benchmarks/repredict.py)

Each pilot runs `tiny` on this CPU (planner.pilot.validate.validate: profile -> calibrate -> contention
probe -> queueing prediction, then planner serve + open-loop replay). By default each pilot measures
its profile afresh just before it (`--reprofile each`, ~45 s a pilot): this cloud VM's speed drifts
by 15-20% over hours, and a cached profile from earlier in the day biases every pilot alike. For every metric of the JSON contract the
relative error (predicted - measured) / measured is collected; the table gives the median and the
worst |error| per metric over the valid pilots (a pilot whose requests failed, or that shared the
machine with other busy processes, is listed but left out of the summary: its errors are not the
model's). From the same measurements each pilot is also re-predicted with the other step-time
models (`plan`: the plan's calibrated roofline; `profile`:
the measured profile points themselves), and the plan's discrete-event simulator is run on the
replayed schedule. Closed forms with `profile` step times isolate the queueing model's error;
`plan` vs `profile` is the roofline's share; closed forms vs simulator is the formulas' share.
The `step` column is the mean decode step the workers ran, predicted (the profile and the probe's
contention at each step's own batch and longest context) against what those steps took: a TPOT
error that `step` matches is the device's speed during the replay, not the queueing model's.

On a shared machine the grid re-runs itself as the leader of a new session and renices it
(-10 as root): Linux shares the CPU fairly between sessions whatever their nice, so only a session
of its own lets the pilots outrank other work. Run-queue waits are measured per pilot process;
a starved pilot is marked invalid anyway.
Prints a table for people, then one JSON line for scripts (nanochat style).
"""

from __future__ import annotations

import argparse
import json
import os
import math
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.pilot import compare, device
from planner.pilot import predict as pilot_predict
from planner.pilot import run as pilot_run
from planner.pilot import validate as v
from planner.queueing.samples import Demand  # noqa: E402
from planner.specs.models import resolve_model  # noqa: E402
from planner.workload.workload import workload_from_flags  # noqa: E402

MIXES = {
    "chat": ("uniform:64-192", "uniform:32-96"),  # balanced: mean 128 prompt, 64 output tokens
    "long-prompt": ("uniform:256-640", "uniform:8-32"),  # prefill-heavy: mean 448 prompt, 20 output
}
SUMMARY = ("ttft_ms_p50", "ttft_ms_p90", "tpot_ms_p50", "tpot_ms_p90", "throughput_rps", "output_tokens_per_s",
           "ttft_ms_p99", "tpot_ms_p99", "kv_transfer_ms_mean", "decode_step_ms_mean")


def grid(quick: bool) -> list[tuple[str, str, float]]:
    if quick:
        return [("chat", "disaggregated", 0.3), ("chat", "disaggregated", 0.9), ("chat", "colocated", 0.3),
                ("chat", "colocated", 0.9), ("long-prompt", "disaggregated", 0.3), ("long-prompt", "disaggregated", 0.9)]
    return [(m, mode, f) for m in MIXES for mode in ("disaggregated", "colocated") for f in (0.3, 0.6, 0.9)]


def alt_errors(res: compare.ValidateResult, workload, other: str) -> dict:
    """The same run's errors under the other step-time model (re-predicted, same measurement)."""
    run = res.run
    spec = resolve_model(run.pilot.model)
    rep, _ = device.local_replica(spec, Path(res.calibration["path"]), other)
    d = Demand.from_workload(workload)
    bw = (res.transport or {}).get("measured_bytes_per_s")
    _, _, _, pred = pilot_predict.predict_replay(run.pilot, rep, d, run.contention, run.schedule, bw)  # as validate predicts
    alt = replace(run, prediction=pred, throughput_pred=pilot_predict.predicted_throughput(run.schedule, pred.e2e_s_mean, run.pilot.capacity_rps))
    return {k: e["rel_error"] for k, e in alt.metrics().items()}


def wait_quiet(limit_s: float) -> float:
    """Wait (up to limit_s) until the machine is nearly idle; returns the seconds waited. On a
    shared machine a pilot measures everyone's work: better late than spoiled."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        busy = pilot_run.machine_busy_cores(1.0)
        if busy is None or busy < pilot_run.CONTENTION_CORES / 2:
            break
    return time.perf_counter() - t0


def summarize(rows: list[dict], key: str) -> dict:
    """metric -> {median_abs, worst_abs, median_signed, n} over the rows (errors as fractions)."""
    out = {}
    for m in SUMMARY:
        e = [r[key][m] for r in rows if r[key].get(m) is not None]
        if e:
            a = np.abs(e)
            out[m] = {"median_abs": float(np.median(a)), "worst_abs": float(a.max()), "median_signed": float(np.median(e)), "n": len(e)}
    return out


def in_own_session(argv) -> int | None:
    """Re-run this script as the leader of a new session, forwarding Ctrl-C and SIGTERM to it.
    Linux schedules sessions (autogroups) fairly against each other whatever their nice values,
    so on a shared machine the pilots outrank other work only from a session of their own.
    Returns the child's exit code, or None when this process is that child."""
    import signal
    import subprocess

    if os.environ.get("PLANNER_FIDELITY_CHILD") == "1" or not hasattr(os, "setsid"):
        return None
    child = subprocess.Popen([sys.executable, __file__, *argv], start_new_session=True,
                             env={**os.environ, "PLANNER_FIDELITY_CHILD": "1"})
    forward = lambda sig, frame: child.send_signal(sig)  # noqa: E731
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return child.wait()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rc = in_own_session(argv)
    if rc is not None:
        return rc
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 pilots of 15 s")
    ap.add_argument("--duration", type=float, default=None, help="seconds of arrivals per pilot (default 20, quick 15)")
    ap.add_argument("--roofline", default="profile", choices=list(device.STEP_TIME_MODELS), help="step-time model of the main figures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-requests", type=int, default=60,
                    help="a slow pilot replays at least this many requests (a p90 of 20 requests is mostly noise)")
    ap.add_argument("--nice", type=int, default=-10 if hasattr(os, "geteuid") and os.geteuid() == 0 else 0,
                    help="renice the pilots' processes (default -10 as root: other work on a shared machine must not starve them)")
    ap.add_argument("--out", default=None, help="also write every pilot's validate JSON to this folder")
    ap.add_argument("--reprofile", default="each", choices=("each", "first", "none"),
                    help="measure the profile again before each pilot, before the first pilot of each mix, or reuse cached ones")
    ap.add_argument("--wait-quiet", type=float, default=60.0,
                    help="before each pilot, wait up to this many seconds for other processes to leave the CPU")
    a = ap.parse_args(argv)
    duration = a.duration or (15.0 if a.quick else 20.0)
    if a.nice:
        for p in pilot_run.set_priority([os.getpid()], a.nice):  # this session's autogroup: the pilots inherit it
            print(f"warning: {p}", file=sys.stderr)
    others = [m for m in device.STEP_TIME_MODELS if m != a.roofline]
    rows = []
    profiled: set = set()
    t0 = time.perf_counter()
    for i, (mix, mode, frac) in enumerate(grid(a.quick)):
        inp, out = MIXES[mix]
        w = workload_from_flags(rate=1.0, input_len=inp, output_len=out)
        print(f"[{i + 1}/{len(grid(a.quick))}] {mix} {mode} at {frac:.0%} of capacity ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        try:
            waited = wait_quiet(a.wait_quiet)
            fresh = a.reprofile == "each" or (a.reprofile == "first" and mix not in profiled)
            profiled.add(mix)
            res = v.validate("tiny", "cpu", w, mode=mode, load_frac=frac, duration_s=duration, seed=a.seed, progress=False,
                             roofline=a.roofline, nice=a.nice, min_requests=a.min_requests, reprofile=fresh, say=lambda msg: None)
        except KeyboardInterrupt:
            res = None
        if res is None or res.interrupted:  # Ctrl-C: the pilot is torn down; summarise what ran
            print("interrupted: summarising the pilots so far", file=sys.stderr)
            break
        d = res.to_dict()
        if a.out:
            Path(a.out).mkdir(parents=True, exist_ok=True)
            stem = Path(a.out) / f"{i:02d}-{mix}-{mode}-{int(frac * 100)}"
            stem.with_suffix(".json").write_text(json.dumps(d, default=str))
            prof = Path(d["calibration"].get("path") or "")
            if prof.is_file():  # the next pilot measures it again: keep this pilot's for re-prediction (benchmarks/repredict.py)
                shutil.copyfile(prof, stem.with_suffix(".profile.json"))
        rows.append({"mix": mix, "mode": mode, "load": frac, "rate_rps": d["pilot"]["rate_rps"], "valid": d["valid"],
                     "why_invalid": d["invalid_reasons"], "foreign_cores": (d["measured"].get("cpu") or {}).get("foreign_cores"),
                     "run_queue_wait": (d["measured"].get("cpu") or {}).get("run_queue_wait_share"),
                     "requests": d["requests"],
                     # the decode step at the batches the workers ran: the step times' share of the error
                     "errors": {**{k: e["rel_error"] for k, e in d["metrics"].items()},
                                "decode_step_ms_mean": d["stages"].get("decode_step_ms_mean", {}).get("rel_error")},
                     "metrics": d["metrics"], **{"errors_" + o: alt_errors(res, w, o) for o in others},
                     "errors_simulated": {k: e.get("sim_rel_error") for k, e in d["metrics"].items()},
                     "fit": d["calibration"].get("fit", {}), "waited_s": waited, "profile": d["calibration"].get("path")})
    print_report(rows, a.roofline, others, time.perf_counter() - t0)
    return 0


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 100:+.0f}%"


def print_report(rows: list[dict], main_model: str, others: list[str], wall_s: float) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=max(150, Console().width))
    t = Table(title=f"fidelity: {len(rows)} pilots of tiny on this CPU (error = (predicted - measured) / measured; "
                    f"closed forms, {main_model} step times)")
    for c in ("mix", "mode", "load", "req/s", "TTFT p50", "TTFT p90", "TPOT p50", "TPOT p90", "thr", "KV", "step", "valid"):
        t.add_column(c, justify="left" if c in ("mix", "mode", "valid") else "right")
    for r in rows:
        e = r["errors"]
        t.add_row(r["mix"], r["mode"], f"{r['load']:.0%}", f"{r['rate_rps']:.2f}", _pct(e["ttft_ms_p50"]), _pct(e["ttft_ms_p90"]),
                  _pct(e["tpot_ms_p50"]), _pct(e["tpot_ms_p90"]), _pct(e["throughput_rps"]), _pct(e["kv_transfer_ms_mean"]),
                  _pct(e.get("decode_step_ms_mean")), "yes" if r["valid"] else "no")
    con.print(t)
    for i, r in enumerate(rows):
        if not r["valid"]:
            con.print(f"  pilot {i + 1} invalid: {'; '.join(r['why_invalid'])}", highlight=False)
    valid = [r for r in rows if r["valid"]]
    use = valid or rows
    if not valid:
        con.print("[bold red]no pilot was valid: the summary below is over all pilots, and is not the model's error[/bold red]")
    variants = [("errors", f"closed forms, {main_model}")] + [("errors_" + o, f"closed forms, {o}") for o in others] + \
               [("errors_simulated", f"simulator, {main_model}")]
    sums = {key: summarize(use, key) for key, _ in variants}
    t2 = Table(title=f"summary over {len(use)} {'valid ' if valid else ''}pilots: median |error| / worst |error| "
                     "(step times: plan = the plan's calibrated roofline, "
                     "profile = the measured points; simulator = the plan's discrete-event simulator on the replayed schedule)")
    t2.add_column("metric")
    for _, label in variants:
        t2.add_column(label, justify="right")
    t2.add_column("median signed", justify="right")
    for m in SUMMARY:
        cells = []
        for key, _ in variants:
            x = sums[key].get(m)
            cells.append(f"{x['median_abs']:.0%} / {x['worst_abs']:.0%}" if x else "-")
        x = sums["errors"].get(m)
        t2.add_row(m, *cells, _pct(x["median_signed"]) if x else "-")
    con.print(t2)
    con.print(f"{len(valid)} of {len(rows)} pilots valid; {wall_s:.0f} s")
    # A cached profile from hours ago on a drifting machine biases every pilot alike: say which.
    for path in sorted({str(r.get("profile")) for r in rows}):
        made = ""
        try:
            made = json.loads(Path(path).read_text()).get("created", "")
        except (OSError, ValueError):
            pass
        con.print(f"step times from {path} (last measured {made or '?'}; --reprofile each measures one before every pilot)", highlight=False)
    rnd = lambda d: {k: {kk: round(vv, 4) for kk, vv in x.items()} for k, x in d.items()}  # noqa: E731
    print(json.dumps({"benchmark": "fidelity", "pilots": len(rows), "valid": len(valid), "roofline": main_model, "wall_s": round(wall_s, 1),
                      "summary": rnd(sums["errors"]), **{"summary_" + k[len("errors_"):]: rnd(v) for k, v in sums.items() if k != "errors"},
                      "rows": [{k: r.get(k) for k in ("mix", "mode", "load", "rate_rps", "valid", "foreign_cores", "run_queue_wait", "errors",
                                                      *[key for key, _ in variants[1:]])} for r in rows]}, default=str))


if __name__ == "__main__":
    sys.exit(main())
