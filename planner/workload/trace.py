"""Request traces: per-request prompt and output lengths, and when each request arrived.

A trace is the most honest workload there is: it carries the real length distributions *and* the
real arrival pattern (bursts, daily swings) that a Poisson assumption hides. This module reads one
from CSV or JSONL and derives what sizing needs from it:

- mean rate            = requests / span                                   (req/s)
- peak per-minute rate = max over whole minutes (counted from the first arrival) of count / 60 s
- peak factor          = peak per-minute rate / mean rate                  (dimensionless, >= 1)
- arrival cv^2         = Var[gap] / E[gap]^2 over inter-arrival gaps       (1.0 for Poisson)
- hourly profile       = requests / seconds observed, per hour of day      (24 rates, req/s)

Columns are recognised by name, case-insensitively (see ALIASES), so the Azure LLM inference trace
(TIMESTAMP, ContextTokens, GeneratedTokens), OpenAI-style logs (prompt_tokens, completion_tokens)
and our own format (input_tokens, output_tokens, timestamp) all load as they are. Timestamps are
seconds (any origin) or ISO 8601 datetime strings. pandas is imported inside the loader so that
importing this module stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from planner.errors import BadInput, shown

#: Accepted column names per role (compared lowercased, spaces and dashes read as underscores).
#: The first alias present wins when a file has several.
ALIASES = {
    "input": ("input_tokens", "prompt_tokens", "contexttokens", "context_tokens", "input_len",
              "input_length", "prompt_len", "prompt_length", "num_prompt_tokens", "request_tokens"),
    "output": ("output_tokens", "completion_tokens", "generatedtokens", "generated_tokens",
               "output_len", "output_length", "completion_len", "num_output_tokens", "response_tokens"),
    "timestamp": ("timestamp", "timestamp_s", "time", "time_s", "arrival_time", "arrival_time_s",
                  "arrival", "ts", "created", "created_at"),
}

#: Numeric timestamps above this are read as Unix epoch seconds (after 1973), so hours are clock hours.
EPOCH_THRESHOLD_S = 1e8
#: An hour of day counts as observed in the hourly profile only with this much trace time in it.
MIN_HOUR_EXPOSURE_S = 300.0


@dataclass(frozen=True, eq=False)
class Trace:
    """A loaded trace, rows in arrival order: request i has input_tokens[i], output_tokens[i], timestamps_s[i].

    `timestamps_s` are seconds from the first arrival (already multiplied by `time_scale`), or None
    when the file has no time column. `clock_offset_s` is the first arrival's time of day in seconds
    after midnight (UTC for epoch numbers or strings with an offset), or None when times are relative.
    """

    source: str
    input_tokens: np.ndarray = field(repr=False)  # int64, tokens
    output_tokens: np.ndarray = field(repr=False)  # int64, tokens
    timestamps_s: np.ndarray | None = field(default=None, repr=False)  # float64, s from first arrival
    time_scale: float = 1.0
    clock_offset_s: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def n_requests(self) -> int:
        return int(len(self.input_tokens))

    @property
    def has_times(self) -> bool:
        return self.timestamps_s is not None

    @property
    def span_s(self) -> float | None:
        """Last minus first arrival (s); None without timestamps."""
        return None if self.timestamps_s is None else float(self.timestamps_s[-1])

    @cached_property
    def mean_rate_rps(self) -> float | None:
        """requests / span (req/s); None without timestamps or when every request arrives at once."""
        span = self.span_s
        return self.n_requests / span if span else None

    @cached_property
    def per_minute_counts(self) -> np.ndarray | None:
        """Requests in each whole minute counted from the first arrival (the partial last minute is dropped)."""
        span = self.span_s
        if not span or span < 60.0:
            return None
        full = int(span // 60.0)
        counts = np.bincount((self.timestamps_s // 60.0).astype(np.int64), minlength=full + 1)
        return counts[:full]

    @cached_property
    def peak_minute_rps(self) -> float | None:
        """Busiest whole minute's count / 60 s (req/s); the mean rate when the trace is under a minute.

        Even a perfectly steady Poisson stream has a busiest minute above its mean (by about
        2.5 sqrt(60 * rate) requests over an hour), so this includes the burst headroom sizing needs.
        """
        counts = self.per_minute_counts
        if counts is None:
            return self.mean_rate_rps
        return max(float(counts.max()) / 60.0, self.mean_rate_rps)

    @property
    def peak_factor(self) -> float | None:
        """peak per-minute rate / mean rate (>= 1)."""
        mean = self.mean_rate_rps
        return None if mean is None else self.peak_minute_rps / mean

    @cached_property
    def arrival_cv2(self) -> float | None:
        """Squared coefficient of variation of inter-arrival gaps, Var[g] / E[g]^2 (1.0 = Poisson).

        Measured over the whole trace, so slow swings in rate count as burstiness too.
        """
        if self.timestamps_s is None or self.n_requests < 3:
            return None
        gaps = np.diff(self.timestamps_s)
        m = gaps.mean()
        return float(gaps.var() / (m * m)) if m > 0 else None

    @cached_property
    def _hourly(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(rate per hour of day in req/s, seconds observed per hour of day), or None if span < 2 h."""
        if self.timestamps_s is None:
            return None
        t = self.timestamps_s / self.time_scale  # profile by the trace's own clock, then rescale rates
        if t[-1] < 2 * 3600.0:
            return None
        a = t + (self.clock_offset_s or 0.0)  # seconds after the first arrival's midnight
        hour_bins = np.arange(int(a[0] // 3600), int(a[-1] // 3600) + 1)
        exposure_per_bin = np.minimum(a[-1], (hour_bins + 1) * 3600.0) - np.maximum(a[0], hour_bins * 3600.0)
        exposure = np.zeros(24)
        np.add.at(exposure, hour_bins % 24, exposure_per_bin)
        counts = np.bincount((a // 3600).astype(np.int64) % 24, minlength=24)
        rates = np.divide(counts, exposure, out=np.zeros(24), where=exposure > 0) / self.time_scale
        return rates, exposure

    @property
    def hourly_rps(self) -> tuple[float, ...] | None:
        """24 rates (req/s) by hour of day, or None when the trace spans under 2 hours.

        Hours the trace does not cover (under MIN_HOUR_EXPOSURE_S of it) hold the mean rate;
        `hourly_covered` says which. With relative timestamps hour 0 is the trace's first hour.
        """
        h = self._hourly
        if h is None:
            return None
        rates, exposure = h
        filled = np.where(exposure >= MIN_HOUR_EXPOSURE_S, rates, self.mean_rate_rps)
        return tuple(float(r) for r in filled)

    @property
    def hourly_covered(self) -> tuple[bool, ...] | None:
        h = self._hourly
        return None if h is None else tuple(bool(e >= MIN_HOUR_EXPOSURE_S) for e in h[1])

    def describe(self) -> str:
        s = f"{self.n_requests} requests"
        if self.mean_rate_rps is not None:
            s += (f" over {self.span_s / 60:.1f} min, mean {self.mean_rate_rps:.3g} req/s, "
                  f"busiest minute {self.peak_minute_rps:.3g} req/s")
        return s


# ---- loading ----------------------------------------------------------------------------------


def load_trace(path: str | Path, time_scale: float = 1.0) -> Trace:
    """Read a CSV or JSONL trace (`.jsonl`, `.ndjson` or `.json` means JSON lines; else CSV).

    `time_scale` multiplies every gap between arrivals: 2.0 replays the trace at half its rate,
    0.5 at twice its rate. Rows are put in arrival order when they are not.
    Raises BadInput naming the file, the row (or JSON line) and the column for anything unusable.
    """
    p = Path(path)
    if not (time_scale > 0 and np.isfinite(time_scale)):
        raise BadInput(f"{p}: time_scale must be > 0, got {time_scale}")
    try:
        exists, regular = p.exists(), p.is_file()
    except (OSError, ValueError):
        exists = regular = False
    if not regular:
        raise BadInput(f"{p}: trace file not found" if not exists else f"{p}: not a regular file (a trace is a CSV or JSONL file)")
    is_jsonl = any(s in (".jsonl", ".ndjson", ".json") for s in p.suffixes)
    df = _read_jsonl(p) if is_jsonl else _read_csv(p)
    row = _LineOf(p, first=1 if is_jsonl else 2)  # CSV: line 1 is the header
    if len(df) == 0:
        raise BadInput(f"{p}: trace has no requests")

    cols = _find_columns(p, df)
    notes = []
    inp = _lengths(p, df, cols["input"], row)
    out = _lengths(p, df, cols["output"], row)
    ts, clock_offset, note = (None, None, None)
    if cols["timestamp"] is not None:
        ts, clock_offset, note = _timestamps(p, df, cols["timestamp"], row)
        if note:
            notes.append(note)
        if not np.all(ts[1:] >= ts[:-1]):
            order = np.argsort(ts, kind="stable")
            ts, inp, out = ts[order], inp[order], out[order]
            notes.append(f"{p.name}: rows were not in time order; sorted by {cols['timestamp']}")
        ts = (ts - ts[0]) * time_scale
        if ts[-1] > MAX_SPAN_S:
            raise BadInput(f"{p}: column {cols['timestamp']}: arrivals span {ts[-1]:.3g} s, more than a year "
                           f"({MAX_SPAN_S:.0f} s): not seconds, or not one trace")
        if time_scale != 1.0:
            notes.append(f"{p.name}: arrival gaps multiplied by time_scale {time_scale:g}")
    return Trace(source=str(p), input_tokens=inp, output_tokens=out, timestamps_s=ts,
                 time_scale=float(time_scale), clock_offset_s=clock_offset, notes=tuple(notes))


def _read_csv(p: Path):
    import warnings

    import pandas as pd

    try:
        # index_col=False: a row with more fields than the header must not silently turn the first
        # column into an index and shift every column left (pandas' default); pandas warns instead.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            df = pd.read_csv(p, skipinitialspace=True, index_col=False)
        if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
            _extra_fields(p)
        return df
    except pd.errors.EmptyDataError:
        raise BadInput(f"{p}: trace file is empty") from None
    except pd.errors.ParserError as e:
        raise BadInput(f"{p}: not a valid CSV: {shown(str(e).strip().splitlines()[-1])[1:-1]}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{p}: not a text CSV file (cannot decode as UTF-8)") from None


def _extra_fields(p: Path) -> None:
    """Raise BadInput naming the first line with more fields than the header (pandas only warns)."""
    import csv

    with open(p, encoding="utf-8", errors="replace", newline="") as f:
        rows = csv.reader(f, skipinitialspace=True)
        header = None
        for row in rows:
            if not any(c.strip() for c in row):
                continue
            if header is None:
                header = len(row)
            elif len(row) > header:
                raise BadInput(f"{p}: line {rows.line_num}: {len(row)} fields, but the header names {header} columns")
    raise BadInput(f"{p}: a row has more fields than the header names columns")


def _read_jsonl(p: Path):
    import pandas as pd

    from planner.safeload import load_json

    try:
        # dtype off: a column named "timestamp" holding epoch seconds must stay numbers.
        df = pd.read_json(p, lines=True, dtype=False)
    except (ValueError, TypeError, RecursionError):
        df = None  # find the offending line below, to name it
    except UnicodeDecodeError:
        raise BadInput(f"{p}: not a text JSONL file (cannot decode as UTF-8)") from None
    if df is None or (len(df) and not isinstance(df.columns[0], str)):
        with open(p, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                rec = load_json(line, f"{p}: line {n}")
                if not isinstance(rec, dict):
                    raise BadInput(f"{p}: line {n}: expected a JSON object per line, got {type(rec).__name__}")
        raise BadInput(f"{p}: cannot read as JSON lines")
    if len(df) == 0 and p.stat().st_size == 0:
        raise BadInput(f"{p}: trace file is empty")
    return df


class _LineOf:
    """Maps a data row index to 'line N' of the file: pandas skips blank lines, people count them."""

    def __init__(self, p: Path, first: int):
        self.p, self.first = p, first

    def __call__(self, i: int) -> str:
        seen = -1 if self.first == 2 else 0  # CSV: the first non-blank line is the header
        with open(self.p, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    if seen == i:
                        return f"line {n}"
                    seen += 1
        return f"row {i + 1}"


def _find_columns(p: Path, df) -> dict:
    """Map each role to the file's column name; input and output are required."""
    norm = {}
    for c in df.columns:
        norm.setdefault(str(c).strip().lower().replace(" ", "_").replace("-", "_"), c)
    found = {}
    for role, names in ALIASES.items():
        found[role] = next((norm[n] for n in names if n in norm), None)
    for role in ("input", "output"):
        if found[role] is None:
            raise BadInput(f"{p}: no {role}-length column (have {shown(', '.join(map(str, df.columns)))[1:-1]}; "
                           f"expected one of {', '.join(ALIASES[role][:6])}, ...)")
    return found


def _numeric(p: Path, df, col, row) -> np.ndarray:
    """The column as float64; BadInput naming the first empty or non-numeric cell."""
    import pandas as pd

    raw = df[col]
    vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(vals)
    if bad.any():
        i = int(np.argmax(bad))
        v = raw.iloc[i]
        what = "missing value" if _isna(v) else f"{shown(v)} is not a number"
        raise BadInput(f"{p}: {row(i)}, column {col}: {what}")
    return vals


def _isna(v) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(v))
    except (TypeError, ValueError):  # a list or dict cell
        return False


#: The longest request a trace row may describe (tokens): beyond any model's context.
MAX_TOKENS = 1 << 24
#: The longest span of arrival times (s): a year. Sizing bins arrivals per minute and per hour.
MAX_SPAN_S = 366 * 86400.0


def _lengths(p: Path, df, col, row) -> np.ndarray:
    """Token counts as int64 (rounded); negative counts are an error, zero is kept (failed requests)."""
    vals = _numeric(p, df, col, row)
    bad = (vals < 0) | (vals > MAX_TOKENS)
    if bad.any():
        i = int(np.argmax(bad))
        raise BadInput(f"{p}: {row(i)}, column {col}: token count must be in 0..{MAX_TOKENS:,}, got {vals[i]:g}")
    return np.rint(vals).astype(np.int64)


def _timestamps(p: Path, df, col, row) -> tuple[np.ndarray, float | None, str | None]:
    """(seconds, any origin; first arrival's seconds after midnight or None; a note or None)."""
    import pandas as pd

    raw = df[col]
    if raw.isna().any():
        i = int(np.argmax(raw.isna().to_numpy()))
        raise BadInput(f"{p}: {row(i)}, column {col}: missing timestamp")
    # Numbers are seconds; probe the first cell so a million datetime strings skip the numeric parse.
    num = None
    if pd.api.types.is_numeric_dtype(raw) or _is_number(raw.iloc[0]):
        num = pd.to_numeric(raw, errors="coerce")
    if num is not None and not num.isna().any():
        t = num.to_numpy(dtype=np.float64)
        if not np.isfinite(t).all():
            i = int(np.argmax(~np.isfinite(t)))
            raise BadInput(f"{p}: {row(i)}, column {col}: timestamp {shown(raw.iloc[i])} is not finite")
        if t.min() > EPOCH_THRESHOLD_S:
            return t, float(t.min() % 86400.0), f"{p.name}: numeric {col} read as Unix epoch seconds (UTC)"
        return t, None, None
    # Strings: vectorised ISO 8601 (any fractional digits; an offset converts to UTC).
    dt = pd.to_datetime(raw.astype(str), format="ISO8601", utc=True, errors="coerce")
    bad = dt.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise BadInput(f"{p}: {row(i)}, column {col}: {shown(raw.iloc[i])} is neither seconds "
                       f"nor an ISO 8601 datetime")
    first = dt.min()
    t = (dt - first).dt.total_seconds().to_numpy(dtype=np.float64)  # independent of pandas' time unit
    return t, float((first - first.normalize()).total_seconds()), None


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
