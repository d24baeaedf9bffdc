"""Profile files: what `planner profile` measured, self-describing, one JSON file per run.

Format (`"format": "planner-profile/1"`), documented in the README:

    {
      "format": "planner-profile/1",
      "kind": "local" | "endpoint",
      "created": ISO-8601 UTC, "command": the command line,
      "device": {"name", "type" ("cpu"|"cuda"|"remote"), "count", "memory_gb", "driver", "torch", ...},
      "engine": {"name", "version", "url"?},
      "model": ModelSpec fields (or {"name": served model} for an endpoint),
      "dtype": "bf16" | "fp16" | "fp32" | ..., "tp": 1,
      "ceilings": {"matmul_tflops", "mem_bw_gbps", "link_gbps"}  (measured; null when not),
      "kv_bytes_per_token": {"measured", "formula"},
      "utilization": {"available": bool, "note": str, "prefill": {...}, "decode": {...}},
      "samples": [{"phase": "prefill"|"decode", "batch", "prompt_len", "context_len",
                   "seconds" (median), "p10_s", "p90_s", "reps", ...}, ...],
      "extra": {...}   (anything else a profiler wants to keep: raw requests, metrics deltas)
    }

Every sample row has `phase`, `batch`, `prompt_len` (prefill; 0 for decode), `context_len`
(decode; 0 for prefill) and `seconds`. Files are written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from planner.errors import BadInput, shown

FORMAT = "planner-profile/1"
REQUIRED_SAMPLE_COLUMNS = ("phase", "batch", "prompt_len", "context_len", "seconds")


@dataclass
class Profile:
    """A loaded profile. `samples` is a pandas DataFrame; the rest is the file's header."""

    meta: dict
    samples: "object"  # pandas.DataFrame (pandas imported lazily)
    path: Path | None = None
    raw_samples: list = field(default_factory=list)

    @property
    def device_name(self) -> str:
        return str(self.meta.get("device", {}).get("name", "unknown"))

    @property
    def device_type(self) -> str:
        return str(self.meta.get("device", {}).get("type", "unknown"))

    @property
    def ceilings(self) -> dict:
        return self.meta.get("ceilings") or {}

    @property
    def dtype(self) -> str:
        return str(self.meta.get("dtype", "bf16"))

    @property
    def tp(self) -> int:
        return int(self.meta.get("tp", 1))

    @property
    def model(self) -> dict:
        return self.meta.get("model") or {}

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", "local"))


def atomic_write_text(path: str | Path, text: str, what: str = "output", make_parents: bool = False) -> None:
    """Write `text` to `path` atomically, only over a regular file (planner.io.write_output)."""
    from planner.io import write_output

    write_output(path, text, what, make_parents)


def check_writable(path: str | Path) -> None:
    """Fail early (before minutes of measuring) when `path` cannot be written as a profile."""
    from planner.io import target

    target(path, "--out", make_parents=True)


def save_profile(path: str | Path, meta: dict, samples: list[dict]) -> Path:
    """Validate and atomically write a profile (header dict + list of sample rows). Returns the path."""
    for i, s in enumerate(samples):
        missing = [c for c in REQUIRED_SAMPLE_COLUMNS if c not in s]
        if missing:
            raise ValueError(f"sample {i} lacks {missing}")  # a bug in a profiler, not user input
    doc = {"format": FORMAT, **{k: v for k, v in meta.items() if k != "samples"}, "samples": samples}
    atomic_write_text(path, json.dumps(doc, indent=1, default=_jsonable) + "\n", "--out", make_parents=True)
    return Path(path)


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, (np.generic, np.bool_)):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


#: Sane bounds of a sample: far beyond any profiler run, low enough that nothing downstream (the
#: calibration builds arrays of `batch` prompts) can be asked for gigabytes by one edited number.
MAX_SAMPLES = 100_000
MAX_BATCH = 65_536
MAX_TOKENS = 1 << 24
MAX_SECONDS = 86_400.0
_SAMPLE_INTS = {"batch": (1, MAX_BATCH), "prompt_len": (0, MAX_TOKENS), "context_len": (0, MAX_TOKENS),
                "reps": (0, 10_000_000)}
