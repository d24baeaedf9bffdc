"""`planner validate`: parse the flags, call planner.pilot.validate.validate, render, set the exit code.

Renders the predicted-vs-measured table in the terminal (rich), as Markdown (`--report FILE.md`)
or HTML (`--report FILE.html`, planner.report.html when present), and the JSON contract
(`--json FILE`). Exit codes: 0 valid comparison, 1 the run was spoiled (failed requests, a worker
died: the errors are not the model's), 2 bad input, 130 interrupted (the partial report is saved).
No torch or aiohttp at import time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from planner.errors import BadInput, PlannerError, shown

LABELS = {
    "ttft_ms_p50": ("TTFT p50", "ms"), "ttft_ms_p90": ("TTFT p90", "ms"), "ttft_ms_p99": ("TTFT p99", "ms"),
    "tpot_ms_p50": ("TPOT p50", "ms"), "tpot_ms_p90": ("TPOT p90", "ms"), "tpot_ms_p99": ("TPOT p99", "ms"),
    "throughput_rps": ("throughput", "req/s"), "output_tokens_per_s": ("output tokens", "tok/s"),
    "kv_transfer_ms_mean": ("KV transfer mean", "ms"),
    "utilization_prefill": ("prefill worker busy", "share"), "utilization_decode": ("decode worker busy", "share"),
    "utilization_colocated": ("worker busy", "share"), "prefill_queue_ms_mean": ("prefill queue mean", "ms"),
    "prefill_time_ms_mean": ("prefill time mean", "ms"), "kv_bytes_per_request": ("KV bytes / request", "B"),
    "decode_batch_mean": ("decode batch (running)", "seqs"),
    "decode_step_ms_mean": ("decode step, at the batches run", "ms"),
    "itl_ms_p50": ("ITL p50 (every gap)", "ms"), "itl_ms_p90": ("ITL p90 (every gap)", "ms"), "itl_ms_p99": ("ITL p99 (every gap)", "ms"),
    "e2e_s_mean": ("end-to-end mean", "s"),
}


def _fmt(x, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "share":
        return f"{x:.0%}"
    if unit == "B":
        return f"{x / 1e6:.2f} MB" if x >= 1e5 else f"{x:.0f} B"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def _err(e) -> str:
    return "-" if e is None else f"{e:+.0%}"


def rows(run: dict) -> list[tuple[str, ...]]:
    """(metric, unit, predicted, measured, error, simulated, its error) for the contract metrics,
    then the stages. Predicted: the plan's closed forms; simulated: the plan's discrete-event
    simulator on the same schedule (both with the same step times)."""
    out = []
    for k, v in list(run["metrics"].items()) + list(run.get("stages", {}).items()):
        label, unit = LABELS.get(k, (k, ""))
        sim = v.get("simulated")
        sim_err = v.get("sim_rel_error")
        if sim_err is None and sim is not None and v.get("measured"):
            sim_err = (sim - v["measured"]) / v["measured"]
        out.append((label, unit, _fmt(v["predicted"], unit), _fmt(v["measured"], unit), _err(v["rel_error"]),
                    _fmt(sim, unit), _err(sim_err)))
    return out


COLUMNS = (("metric", "left"), ("unit", "left"), ("predicted", "right"), ("measured", "right"), ("error", "right"),
           ("simulated", "right"), ("sim error", "right"))


def _verdict_line(run: dict) -> str:
    v = run["verdict"]
    slo = v["slo"]
    q = slo["percentile"]

    def say(x):
        if x is None:
            return "n/a"
        return f"{'meets' if x['meets'] else 'misses'} (p{q} TTFT {x['ttft_ms']:.0f} ms, p{q} TPOT {x['tpot_ms']:.1f} ms)"

    itl = f", ITL <= {slo['itl_ms']:g} ms" if slo.get("itl_ms") is not None else ""
    return f"SLO p{q} TTFT <= {slo['ttft_ms']:g} ms, TPOT <= {slo['tpot_ms']:g} ms{itl}: measured {say(v['measured'])}; predicted {say(v['predicted'])}"


def render_terminal(result: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    for name, run in [("", result)] + ([("colocated comparison: ", result["compare"]["colocated"])] if result.get("compare") else []):
        p = run["pilot"]
        console.print(f"\n[bold]{name}pilot[/bold]: {escape(str(p['label']))} on {escape(str(p['device']))}, {p['rate_rps']:.3g} req/s "
                      f"({p['load_frac']:.0%} of predicted capacity {p['capacity_rps']:.3g} req/s)")
        if not name:
            for w in p["why"]:
                console.print(f"  - {w}", highlight=False, markup=False)
        t = Table(title=f"{name}predicted vs measured", title_justify="left")
        for c, j in COLUMNS:
            t.add_column(c, justify=j)
        for r in rows(run):
            t.add_row(*r)
        console.print(t)
        for n in run.get("prediction", {}).get("notes", []):
            console.print(f"  model: {n}", highlight=False, markup=False)
        console.print(_verdict_line(run), highlight=False, markup=False)
        rq = run["requests"]
        colour = "green" if rq["failed"] == 0 and rq["lost"] == 0 else "red"
        console.print(f"requests: sent {rq['sent']}, completed {rq['completed']}, [{colour}]failed {rq['failed']}[/{colour}], lost {rq['lost']}")
        for e in run["measured"]["errors"][:3]:
            console.print(f"  {e['count']} x {e['message']}", style="red", highlight=False, markup=False)
        for n in run["measured"].get("notes", []):
            console.print(f"  note: {n}", highlight=False, markup=False)
        if run["valid"]:
            console.print("[green]valid[/green]: every request completed; the errors above are the model's")
        else:
            console.print("[bold red]INVALID[/bold red]: " + escape("; ".join(run["invalid_reasons"])) + " -- the error figures are not the model's")
    for n in result.get("notes", []):
        console.print(f"note: {n}", highlight=False, markup=False)


STEP_TIMES = {"plan": "the plan's roofline, calibrated", "profile": "the measured points, interpolated"}


def render_prediction(result: dict, console) -> None:
    """`--predict-only`: the pilot and what the planning model predicts for it (nothing was run)."""
    p, pr = result["pilot"], result["predicted"]
    console.print(f"\n[bold]pilot[/bold]: {p['label']} on {p['device']}, {p['rate_rps']:.3g} req/s "
                  f"({p['load_frac']:.0%} of predicted capacity {p['capacity_rps']:.3g} req/s); nothing run (--predict-only)")
    for w in p["why"]:
        console.print(f"  - {w}", highlight=False)
    for name in ("ttft_ms", "tpot_ms"):
        x = pr.get(name)
        label = name.split("_")[0].upper()
        console.print(f"predicted {label} p50/p90/p99: " + (f"{x['p50']:.1f} / {x['p90']:.1f} / {x['p99']:.1f} ms" if x else "n/a (overloaded)"))
    console.print(f"model: {result['engine']}", highlight=False)
    for n in result.get("notes", []):
        console.print(f"note: {n}", highlight=False)
    console.print(f"the same prediction: {result['equivalent_plan']}", highlight=False)


def render_markdown(result: dict) -> str:
    lines = ["# planner validate", ""]
    cal = result.get("calibration", {})
    if cal.get("path"):
        fit = cal.get("fit", {})
        lines.append(f"Calibrated by `{cal['path']}` ({cal.get('device')}, {cal.get('torch_threads')} threads): fit error median "
                     f"prefill {fit.get('prefill', {}).get('median_abs_error_pct')}%, decode {fit.get('decode', {}).get('median_abs_error_pct')}%.")
        lines.append("")
    w = result.get("workload", {})
    lines += [f"Workload: input {w.get('input', {}).get('describe')}, output {w.get('output', {}).get('describe')}.", ""]
    for name, run in [("", result)] + ([("Colocated comparison: ", result["compare"]["colocated"])] if result.get("compare") else []):
        p = run["pilot"]
        lines += [f"## {name}pilot: {p['label']} on {p['device']}", "",
                  f"{p['rate_rps']:.3g} req/s, {p['load_frac']:.0%} of the predicted capacity ({p['capacity_rps']:.3g} req/s).", ""]
        lines += [f"- {x}" for x in p["why"]] + [""]
        lines += ["| " + " | ".join(c for c, _ in COLUMNS) + " |", "|---|---|" + "---:|" * (len(COLUMNS) - 2)]
        lines += ["| " + " | ".join(r) + " |" for r in rows(run)]
        rq = run["requests"]
        lines += [""] + [f"- model: {n}" for n in run.get("prediction", {}).get("notes", [])]
        lines += ["", _verdict_line(run), "",
                  f"Requests: sent {rq['sent']}, completed {rq['completed']}, failed {rq['failed']}, lost {rq['lost']}.", "",
                  ("**Valid**: every request completed." if run["valid"] else
                   "**INVALID**: " + "; ".join(run["invalid_reasons"]) + ". The error figures are not the model's."), ""]
    lines += ["Errors are (predicted - measured) / measured. Predicted: the plan's closed-form queueing model; simulated: "
              "the plan's discrete-event simulator on the replayed schedule; both take their step times from the profile "
              f"({STEP_TIMES.get(cal.get('roofline'), cal.get('roofline'))}) and, on a CPU, scale them by the probed contention "
              "between workers. "
              "TPOT is per request: (last token - first token) / (tokens - 1)."]
    lines += [f"- note: {n}" for n in result.get("notes", [])]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, json_out: str | None, report: Path | None, console) -> None:
    from planner.io import STREAMS, write_output

    if json_out:
        write_output(json_out, json.dumps(result, indent=1, default=str) + "\n", "--json")
        if json_out not in STREAMS:
            console.print(f"wrote {json_out}", markup=False)
    if report:
        if report.suffix.lower() in (".html", ".htm"):
            try:
                from planner.report.html import render_validate_html
            except ImportError:
                md = report.with_suffix(".md")
                write_output(md, render_markdown(result), "--report")
                console.print(f"HTML reports are not available in this version (planner.report.html missing): wrote {md} instead",
                              style="yellow", markup=False)
                return
            write_output(report, render_validate_html(result), "--report")
        else:
            write_output(report, render_markdown(result), "--report")
        console.print(f"wrote {report}", markup=False)


def validate(
    plan: Optional[Path] = typer.Option(None, "--plan", help="A `planner plan --json` result: pilot its split and per-replica load."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Preset or config.json (default: the plan's model, else tiny)."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Production rate (req/s): the pilot's share of it is reported."),
    input_len: Optional[str] = typer.Option(None, "--input-len", help="Prompt tokens (plan's forms) (default: uniform:64-192)."),
    output_len: Optional[str] = typer.Option(None, "--output-len", help="Output tokens (default: uniform:32-96)."),
    ttft_slo: Optional[float] = typer.Option(None, "--ttft-slo", "--ttft-slo-ms", help="TTFT target, ms (default: 1000)."),
    tpot_slo: Optional[float] = typer.Option(None, "--tpot-slo", "--tpot-slo-ms", help="TPOT target, ms (default: 50)."),
    itl_slo: Optional[float] = typer.Option(None, "--itl-slo", "--itl-slo-ms", help="ITL target, ms, over every inter-token gap (default: none)."),
    percentile: Optional[int] = typer.Option(None, "--percentile", help="SLO percentile: 50, 90 or 99 (default: 90)."),
    workload: Optional[Path] = typer.Option(None, "--workload", help="Workload YAML file."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="CSV/JSONL trace: replayed with its own (scaled) timing."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]: where the pilot runs."),
    max_workers: Optional[int] = typer.Option(None, "--max-workers", help="Worker processes the pilot may use (default: from the cores)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="disaggregated or colocated (default: the plan's recommendation)."),
    prefill_workers: Optional[int] = typer.Option(None, "--prefill-workers", help="Force the split: prefill workers."),
    decode_workers: Optional[int] = typer.Option(None, "--decode-workers", help="Force the split: decode workers."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Colocated workers."),
    load_frac: Optional[float] = typer.Option(None, "--load-frac", help="Pilot load as a share of its predicted capacity (default: the plan's, else 0.6)."),
    pilot_rate: Optional[float] = typer.Option(None, "--pilot-rate", help="Pilot arrival rate, req/s (instead of --load-frac)."),
    duration: float = typer.Option(40.0, "--duration", help="Seconds of arrivals to replay."),
    requests: Optional[int] = typer.Option(None, "--requests", help="Replay this many requests (instead of --duration)."),
    profile: Optional[Path] = typer.Option(None, "--profile", help="Local profile of the pilot's device (default: cached or measured now)."),
    reprofile: bool = typer.Option(False, "--reprofile", help="Measure the pilot's profile again even when a cached one exists (a cloud VM's speed drifts: a profile from hours ago can be 20% off)."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="Drive an existing OpenAI-compatible deployment instead of starting one."),
    served_model: Optional[str] = typer.Option(None, "--served-model", help="Model name at --endpoint (default: omitted)."),
    compare_colocated: bool = typer.Option(False, "--compare-colocated", help="Also run the same pilot colocated on the same workers."),
    chunked_prefill: bool = typer.Option(False, "--chunked-prefill", help="Colocated pilots: chunked prefill."),
    max_seqs: int = typer.Option(32, "--max-seqs", help="Sequences per decode batch (runtime --max-seqs)."),
    max_batch_tokens: int = typer.Option(2048, "--max-batch-tokens", help="Padded prompt tokens per prefill batch."),
    seed: int = typer.Option(0, "--seed", help="Seed of arrivals, lengths and prompts."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds without a byte before a request fails."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the JSON result to FILE ('-' for stdout)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write FILE.md (Markdown) or FILE.html."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    nice: int = typer.Option(0, "--nice", help="Renice the pilot's processes (e.g. -10 as root on a shared machine; run under setsid so that it outranks other sessions)."),
    roofline: str = typer.Option("profile", "--roofline", help="Step times: profile (the measured points, interpolated: what `plan --profile` uses for the profiled device) or plan (the calibrated roofline, what plan uses for other GPU types)."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="CPU pilots: first measure (a few seconds) how much the workers slow each other on the shared cores, and predict with it."),
    engine: Optional[str] = typer.Option(None, "--engine", help="The engine at --endpoint: vllm, planner or generic (default: the one its --profile measured). Local pilots run planner."),
    predict_only: bool = typer.Option(False, "--predict-only", help="Derive and predict the pilot with the planning model, run nothing (needs --profile or a cached one)."),
):
    """Run a pilot of the split here, replay the workload, and put measured beside predicted."""
    from rich.console import Console

    from planner.io import STREAMS, target
    from planner.pilot.validate import validate as run_validate

    console = Console(stderr=STREAMS.get(json_out) == "stdout")
    for flag, out in (("--json", json_out), ("--report", report)):
        if out is not None:
            target(out, flag)  # before minutes of profiling and replay
    w, plan_doc, model = _pilot_workload(plan, model, workload, trace, rate, input_len, output_len, ttft_slo, tpot_slo, percentile, itl_slo)
    say = lambda msg: console.print(msg, highlight=False, markup=False)  # noqa: E731
    result = run_validate(model=model, device=device, workload=w, plan=plan_doc, max_workers=max_workers, mode=mode,
                          prefill_workers=prefill_workers, decode_workers=decode_workers, workers=workers, load_frac=load_frac,
                          pilot_rate=pilot_rate, duration_s=duration, requests=requests, profile=profile, reprofile=reprofile, endpoint=endpoint,
                          served_model=served_model, compare_colocated=compare_colocated, seed=seed, timeout_s=timeout,
                          max_seqs=max_seqs, max_batch_tokens=max_batch_tokens, chunked_prefill=chunked_prefill,
                          progress=progress, roofline=roofline, nice=nice, probe=probe, say=say, predict_only=predict_only, engine=engine,
                          traffic_rps=rate or (w.rate_rps if (workload or trace or plan_doc) else None))
    d = result.to_dict()
    if predict_only:
        render_prediction(d, console)
        write_outputs(d, json_out, None, console)
        return
    render_terminal(d, console)
    write_outputs(d, json_out, report, console)
    if result.interrupted:
        if json_out or report:
            console.print("[yellow]interrupted: partial report saved[/yellow]")
        # sys.exit, not typer.Exit: planner.cli.main.main runs typer with standalone_mode=False, which
        # returns a typer.Exit's code instead of exiting with it.
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    if not result.valid:
        reasons = "; ".join(result.run.invalid_reasons() + (result.colocated.invalid_reasons() if result.colocated else []))
        raise PlannerError(f"the pilot run was spoiled ({reasons}): its errors are not the model's")


def _pilot_workload(plan, model, workload, trace, rate, input_len, output_len, ttft_slo, tpot_slo, percentile, itl_slo):
    """(workload, the --plan's summary or None, model name): from a file, a trace, the flags or the plan."""
    from planner.pilot.derive import DEFAULT_INPUT_LEN, DEFAULT_OUTPUT_LEN, plan_summary
    from planner.workload import workload as W
    from planner.workload.workload import load_workload_file, slo_from_flags, workload_from_flags, workload_from_trace

    if workload and trace:
        raise BadInput("give --workload or --trace, not both")
    slo_given = (ttft_slo, tpot_slo, percentile) != (None, None, None)
    w = None
    if workload:
        w = load_workload_file(workload)
    elif trace:
        w = workload_from_trace(trace, slo_from_flags(ttft_slo or W.DEFAULT_TTFT_SLO_MS, tpot_slo or W.DEFAULT_TPOT_SLO_MS, percentile or W.DEFAULT_SLO_PERCENTILE), rate=rate)
    elif input_len or output_len or (plan is None):
        w = workload_from_flags(rate=rate or 1.0, input_len=input_len or DEFAULT_INPUT_LEN, output_len=output_len or DEFAULT_OUTPUT_LEN,
                                ttft_slo_ms=ttft_slo or W.DEFAULT_TTFT_SLO_MS, tpot_slo_ms=tpot_slo or W.DEFAULT_TPOT_SLO_MS, percentile=percentile or W.DEFAULT_SLO_PERCENTILE)
    plan_doc = None
    if plan is not None:
        from planner.safeload import load_json, read_text

        doc = load_json(read_text(plan, f"--plan {plan}", "plan file", max_bytes=256 << 20), f"--plan {plan}")
        if not isinstance(doc, dict):
            raise BadInput(f"--plan {plan}: not a `planner plan --json` result (expected a JSON object)")
        try:
            plan_doc = plan_summary(doc, str(plan), w)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:  # a hand-edited or foreign JSON
            raise BadInput(f"--plan {plan}: not a `planner plan --json` result ({type(e).__name__}: {shown(str(e))})") from None
        model = model or (doc.get("model") or {}).get("name")
        w = plan_doc["workload"]
    model = model or "tiny"
    if slo_given:
        w = w.with_slo(ttft_slo, tpot_slo, percentile)
    if itl_slo is not None:
        from planner.api import with_itl_slo

        w = with_itl_slo(w, itl_slo)
    return w, plan_doc, model
