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
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from planner.errors import BadInput

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


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` via a temp file in the same folder and a rename: never half a file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise BadInput(f"{path}: cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report should read like any file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def check_writable(path: str | Path) -> None:
    """Fail early (before minutes of measuring) when `path` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"{path}: cannot create folder {parent}: {e.strerror or e}") from None
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise BadInput(f"{path}: no write permission")


def save_profile(path: str | Path, meta: dict, samples: list[dict]) -> Path:
    """Validate and atomically write a profile (header dict + list of sample rows). Returns the path."""
    for i, s in enumerate(samples):
        missing = [c for c in REQUIRED_SAMPLE_COLUMNS if c not in s]
        if missing:
            raise ValueError(f"sample {i} lacks {missing}")  # a bug in a profiler, not user input
    doc = {"format": FORMAT, **{k: v for k, v in meta.items() if k != "samples"}, "samples": samples}
    atomic_write_text(path, json.dumps(doc, indent=1, default=_jsonable) + "\n")
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


def load_profile(path: str | Path) -> Profile:
    """Read and check a profile file; raises BadInput naming the file and field on error."""
    import pandas as pd

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path}: profile file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: cannot read profile: {e}") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: not a profile (invalid JSON: {e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadInput(f"{path}: not a planner profile (field 'format' should be {FORMAT!r})")
    rows = doc.get("samples")
    if not isinstance(rows, list):
        raise BadInput(f"{path}: field 'samples' must be a list")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise BadInput(f"{path}: samples[{i}] is not an object")
        for c in REQUIRED_SAMPLE_COLUMNS:
            if c not in r:
                raise BadInput(f"{path}: samples[{i}] lacks field {c!r}")
        if r["phase"] not in ("prefill", "decode"):
            raise BadInput(f"{path}: samples[{i}].phase is {r['phase']!r}, expected 'prefill' or 'decode'")
        s = r["seconds"]
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not s > 0:
            raise BadInput(f"{path}: samples[{i}].seconds must be a positive number, got {s!r}")
    df = pd.DataFrame(rows, columns=None if rows else list(REQUIRED_SAMPLE_COLUMNS))
    meta = {k: v for k, v in doc.items() if k != "samples"}
    return Profile(meta=meta, samples=df, path=path, raw_samples=rows)


def command_line() -> str:
    """The command as a user would retype it: `planner profile local ...` however it was launched."""
    argv = list(sys.argv)
    a0 = Path(argv[0]).as_posix() if argv else ""
    if Path(a0).name == "planner" or a0.endswith("planner/__main__.py"):
        argv[0] = "planner"
    elif a0.endswith("planner/cli/profile.py"):  # python -m planner.cli.profile
        argv[0:1] = ["planner", "profile"]
    return shlex.join(argv)
