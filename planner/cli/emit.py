"""`planner emit PLAN.json --engine ... --out DIR` and the `planner plan ... --emit ENGINE --out DIR`
tail: parse, call planner.emit.emit, say what was written. No torch at import time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from planner.errors import BadInput


def emit_cmd(
    plan_file: Path = typer.Argument(..., help="A `planner plan --json` result."),
    engine: List[str] = typer.Option(..., "--engine", "-e", help="vllm, sglang, dynamo, llm-d or all (repeatable, or comma-separated)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the recipes into."),
    side: Optional[str] = typer.Option(None, "--side", help="disaggregated or colocated (default: the plan's recommendation)."),
    pilot_fraction: Optional[float] = typer.Option(None, "--pilot-fraction", help="Share of traffic for a pilot, e.g. 0.1 (default: the full plan)."),
    model_id: Optional[str] = typer.Option(None, "--model-id", help="What the engines load (Hugging Face repo or path) (default: the preset's repo)."),
):
    """Write the launch recipe of a saved plan for vLLM, SGLang, Dynamo or llm-d."""
    from planner.emit import emit, load_plan, parse_engines

    engines = parse_engines(engine)
    written = emit(load_plan(plan_file), engines, out, str(plan_file), side, pilot_fraction, model_id)
    for p in written:
        typer.echo(f"wrote {p}", err=True)


def check_plan_emit(engines: Optional[List[str]], out: Optional[Path], pilot_fraction: Optional[float]) -> list[str]:
    """Before planning: the --emit engines, or BadInput when --emit lacks --out (or the reverse)."""
    from planner.emit import parse_engines

    names = parse_engines(engines)
    if names and out is None:
        raise BadInput("--emit needs --out DIR (the folder the recipes go into)")
    if out is not None and not names:
        raise BadInput("--out is for --emit ENGINE: give the engines to emit (vllm, sglang, dynamo, llm-d or all)")
    if pilot_fraction is not None and not names:
        raise BadInput("--pilot-fraction is for --emit: give the engines to emit")
    return names


def emit_after_plan(result, engines: list[str], out: Path, pilot_fraction: Optional[float]) -> None:
    """`planner plan --emit`: save the plan beside the recipes (their validate lines name it), then emit."""
    from planner.emit import emit
    from planner.io import write_output as atomic_write_text
    from planner.measure.files import _jsonable

    if not result.feasible:
        typer.echo("no feasible plan: nothing emitted", err=True)
        return
    plan = json.loads(json.dumps(result.to_dict(), default=_jsonable))
    source = Path(out) / "plan.json"
    if source.exists() and not source.is_file():
        raise BadInput(f"--out {out}: plan.json exists and is not a regular file")
    atomic_write_text(source, json.dumps(plan, indent=2) + "\n", "--out", make_parents=True)
    for p in [source] + emit(plan, engines, out, str(source), None, pilot_fraction):
        typer.echo(f"wrote {p}", err=True)