_SPEC_INTS = ("layers", "hidden", "heads", "kv_heads", "head_dim", "intermediate", "vocab", "max_position",
              "experts", "experts_per_token")


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_header(path: Path, doc: dict) -> None:
    """The header fields the planner reads: kind, tp, dtype, device, model, ceilings, kv bytes."""
    def bad(field, v, want):
        raise BadInput(f"{path}: field {field} must be {want}, got {shown(v)}")

    if doc.get("kind", "local") not in ("local", "endpoint"):
        bad("kind", doc["kind"], "'local' or 'endpoint'")
    tp = doc.get("tp", 1)
    if not (_is_num(tp) and float(tp).is_integer() and 1 <= tp <= 1024):
        bad("tp", tp, "an integer in 1..1024")
    if not isinstance(doc.get("dtype", "bf16"), str):
        bad("dtype", doc["dtype"], "a string")
    for k in ("device", "model", "ceilings", "kv_bytes_per_token", "utilization", "engine"):
        if doc.get(k) is not None and not isinstance(doc[k], dict):
            bad(k, doc[k], "an object")
    dev = doc.get("device") or {}
    if not isinstance(dev.get("name", ""), str):
        bad("device.name", dev["name"], "a string")
    if dev.get("memory_gb") is not None and not (_is_num(dev["memory_gb"]) and 0 < dev["memory_gb"] <= 1e6):
        bad("device.memory_gb", dev["memory_gb"], "a positive number of GB")
    for k, v in (doc.get("ceilings") or {}).items():
        if k in ("source", "note"):  # where the ceilings came from: text
            if v is not None and not isinstance(v, str):
                bad(f"ceilings.{k}", v, "a string")
        elif v is not None and not (_is_num(v) and 0 < v <= 1e9):
            bad(f"ceilings.{k}", v, "a positive number (or null)")
    model = doc.get("model") or {}
    if not isinstance(model.get("name", ""), str):
        bad("model.name", model["name"], "a string")
    for k in _SPEC_INTS:
        v = model.get(k)
        if v is not None and not (_is_num(v) and float(v).is_integer() and 1 <= v <= MAX_TOKENS * 64):
            bad(f"model.{k}", v, "a positive integer")
    shape = [k for k in _SPEC_INTS[:8] if model.get(k) is not None]
    if shape and len(shape) < 8:  # a local profile stores the whole shape; an endpoint's, only a name
        missing = [k for k in _SPEC_INTS[:8] if k not in shape]
        raise BadInput(f"{path}: field model lacks {', '.join(missing)} (a local profile's model holds its whole shape)")
    for k in ("tied_embeddings", "gated_mlp", "learned_positions"):
        if model.get(k) is not None and not isinstance(model[k], bool):
            bad(f"model.{k}", model[k], "true or false")
    if model.get("heads") and model.get("kv_heads") and model["heads"] % model["kv_heads"]:
        raise BadInput(f"{path}: field model.kv_heads {model['kv_heads']} does not divide model.heads {model['heads']}")
    for k in ("norm_eps", "rope_theta"):
        if model.get(k) is not None and not (_is_num(model[k]) and model[k] > 0):
            bad(f"model.{k}", model[k], "a positive number")
    for k, v in (doc.get("kv_bytes_per_token") or {}).items():
        if v is not None and not (_is_num(v) and v > 0):
            bad(f"kv_bytes_per_token.{k}", v, "a positive number (or null)")


