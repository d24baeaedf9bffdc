"""Emit: from a plan to the launch recipe of an engine (vLLM, SGLang, Dynamo, llm-d).

recipe.py derives once what every engine needs from a plan (per deployment: GPU type, tp,
replicas, batch cap, token budget, dtypes; the predictions; the pilot's scaling in pilot.py);
vllm.py, sglang.py, dynamo.py and llmd.py spell it in each engine's own flags; header.py writes
the comment block each file starts with. `emit` writes the files; nothing here imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from planner.errors import BadInput

ENGINES = ("vllm", "sglang", "dynamo", "llm-d")


def parse_engines(values: list[str] | None) -> list[str]:
    """`--emit vllm --emit sglang`, `--emit vllm,sglang` or `--emit all` -> engine names, in order."""
    out: list[str] = []
    for v in values or []:
        for e in (x.strip().lower() for x in v.split(",")):
            if not e:
                continue
            if e == "all":
                out += [x for x in ENGINES if x not in out]
            elif e in ENGINES:
                out += [e] if e not in out else []
            else:
                raise BadInput(f"--emit/--engine {e!r}: expected one of {', '.join(ENGINES)} or all")
    return out


def render(recipe, engine: str) -> dict[str, str]:
    """{file name: text} of one engine's recipe."""
    from planner.emit import dynamo, llmd, sglang, vllm

    return {"vllm": vllm.render, "sglang": sglang.render, "dynamo": dynamo.render, "llm-d": llmd.render}[engine](recipe)


def load_plan(path: str | Path) -> dict:
    """A `planner plan --json` file, or BadInput naming it."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise BadInput(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{p}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{p}: not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(d, dict):
        raise BadInput(f"{p}: expected a JSON object (a `planner plan --json` result), got {type(d).__name__}")
    return d


def emit(plan: dict, engines: list[str], out_dir: str | Path, source: str, side: str | None = None,
         pilot_fraction: float | None = None, model_id: str | None = None) -> list[Path]:
    """Write each engine's recipe for `plan` (a PlanResult.to_dict()) under `out_dir`; returns the
    paths. `source`: the plan file the headers and validate commands name."""
    from planner.emit.recipe import recipe_from_plan
    from planner.io import write_output as atomic_write_text

    if not engines:
        raise BadInput(f"--engine: expected one of {', '.join(ENGINES)} or all")
    recipe = recipe_from_plan(plan, source, side, pilot_fraction, model_id)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: not a folder")
    written = []
    for e in engines:
        for name, text in render(recipe, e).items():
            path = out / name
            if path.exists() and not path.is_file():
                raise BadInput(f"--out {out}: {name} exists and is not a regular file")
            atomic_write_text(path, text, "--out", make_parents=True)
            written.append(path)
    return written
