"""The command line: parse, call one function, render, set the exit code.

Exit codes: 0 ok (also when the answer is "stay colocated"), 2 bad input, 3 infeasible.
User mistakes (planner.errors.PlannerError) are caught once, here, and shown as one red line.
Heavy imports (torch, aiohttp) happen inside the commands that need them, never at import time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from planner.errors import BadInput, Infeasible, PlannerError, named, one_line, shown
from planner.measure.files import _jsonable

app = typer.Typer(
    name="planner",
    help="Measure an LLM deployment, then size the cheapest prefill/decode split (or say it does not pay).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("plan")
def plan_cmd(
    model: str = typer.Option("llama-3.1-8b", "--model", "-m", help="Preset name (see `planner models`) or a Hugging Face config.json."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Mean arrival rate, req/s [default: 10]."),
    requests_per_day: Optional[float] = typer.Option(None, "--requests-per-day", help="Requests per day (instead of --rate)."),
    peak_factor: float = typer.Option(1.0, "--peak-factor", help="Peak-to-mean ratio: the plan is sized for mean x this."),
    input_len: str = typer.Option("1000", "--input-len", help="Prompt tokens: N, or fixed:N, lognormal:mean=M,sigma=S, uniform:A-B, normal:mean=M,std=S,min=A,max=B."),
    output_len: str = typer.Option("250", "--output-len", help="Output tokens (same forms as --input-len)."),
    ttft_slo: Optional[float] = typer.Option(None, "--ttft-slo", "--ttft-slo-ms", help="Time-to-first-token target, ms [default: 1000]."),
    tpot_slo: Optional[float] = typer.Option(None, "--tpot-slo", "--tpot-slo-ms", help="Time-per-output-token target, ms [default: 50]."),
    percentile: Optional[int] = typer.Option(None, "--percentile", help="SLO percentile: 50, 90 or 99 [default: 90]."),
    itl_slo: Optional[float] = typer.Option(None, "--itl-slo", "--itl-slo-ms", help="Inter-token latency target, ms, over every gap (vllm bench serve's ITL; --tpot-slo bounds each request's mean gap) [default: none]."),
    workload: Optional[Path] = typer.Option(None, "--workload", help="Workload YAML file (rate, lengths, SLOs, trace)."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="CSV/JSONL trace: lengths and arrival pattern (Azure trace columns recognised)."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="Your own GPU catalog YAML [default: the packaged gpu_catalog.yaml]."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="Comma-separated GPU types to consider (keys or aliases; 'local' = the profiled device)."),
    prefill_gpus: Optional[str] = typer.Option(None, "--prefill-gpus", help="GPU types for the prefill pool only."),
    decode_gpus: Optional[str] = typer.Option(None, "--decode-gpus", help="GPU types for the decode pool only."),
    provider: Optional[str] = typer.Option(None, "--provider", help="Price from this provider [default: cheapest listed on-demand]."),
    current: Optional[str] = typer.Option(None, "--current", help="What you run today, colocated: COUNTxGPU[:tpN], e.g. 8xa100-40gb."),
    current_split: Optional[str] = typer.Option(None, "--current-split", help="Evaluate a fixed split: PREFILLxGPU[:tpN]+DECODExGPU[:tpN], e.g. 2xh100+6xh100."),
    engine: Optional[str] = typer.Option(None, "--engine", help="Serving engine whose scheduling the model takes: generic (the planner's original vLLM-like model), vllm (vLLM V1 `vllm serve` defaults per device) or planner (this project's runtime) [default: the engine an endpoint --profile measured, else generic]."),
    max_num_seqs: Optional[int] = typer.Option(None, "--max-num-seqs", help="Pin the engine's running-sequence limit per replica [default: the engine's own]."),
    max_num_batched_tokens: Optional[int] = typer.Option(None, "--max-num-batched-tokens", help="Pin the engine's token budget per step / prefill batch [default: the engine's own]."),
    profile: Optional[List[Path]] = typer.Option(None, "--profile", help="Profile file(s) from `planner profile` to calibrate the model."),
    simulate: bool = typer.Option(False, "--simulate", help="Check the chosen plans by discrete-event simulation."),
    weight_dtype: str = typer.Option("bf16", "--weight-dtype", help="Weights: bf16, fp16, fp8, int8, int4 (fp32: to match a CPU profile)."),
    kv_dtype: str = typer.Option("bf16", "--kv-dtype", help="KV cache: bf16, fp16, fp8, int8 (fp32: to match a CPU profile)."),
    kv_compression: str = typer.Option("none", "--kv-compression", help="Compress KV for the transfer between pools: none, fp8, int8."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the JSON result to FILE ('-' for stdout)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write a sizing report: FILE.md (Markdown) or FILE.html."),
    pareto: bool = typer.Option(True, "--pareto/--no-pareto", help="Compute the cost-vs-SLO front."),
    schedule: Optional[bool] = typer.Option(None, "--schedule/--no-schedule", help="Size every hour of a daily profile (hourly_rps or a multi-hour trace) [default: on when the workload has one]."),
    # --- emit (planner/emit/): launch recipes of the chosen plan ---
    emit: Optional[List[str]] = typer.Option(None, "--emit", help="Write the launch recipe for vllm, sglang, dynamo, llm-d or all (repeatable) into --out."),
    emit_out: Optional[Path] = typer.Option(None, "--out", help="Folder for --emit's recipes (and the plan.json they name)."),
    pilot_fraction: Optional[float] = typer.Option(None, "--pilot-fraction", help="--emit a pilot for this share of traffic, e.g. 0.1 (default: the full plan)."),
    uncertainty: bool = typer.Option(True, "--uncertainty/--no-uncertainty", help="90% intervals by Monte Carlo over the roofline's calibrated efficiencies (seeded)."),
    draws: Optional[int] = typer.Option(None, "--draws", help="Monte Carlo draws for the intervals [default: 32]."),
):
    """Size the cheapest disaggregated (prefill/decode split) and colocated deployments for a workload."""
    from planner.api import plan
    from planner.io import target
    from planner.workload import workload as W

    for flag, out in (("--json", json_out), ("--report", report)):
        if out is not None:
            target(out, flag)  # before the work: a bad path fails in a second, not after the plan

    from planner.cli.emit import check_plan_emit, emit_after_plan  # --- emit: fail on bad flags before planning ---

    emit_engines = check_plan_emit(emit, emit_out, pilot_fraction)
    w = _plan_workload(workload, trace, rate, ttft_slo, tpot_slo, percentile)
    ttft_slo, tpot_slo, percentile = _given(ttft_slo, W.DEFAULT_TTFT_SLO_MS), _given(tpot_slo, W.DEFAULT_TPOT_SLO_MS), _given(percentile, W.DEFAULT_SLO_PERCENTILE)
    result = plan(model, w, rate=rate, requests_per_day=requests_per_day, peak_factor=peak_factor, input_len=input_len, output_len=output_len,
                  ttft_slo_ms=ttft_slo, tpot_slo_ms=tpot_slo, percentile=percentile, catalog=catalog, gpus=gpus, prefill_gpus=prefill_gpus,
                  decode_gpus=decode_gpus, provider=provider, current=current, profiles=profile or [], simulate=simulate,
                  weight_dtype=weight_dtype, kv_dtype=kv_dtype, kv_compression=kv_compression, pareto=pareto, schedule=schedule,
                  engine=engine, current_split=current_split, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                  uncertainty=uncertainty, draws=draws, itl_slo_ms=itl_slo)
    _plan_outputs(result, json_out, report)
    if emit_engines:  # --- emit ---
        emit_after_plan(result, emit_engines, emit_out, pilot_fraction)
    if not result.feasible:
        raise Infeasible(f"no plan meets the SLOs: disaggregated: {result.disaggregated.why_infeasible or result.disaggregated.binding}; colocated: {result.colocated.why_infeasible or result.colocated.binding}")


def _plan_workload(workload: Optional[Path], trace: Optional[Path], rate, ttft_slo, tpot_slo, percentile):
    """The workload of a file or a trace, with flags given beside it winning; None when the flags alone describe it."""
    from planner.workload import workload as W
    from planner.workload.workload import load_workload_file, slo_from_flags, workload_from_trace

    if workload and trace:
        raise BadInput("give --workload or --trace, not both (a workload file can name its trace)")
    w = None
    if workload:
        with named("--workload"):
            w = load_workload_file(workload)
        if rate is not None:
            w = w.with_rate(rate * w.peak_factor)
        if (ttft_slo, tpot_slo, percentile) != (None, None, None):  # flags given beside a file win
            s = slo_from_flags(_given(ttft_slo, w.slo.ttft_ms), _given(tpot_slo, w.slo.tpot_ms), _given(percentile, w.slo.percentile), ("--ttft-slo", "--tpot-slo", "--percentile"))
            w = w.with_slo(s.ttft_ms, s.tpot_ms, s.percentile)
    elif trace:
        slo = slo_from_flags(_given(ttft_slo, W.DEFAULT_TTFT_SLO_MS), _given(tpot_slo, W.DEFAULT_TPOT_SLO_MS), _given(percentile, W.DEFAULT_SLO_PERCENTILE), ("--ttft-slo", "--tpot-slo", "--percentile"))
        with named("--trace"):
            w = workload_from_trace(trace, slo, rate=rate)
    return w


def _plan_outputs(result, json_out: Optional[str], report: Optional[Path]) -> None:
    """The terminal summary, then --json and --report."""
    from rich.console import Console

    from planner.io import STREAMS
    from planner.report.terminal import render_markdown, render_terminal

    to_stdout = json_out in STREAMS and STREAMS[json_out] == "stdout"
    render_terminal(result, Console(stderr=to_stdout, markup=False))
    if json_out:
        _write(json_out, json.dumps(result.to_dict(), indent=2, default=_jsonable) + "\n", "--json")
    if report:
        if report.suffix.lower() in (".html", ".htm"):
            try:
                from planner.report.html import render_plan_html
            except ImportError:
                raise BadInput(f"--report {report}: HTML reports are not available in this version; use a .md file") from None

            _write(report, render_plan_html(result), "--report")
        else:
            _write(report, render_markdown(result), "--report")


@app.command("breakeven")
def breakeven_cmd(
    model: str = typer.Option("llama-3.1-8b", "--model", "-m", help="Preset name (see `planner models`) or a Hugging Face config.json."),
    rate: float = typer.Option(10.0, "--rate", help="Arrival rate of every cell, req/s (or --rates)."),
    rates: Optional[str] = typer.Option(None, "--rates", help="Comma-separated rates (req/s): one map per rate."),
    input_lens: Optional[str] = typer.Option(None, "--input-lens", help="Prompt lengths: 64,256,... or FIRST:LAST:COUNT log-spaced [default: 64:32768:12]."),
    output_lens: Optional[str] = typer.Option(None, "--output-lens", help="Output lengths, same forms [default: 16:4096:10]."),
    ttft_slo: float = typer.Option(1000.0, "--ttft-slo", "--ttft-slo-ms", help="Time-to-first-token target, ms (as plan)."),
    tpot_slo: float = typer.Option(50.0, "--tpot-slo", "--tpot-slo-ms", help="Time-per-output-token target, ms (as plan)."),
    percentile: int = typer.Option(90, "--percentile", help="SLO percentile: 50, 90 or 99."),
    engine: str = typer.Option("generic", "--engine", help="Serving engine whose scheduling the model takes (as plan): generic, vllm or planner."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="Your own GPU catalog YAML [default: the packaged gpu_catalog.yaml]."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="Comma-separated GPU types to consider."),
    prefill_gpus: Optional[str] = typer.Option(None, "--prefill-gpus", help="GPU types for the prefill pool only."),
    decode_gpus: Optional[str] = typer.Option(None, "--decode-gpus", help="GPU types for the decode pool only."),
    provider: Optional[str] = typer.Option(None, "--provider", help="Price from this provider [default: cheapest listed on-demand]."),
    profile: Optional[List[Path]] = typer.Option(None, "--profile", help="Profile file(s) from `planner profile` to calibrate the model."),
    weight_dtype: str = typer.Option("bf16", "--weight-dtype", help="Weights: bf16, fp16, fp8, int8, int4, fp32."),
    kv_dtype: str = typer.Option("bf16", "--kv-dtype", help="KV cache: bf16, fp16, fp8, int8, fp32."),
    kv_compression: str = typer.Option("none", "--kv-compression", help="Compress KV for the transfer between pools: none, fp8, int8."),
    draws: int = typer.Option(8, "--draws", help="Monte Carlo draws per cell for savings_pct_interval (0: none)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", help="Worker processes [default: the CPU count]."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the map as JSON to FILE ('-' for stdout)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the heatmap page: FILE.html."),
):
    """Map where disaggregation is cheaper: prompt length x output length (x rate), what binds, by how much."""
    from rich.console import Console

    from planner.api import build_space
    from planner.io import STREAMS, target
    from planner.report.breakeven import render_html, render_terminal
    from planner.sizing.breakeven import DEFAULT_INPUTS, DEFAULT_OUTPUTS, breakeven, parse_lengths, parse_rates
    from planner.specs.models import resolve_model
    from planner.workload.workload import slo_from_flags

    spec = resolve_model(model)
    slo = slo_from_flags(ttft_slo, tpot_slo, percentile)
    if not 0 <= draws <= 10000:
        raise BadInput(f"--draws {draws}: expected 0 to 10000")
    if jobs is not None and jobs < 1:
        raise BadInput(f"--jobs {jobs}: expected at least 1")
    if report and report.suffix.lower() not in (".html", ".htm"):
        raise BadInput(f"--report {report}: the map is an HTML page; give FILE.html")
    ins, outs = parse_lengths(input_lens, DEFAULT_INPUTS, "--input-lens"), parse_lengths(output_lens, DEFAULT_OUTPUTS, "--output-lens")
    rate_list = parse_rates(rates) if rates else parse_rates(str(rate), "--rate")
    for flag, out in (("--json", json_out), ("--report", report)):
        if out is not None:
            target(out, flag)  # before minutes of work
    _, space, calibration = build_space(catalog, gpus, prefill_gpus, decode_gpus, provider, profile or [], weight_dtype, kv_dtype, kv_compression,
                                        engine)
    result = breakeven(spec, space, slo, calibration, ins, outs, rate_list, draws=draws, jobs=jobs)
    to_stdout = json_out in STREAMS and STREAMS[json_out] == "stdout"
    render_terminal(result, Console(stderr=to_stdout, markup=False))
    if json_out:
        _write(json_out, json.dumps(result, indent=1, default=_jsonable) + "\n", "--json")
    if report:
        _write(report, render_html(result), "--report")
    if not any(c["recommendation"] in ("disaggregated", "colocated") for c in result["grid"]):
        raise Infeasible("no cell of the map has a plan that meets the SLOs on the allowed GPUs")


def _given(value, default):
    return default if value is None else value


def _write(path, text: str, what: str) -> None:
    from planner.io import STREAMS, write_output

    write_output(path, text, what)
    if str(path) not in STREAMS:
        typer.echo(f"wrote {path}", err=True)


@app.command("models")
def models_cmd():
    """List the model presets with their derived sizes."""
    from rich.console import Console
    from rich.table import Table

    from planner.specs.models import PRESETS

    t = Table(title="Model presets")
    for c in ("name", "params (B)", "active (B)", "bf16 weights (GB)", "KV bf16 (B/token)", "layers", "heads/kv"):
        t.add_column(c)
    for s in PRESETS.values():
        t.add_row(s.name, f"{s.params_total / 1e9:.3f}", f"{s.params_active / 1e9:.3f}", f"{s.weight_bytes('bf16') / 1e9:.2f}", str(s.kv_bytes_per_token()), str(s.layers), f"{s.heads}/{s.kv_heads}")
    Console(markup=False).print(t)


@app.command("gpus")
def gpus_cmd(catalog: Optional[Path] = typer.Option(None, "--catalog", help="GPU catalog YAML [default: packaged]."),
             provider: Optional[str] = typer.Option(None, "--provider", help="Show this provider's price.")):
    """List the GPU catalog: specs and the price the planner would use."""
    from rich.console import Console
    from rich.table import Table

    from planner.specs.catalog import load_catalog

    cat = load_catalog(catalog)
    t = Table(title=f"GPU catalog ({cat.path or 'packaged'})")
    for c in ("key", "name", "memory (GB)", "bandwidth (GB/s)", "bf16 (TFLOP/s)", "fp8 (TFLOP/s)", "$/GPU-hour", "provider", "confidence"):
        t.add_column(c)
    for g in cat:
        try:
            p = g.price(provider)
            price, prov, conf = f"{p.usd_per_gpu_hour:.3f}", p.provider, p.confidence
        except PlannerError:
            price, prov, conf = "-", "-", "-"
        t.add_row(g.key, g.name, f"{g.memory_gb:g}", f"{g.mem_bw_gbps:g}", f"{g.bf16_tflops:g}", f"{g.fp8_tflops:g}" if g.fp8_tflops else "-", price, prov, conf)
    Console(markup=False).print(t)


def _register_optional() -> None:
    """Sub-commands that live beside the planner core (their modules import torch lazily)."""
    try:
        from planner.cli.profile import profile_app

        app.add_typer(profile_app, name="profile", help="Measure prefill, decode, utilization and KV size (locally or on an endpoint).")
    except ImportError:  # pragma: no cover - only while a module is missing in a partial checkout
        pass
    try:
        from planner.cli.serve import serve

        app.command("serve")(serve)
    except ImportError:  # pragma: no cover
        pass
    try:
        from planner.cli.validate import validate

        app.command("validate")(validate)
    except ImportError:  # pragma: no cover
        pass
    try:  # --- emit (planner/emit/) ---
        from planner.cli.emit import emit_cmd

        app.command("emit")(emit_cmd)
    except ImportError:  # pragma: no cover
        pass


_register_optional()


def _usage_error(e: BaseException) -> bool:
    """A click usage error: from the plain click package or the copy typer >= 0.22 vendors.

    Matched by shape (format_message + exit_code, from a click or typer module), so both families
    are caught without importing either one's exception classes by name.
    """
    mod = type(e).__module__ or ""
    return (mod.split(".")[0] in ("click", "typer") and hasattr(e, "format_message")
            and isinstance(getattr(e, "exit_code", None), int))


def _bad_value(e: BaseException) -> str:
    """' (got VALUE)' when a pydantic coercion (typer 0.29's) rejected a value: its message omits it."""
    errors = getattr(e.__cause__, "errors", None)
    try:
        value = errors()[0]["input"] if callable(errors) else None
    except Exception:
        return ""
    return "" if value is None else f" (got {shown(value)})"


def _clip_words(message: str) -> str:
    """Click quotes a rejected value whole ('AAAA...' is not a valid float): each word longer than
    MAX_SHOWN characters cut to that, with its full length, so one bad flag stays one short line."""
    import re

    from planner.errors import MAX_SHOWN

    return re.sub(r"\S{%d,}" % (MAX_SHOWN + 1), lambda m: f"{m.group()[:MAX_SHOWN]}... ({len(m.group()):,} characters)", message)


def _red_line(message: str) -> None:
    """One line on stderr: 'error: ...' in red on a terminal; the message is never read as markup."""
    from rich.console import Console
    from rich.text import Text

    line = Text("error: ", style="bold red")
    line.append(one_line(message))
    Console(stderr=True, soft_wrap=True, highlight=False).print(line)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the typer app, turning every user mistake into one red line and an exit code:
    PlannerError (its own code: 2 bad input, 3 infeasible), click/typer usage errors (2)."""
    try:
        rc = app(args=argv, standalone_mode=False)  # returns typer.Exit codes instead of exiting
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except PlannerError as e:
        _red_line(str(e))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        if type(e).__name__ == "NoArgsIsHelpError":  # `planner` or `planner profile` alone: help
            sys.stdout.write(e.format_message() + "\n")
            sys.exit(0)
        if _usage_error(e):
            msg = _clip_words(e.format_message()) + _bad_value(e)
            ctx = getattr(e, "ctx", None)
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None and getattr(ctx, "command_path", None) else ""
            _red_line(msg + hint)
            sys.exit(2)
        if type(e).__name__ == "Abort" and (type(e).__module__ or "").split(".")[0] in ("click", "typer"):
            sys.stderr.write("aborted\n")
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