def _check_sample(path: Path, i: int, r, max_tokens: int) -> None:
    """One sample row: required columns, types, finite positive seconds, bounded sizes."""
    where = f"{path}: samples[{i}]"
    if not isinstance(r, dict):
        raise BadInput(f"{where} is not an object")
    for c in REQUIRED_SAMPLE_COLUMNS:
        if c not in r:
            raise BadInput(f"{where} lacks field {shown(c)}")
    if r["phase"] not in ("prefill", "decode"):
        raise BadInput(f"{where}.phase is {shown(r['phase'])}, expected 'prefill' or 'decode'")
    for c, (lo, hi) in _SAMPLE_INTS.items():
        v = r.get(c, lo)
        if c in ("prompt_len", "context_len"):
            hi = min(hi, max_tokens)
        if not (_is_num(v) and float(v).is_integer() and lo <= v <= hi):
            raise BadInput(f"{where}.{c} must be an integer in {lo}..{hi:,}"
                           f"{' (the model max_position)' if hi == max_tokens else ''}, got {shown(v)}")
    need = "prompt_len" if r["phase"] == "prefill" else "context_len"
    if r[need] < 1:
        raise BadInput(f"{where}.{need} must be >= 1 for a {r['phase']} sample, got {shown(r[need])}")
    s = r["seconds"]
    if not (_is_num(s) and 0 < s <= MAX_SECONDS):
        raise BadInput(f"{where}.seconds must be a positive finite number of seconds (at most {MAX_SECONDS:g}), got {shown(s)}")
    for c, v in r.items():
        if c in REQUIRED_SAMPLE_COLUMNS or c in _SAMPLE_INTS:
            continue
        if c in ("p10_s", "p90_s") and v is not None and not (_is_num(v) and 0 <= v <= MAX_SECONDS):
            raise BadInput(f"{where}.{c} must be a finite number of seconds >= 0 (or null), got {shown(v)}")
        if c.endswith("_bucket_s") and isinstance(v, list):  # a histogram bucket's edges [lo, hi] (s)
            if not (len(v) == 2 and all(x is None or (_is_num(x) and x >= 0) for x in v)):
                raise BadInput(f"{where}.{c} must be a bucket's [low, high] edges in seconds, got {shown(v)}")
            continue
        if not (v is None or isinstance(v, (bool, str)) or _is_num(v)):
            raise BadInput(f"{where}.{c} must be a number, string or null, got {shown(v)}")


def load_profile(path: str | Path) -> Profile:
    """Read and check a profile file; raises BadInput naming the file, field and value on error.

    The whole file is checked (header types, every sample's columns, types and bounds, sizes within
    the model's max_position) before anything is built from it, so a hand-edited batch of 1e9
    is an error line, not gigabytes allocated later.
    """
    import pandas as pd

    from planner.safeload import load_json, read_text

    path = Path(path)
    doc = load_json(read_text(path, str(path), "profile file", max_bytes=256 << 20), str(path))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadInput(f"{path}: not a planner profile (field 'format' should be {shown(FORMAT)})")
    _check_header(path, doc)
    rows = doc.get("samples")
    if not isinstance(rows, list):
        raise BadInput(f"{path}: field 'samples' must be a list")
    if len(rows) > MAX_SAMPLES:
        raise BadInput(f"{path}: {len(rows):,} samples, more than the {MAX_SAMPLES:,} a profile may hold")
    max_tokens = int((doc.get("model") or {}).get("max_position") or MAX_TOKENS)
    for i, r in enumerate(rows):
        _check_sample(path, i, r, max_tokens)
    df = pd.DataFrame(rows, columns=None if rows else list(REQUIRED_SAMPLE_COLUMNS))
    meta = {k: v for k, v in doc.items() if k != "samples"}
    return Profile(meta=meta, samples=df, path=path, raw_samples=rows)


def profile_engine(prof) -> dict:
    """The engine a profile measured and its scheduler limits: {"name", "version",
    "max_num_seqs", "max_num_batched_tokens"}. A local profile times this project's torch engine,
    which `planner serve` runs: engine "planner"."""
    if prof.kind != "endpoint":
        return {"name": "planner", "version": None, "max_num_seqs": None, "max_num_batched_tokens": None}
    eng = prof.meta.get("engine") or {}
    sched = (prof.meta.get("deployment") or {}).get("scheduler") or {}

    def limit(key):
        v = (sched.get(key) or {}).get("value")
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None

    name = eng.get("name") if isinstance(eng, dict) else eng
    return {"name": str(name or "unknown"), "version": eng.get("version") if isinstance(eng, dict) else None,
            "max_num_seqs": limit("max_num_seqs"), "max_num_batched_tokens": limit("max_num_batched_tokens")}


def command_line() -> str:
    """The command as a user would retype it: `planner profile local ...` however it was launched."""
    argv = list(sys.argv)
    a0 = Path(argv[0]).as_posix() if argv else ""
    if Path(a0).name == "planner" or a0.endswith("planner/__main__.py"):
        argv[0] = "planner"
    elif a0.endswith("planner/cli/profile.py"):  # python -m planner.cli.profile
        argv[0:1] = ["planner", "profile"]
    return shlex.join(argv)
