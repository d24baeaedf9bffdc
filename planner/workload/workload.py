"""The workload a plan is sized for: arrival rate, prompt/output length distributions, SLOs.

A workload comes from command-line flags (`workload_from_flags`), a YAML file
(`load_workload_file`) or a request trace (`workload_from_trace`). Whichever it is, the result is
one frozen `Workload` whose `notes` list every assumption made on the way ("peak rate = ...",
"arrivals assumed Poisson"), so that a report can show what was sized and why.

Rates: a rate you give (`--rate`, `rate_rps`, `requests_per_day`) is a *mean* rate; the plan is
sized for `rate_rps = mean x peak_factor`. A trace sets its own peak: its busiest minute.

Lengths are token counts. Parametric distributions are continuous; samples are rounded to
integers >= 1, and `mean`, `var`, `percentile` are those of the continuous law (rounding moves the
variance by at most 1/12 tok^2). The uniform law is the discrete one on low..high.
"""

from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from planner.errors import BadInput, clip, shown

SLO_PERCENTILES = (50, 90, 99)
from planner.workload.lengths import KINDS, MAX_TOKENS, LengthDist, _number, _tokens, parse_length  # noqa: F401  (the workload's vocabulary)


@dataclass(frozen=True)
class SLO:
    """Latency targets, met at `percentile` (50, 90 or 99) of requests.

    TTFT: time to first token (queueing + prefill + KV transfer). TPOT: a request's time per
    output token after the first, (e2e - TTFT) / (n - 1), as `vllm bench serve` reports it.
    ITL (optional): every inter-token gap, percentiles over gaps: a prefill stall that one gap of
    a long request absorbs moves its ITL tail, hardly its TPOT.
    """

    ttft_ms: float
    tpot_ms: float
    percentile: int = 90
    itl_ms: float | None = None

    def __post_init__(self):
        for k in ("ttft_ms", "tpot_ms", "itl_ms"):
            v = getattr(self, k)
            if k == "itl_ms" and v is None:
                continue
            if isinstance(v, bool) or not (isinstance(v, numbers.Real) and v > 0 and math.isfinite(v)):
                raise BadInput(f"SLO {k} must be > 0, got {shown(v)}")
        if self.percentile not in SLO_PERCENTILES:
            raise BadInput(f"SLO percentile must be one of 50, 90, 99, got {shown(self.percentile)}")

    def describe(self) -> str:
        itl = f", p{self.percentile} ITL <= {self.itl_ms:g} ms" if self.itl_ms is not None else ""
        return f"p{self.percentile} TTFT <= {self.ttft_ms:g} ms, p{self.percentile} TPOT <= {self.tpot_ms:g} ms{itl}"

    def to_dict(self) -> dict:
        return {"ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "percentile": self.percentile, "itl_ms": self.itl_ms}


@dataclass(frozen=True)
class Workload:
    """What to size for. `rate_rps` is the sizing (peak) rate; `mean_rate_rps x peak_factor` = it.

    `arrival_cv2` is Var/mean^2 of inter-arrival gaps (1.0 = Poisson, > 1 burstier). With a trace,
    `timestamps_s` (s from the first arrival) replays it: request i arrives at timestamps_s[i]
    with input.values[i] and output.values[i] tokens. `hourly_rps` is a 24-hour profile (req/s).
    """

    rate_rps: float
    mean_rate_rps: float
    peak_factor: float
    input: LengthDist
    output: LengthDist
    slo: SLO
    arrival_cv2: float = 1.0
    source: str = "flags"
    timestamps_s: np.ndarray | None = field(default=None, compare=False, repr=False)
    hourly_rps: tuple[float, ...] | None = None
    notes: tuple[str, ...] = ()

    @property
    def input_tokens_per_s(self) -> float:
        """Prompt tokens arriving per second at the sizing rate (tok/s)."""
        return self.rate_rps * self.input.mean

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens to generate per second at the sizing rate (tok/s)."""
        return self.rate_rps * self.output.mean

    def with_rate(self, rate_rps: float) -> Workload:
        """The same workload at another sizing rate (req/s); mean, profile and replay scale with it."""
        if not (rate_rps > 0 and math.isfinite(rate_rps)):
            raise BadInput(f"rate must be > 0, got {rate_rps}")
        f = rate_rps / self.rate_rps
        return replace(
            self, rate_rps=float(rate_rps), mean_rate_rps=self.mean_rate_rps * f,
            timestamps_s=None if self.timestamps_s is None else self.timestamps_s / f,
            hourly_rps=None if self.hourly_rps is None else tuple(r * f for r in self.hourly_rps),
            notes=self.notes + (f"what-if: sizing rate set to {rate_rps:.4g} req/s (x{f:.3g})",))

    def with_slo(self, ttft_ms: float | None = None, tpot_ms: float | None = None,
                 percentile: int | None = None) -> Workload:
        """The same workload under other SLOs (fields left None keep their value)."""
        slo = SLO(ttft_ms=self.slo.ttft_ms if ttft_ms is None else ttft_ms,
                  tpot_ms=self.slo.tpot_ms if tpot_ms is None else tpot_ms,
                  percentile=self.slo.percentile if percentile is None else percentile, itl_ms=self.slo.itl_ms)
        return replace(self, slo=slo)

    def arrival_times_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n arrival times (s) of a renewal process at `rate_rps` with this cv^2.

        Gaps are Gamma(shape 1/cv^2, mean 1/rate): exponential (Poisson) at cv^2 = 1, evenly
        spaced at cv^2 = 0. Replaying a trace is `timestamps_s` instead.
        """
        mean_gap = 1.0 / self.rate_rps
        if self.arrival_cv2 <= 1e-9:
            gaps = np.full(n, mean_gap)
        else:
            gaps = rng.gamma(1.0 / self.arrival_cv2, mean_gap * self.arrival_cv2, size=n)
        return np.cumsum(gaps) - gaps[0] if n else gaps

    def describe(self) -> str:
        return (f"{self.rate_rps:.4g} req/s (mean {self.mean_rate_rps:.4g}); input {self.input.describe()}; "
                f"output {self.output.describe()}; {self.slo.describe()}")

    def to_dict(self) -> dict:
        """The resolved inputs, JSON-ready (no numpy types)."""
        return {
            "rate_rps": self.rate_rps, "mean_rate_rps": self.mean_rate_rps, "peak_factor": self.peak_factor,
            "input": self.input.summary(), "output": self.output.summary(), "slo": self.slo.to_dict(),
            "arrival_cv2": self.arrival_cv2, "source": self.source,
            "hourly_rps": None if self.hourly_rps is None else list(self.hourly_rps),
            "trace_requests": None if self.timestamps_s is None else int(len(self.timestamps_s)),
            "notes": list(self.notes),
        }


# ---- building a Workload ----------------------------------------------------------------------


def _positive(v, name: str, minimum: float = 0.0, strict: bool = True) -> float:
    x = _number(v, name)
    if (x <= minimum) if strict else (x < minimum):
        raise BadInput(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {x:g}")
    return x


#: Rates a plan is sized for (req/s): below one request in 12 days nothing is left to size; above
#: ten million per second is a typo (the largest public services serve thousands).
MIN_RATE_RPS = 1e-6
MAX_RATE_RPS = 1e7


def _rate(v, name: str, per: float = 1.0) -> float:
    """A rate in MIN_RATE_RPS..MAX_RATE_RPS (x `per`: 86400 for a daily count)."""
    x = _positive(v, name)
    if not MIN_RATE_RPS * per <= x <= MAX_RATE_RPS * per:
        raise BadInput(f"{name} must be between {MIN_RATE_RPS * per:g} and {MAX_RATE_RPS * per:g}, got {x:g}")
    return x


def _resolve_rate(rate, requests_per_day, peak_factor, names: dict) -> tuple[float, float, list[str]]:
    """(sizing rate, mean rate, notes) from a mean rate or a daily count, times the peak factor."""
    pf = _positive(peak_factor, names["peak_factor"], 1.0, strict=False)
    if rate is not None and requests_per_day is not None:
        raise BadInput(f"give {names['rate']} or {names['requests_per_day']}, not both")
    if rate is not None:
        mean = _rate(rate, names["rate"])
        how = f"{mean:.4g} req/s ({names['rate']})"
    elif requests_per_day is not None:
        per_day = _rate(requests_per_day, names["requests_per_day"], 86400.0)
        mean = per_day / 86400.0
        how = f"{per_day:,.0f} req/day / 86400 s = {mean:.4g} req/s"
    else:
        raise BadInput(f"no request rate: give {names['rate']} or {names['requests_per_day']}")
    if pf * mean > MAX_RATE_RPS:
        raise BadInput(f"{names['peak_factor']} {pf:g} x the mean rate {mean:.4g} req/s is above {MAX_RATE_RPS:g} req/s")
    if pf == 1.0:
        note = f"sized for a steady {mean:.4g} req/s = {how}; peak factor 1.0 (no burst headroom)"
    else:
        note = f"peak rate = {how} x peak factor {pf:g} = {mean * pf:.4g} req/s"
    return mean * pf, mean, [note]


_FLAG_NAMES = {"rate": "--rate", "requests_per_day": "--requests-per-day", "peak_factor": "--peak-factor"}


def workload_from_flags(rate=None, requests_per_day=None, peak_factor=1.0, input_len=1000, output_len=250,
                        ttft_slo_ms=1000, tpot_slo_ms=50, percentile=90, arrival_cv2=1.0, itl_slo_ms=None) -> Workload:
    """The workload `planner plan` flags describe; errors name the flag and the value."""
    rate_rps, mean, notes = _resolve_rate(rate, requests_per_day, peak_factor, _FLAG_NAMES)
    inp = parse_length(input_len, "--input-len")
    out = parse_length(output_len, "--output-len")
    slo = slo_from_flags(ttft_slo_ms, tpot_slo_ms, percentile, itl=itl_slo_ms)
    cv2 = _positive(arrival_cv2, "--arrival-cv2", 0.0, strict=False)
    notes.append("arrivals assumed Poisson (cv^2 = 1)" if cv2 == 1.0 else f"arrival cv^2 = {cv2:g} (given)")
    return Workload(rate_rps=rate_rps, mean_rate_rps=mean, peak_factor=float(peak_factor), input=inp,
                    output=out, slo=slo, arrival_cv2=cv2, source="flags", notes=tuple(notes))


def slo_from_flags(ttft, tpot, pct, names=("--ttft-slo-ms", "--tpot-slo-ms", "--percentile", "--itl-slo-ms"), itl=None) -> SLO:
    """An SLO whose errors name the flags (or YAML fields) the values came from; `itl` (ms) optional."""
    t1 = _positive(ttft, names[0])
    t2 = _positive(tpot, names[1])
    t3 = None if itl is None else _positive(itl, names[3] if len(names) > 3 else "--itl-slo-ms")
    if isinstance(pct, bool) or pct not in SLO_PERCENTILES:
        raise BadInput(f"{names[2]} must be one of 50, 90, 99, got {shown(pct)}")
    return SLO(ttft_ms=t1, tpot_ms=t2, percentile=int(pct), itl_ms=t3)


def workload_from_trace(path, slo: SLO, rate: float | None = None, peak_factor: float | None = None,
                        time_scale: float = 1.0) -> Workload:
    """A workload replaying a trace: its lengths (empirical) and, with timestamps, its arrivals.

    Sized for the busiest whole minute. `rate` (req/s) rescales arrivals to that mean rate (and
    is required when the trace has no timestamps: Poisson is then assumed, times `peak_factor`).
    """
    from planner.workload.trace import load_trace

    return _from_trace(load_trace(path, time_scale), slo, rate, peak_factor, str(path))


def _from_trace(tr, slo: SLO, rate, peak_factor, source: str, names=None) -> Workload:
    names = names or _FLAG_NAMES
    notes = [f"lengths{' and arrivals' if tr.has_times else ''} from trace {tr.source}: {tr.describe()}"]
    notes += list(tr.notes)
    for what, v in (("prompt", tr.input_tokens), ("output", tr.output_tokens)):
        zeros = int((v == 0).sum())
        if zeros:
            notes.append(f"{zeros} requests with 0 {what} tokens counted as 1 token")
    inp, out = LengthDist.empirical(tr.input_tokens), LengthDist.empirical(tr.output_tokens)
    if tr.mean_rate_rps is None:  # no usable timestamps: lengths only
        if rate is None:
            why = "no timestamp column" if not tr.has_times else "all timestamps equal"
            raise BadInput(f"{tr.source}: trace has {why}, so it sets no rate: give {names['rate']}")
        rate_rps, mean, rnotes = _resolve_rate(rate, None, 1.0 if peak_factor is None else peak_factor, names)
        notes += rnotes + ["arrivals assumed Poisson (cv^2 = 1): the trace has no arrival times"]
        return Workload(rate_rps, mean, rate_rps / mean, inp, out, slo, 1.0, source, None, None, tuple(notes))
    if peak_factor is not None:
        raise BadInput(f"{names['peak_factor']} cannot be combined with a timed trace: its busiest minute sets the peak")
    f = 1.0
    if rate is not None:
        f = _rate(rate, names["rate"]) / tr.mean_rate_rps
        notes.append(f"arrivals rescaled from the trace's mean {tr.mean_rate_rps:.4g} req/s to {rate:.4g} req/s "
                     f"(gaps x {1 / f:.4g})")
    mean, peak = tr.mean_rate_rps * f, tr.peak_minute_rps * f
    if not MIN_RATE_RPS <= mean <= peak <= MAX_RATE_RPS:
        raise BadInput(f"{tr.source}: arrivals give a rate of {mean:.3g} req/s (busiest minute {peak:.3g} req/s), outside "
                       f"{MIN_RATE_RPS:g}..{MAX_RATE_RPS:g} req/s: are the timestamps in seconds?")
    notes.append(f"sized for the trace's busiest minute: {peak:.4g} req/s (mean {mean:.4g} req/s)")
    cv2 = tr.arrival_cv2 if tr.arrival_cv2 is not None else 1.0
    notes.append(f"arrival cv^2 = {cv2:.3g}, measured from the trace's inter-arrival gaps")
    hourly = None if tr.hourly_rps is None else tuple(r * f for r in tr.hourly_rps)
    if hourly is not None and not all(tr.hourly_covered):
        notes.append(f"hourly profile: {24 - sum(tr.hourly_covered)} hours of day not in the trace hold the mean rate")
    return Workload(peak, mean, peak / mean, inp, out, slo, cv2, source, tr.timestamps_s / f, hourly, tuple(notes))


# ---- YAML workload files ----------------------------------------------------------------------

_FILE_KEYS = ("name", "description", "rate_rps", "requests_per_day", "peak_factor", "arrival_cv2",
              "input", "output", "slo", "trace", "hourly_rps")
_SLO_KEYS = ("ttft_ms", "tpot_ms", "percentile", "itl_ms")
#: The SLOs a plan is sized for unless told: p90 TTFT 1000 ms, p90 TPOT 50 ms.
DEFAULT_TTFT_SLO_MS, DEFAULT_TPOT_SLO_MS, DEFAULT_SLO_PERCENTILE = 1000.0, 50.0, 90
_SLO_DEFAULTS = {"ttft_ms": DEFAULT_TTFT_SLO_MS, "tpot_ms": DEFAULT_TPOT_SLO_MS, "percentile": DEFAULT_SLO_PERCENTILE}


def load_workload_file(path) -> Workload:
    """Read a workload YAML (`--workload FILE`); relative paths inside resolve against its folder.

        rate_rps: 20              # mean req/s; or requests_per_day: 1.7e6; x peak_factor (default 1)
        input: {kind: lognormal, mean: 1000, sigma: 0.8}   # an int, a spec string, or {kind: trace, path: t.csv}
        output: 250
        slo: {ttft_ms: 1000, tpot_ms: 50, percentile: 90}  # omitted keys take these defaults; itl_ms: optional
        trace: traces/day.csv     # optional: lengths and arrivals (input/output then override lengths)
        hourly_rps: [24 numbers]  # optional daily profile (req/s); alone it also sets the rate
        arrival_cv2: 1.0          # optional; default Poisson, or measured from the trace
    """
    from planner.safeload import load_yaml, read_text

    p = Path(path)
    doc = load_yaml(read_text(p, str(p), "workload file", max_bytes=256 << 20), str(p))
    if not isinstance(doc, dict):
        raise BadInput(f"{p}: a workload file must be a mapping of keys (rate_rps, input, output, slo, ...)")
    _check_keys(p, doc, _FILE_KEYS, "")
    base = p.parent
    names = {k: f"{p}: {k}" for k in ("rate_rps", "requests_per_day", "peak_factor")}
    names["rate"] = names["rate_rps"]

    slo, defaulted = _slo_of_file(p, doc)
    traces: dict = {}  # a file named twice (trace + input: {kind: trace}) is read once

    def trace_at(rel, field_name):
        from planner.workload.trace import load_trace

        if not isinstance(rel, str):
            raise BadInput(f"{p}: {field_name} must be a file path, got {shown(rel)}")
        full = (base / rel).resolve()
        if full not in traces:
            try:
                traces[full] = load_trace(full)
            except BadInput as e:  # say which workload file pointed there
                raise BadInput(f"{p}: {field_name}: {e}") from None
        return traces[full]

    def length(key):
        spec = doc[key]
        if isinstance(spec, dict) and str(spec.get("kind", "")).lower() == "trace":
            _check_keys(p, spec, ("kind", "path"), f"{key}.")
            tr = trace_at(spec.get("path"), f"{key}.path")
            return LengthDist.empirical(tr.input_tokens if key == "input" else tr.output_tokens)
        return parse_length(spec, f"{p}: {key}")

    rate = doc.get("rate_rps")
    rpd = doc.get("requests_per_day")
    if rate is not None and rpd is not None:
        raise BadInput(f"{p}: give rate_rps or requests_per_day, not both")
    if "trace" in doc:
        if rpd is not None:
            rate = _rate(rpd, names["requests_per_day"], 86400.0) / 86400.0
            names["rate"] = names["requests_per_day"]
        w = _from_trace(trace_at(doc["trace"], "trace"), slo, rate, doc.get("peak_factor"), str(p), names)
        notes = list(w.notes)
        for key in ("input", "output"):
            if key in doc:
                w = replace(w, **{key: length(key)})
                notes.append(f"{key} lengths from {p.name} replace the trace's")
    else:
        for key in ("input", "output"):
            if key not in doc:
                raise BadInput(f"{p}: {key} is required (a length, or give a trace)")
        hourly = _hourly(p, doc.get("hourly_rps"))
        rate_rps, mean, notes = _rate_of_file(doc, rate, rpd, hourly, names)
        notes.append("arrivals assumed Poisson (cv^2 = 1)")
        w = Workload(rate_rps, mean, rate_rps / mean, length("input"), length("output"), slo,
                     source=str(p), hourly_rps=hourly)
    if "hourly_rps" in doc and "trace" in doc:
        w = replace(w, hourly_rps=_hourly(p, doc["hourly_rps"]))
        notes.append("hourly profile from hourly_rps replaces the trace's")
    if "arrival_cv2" in doc:
        cv2 = _positive(doc["arrival_cv2"], f"{p}: arrival_cv2", 0.0, strict=False)
        w = replace(w, arrival_cv2=cv2)
        notes = [n for n in notes if "cv^2" not in n] + [f"arrival cv^2 = {cv2:g} (given in {p.name})"]
    if defaulted:
        notes.append("SLO defaults used for " + ", ".join(f"{k} = {_SLO_DEFAULTS[k]:g}" for k in defaulted))
    return replace(w, notes=tuple(notes))


def _slo_of_file(p: Path, doc: dict) -> tuple[SLO, list[str]]:
    """A workload file's SLO, and the keys it left to their defaults (ITL has none: no target)."""
    slo_doc = doc.get("slo") or {}
    if not isinstance(slo_doc, dict):
        raise BadInput(f"{p}: slo must be a mapping like {{ttft_ms: 1000, tpot_ms: 50, percentile: 90}}")
    _check_keys(p, slo_doc, _SLO_KEYS, "slo.")
    vals = {**_SLO_DEFAULTS, **slo_doc}
    slo = slo_from_flags(vals["ttft_ms"], vals["tpot_ms"], vals["percentile"], tuple(f"{p}: slo.{k}" for k in _SLO_KEYS),
                         itl=vals.get("itl_ms"))
    return slo, [k for k in _SLO_KEYS if k not in slo_doc and k != "itl_ms"]


def _rate_of_file(doc: dict, rate, rpd, hourly, names: dict) -> tuple[float, float, list]:
    """(rate sized for, mean rate (req/s), notes) of a file without a trace: rate_rps or
    requests_per_day, else the busiest hour of hourly_rps, x peak_factor."""
    if rate is None and rpd is None and hourly is not None:
        pf = _positive(doc.get("peak_factor", 1.0), names["peak_factor"], 1.0, strict=False)
        mean = sum(hourly) / 24
        return max(hourly) * pf, mean, [f"rate from hourly_rps: mean {mean:.4g} req/s, busiest hour {max(hourly):.4g} req/s "
                                        f"x peak factor {pf:g} = {max(hourly) * pf:.4g} req/s sized"]
    rate_rps, mean, notes = _resolve_rate(rate, rpd, doc.get("peak_factor", 1.0), names)
    if hourly is not None and max(hourly) > rate_rps:
        notes.append(f"warning: hourly_rps peaks at {max(hourly):.4g} req/s, above the sizing rate")
    return rate_rps, mean, notes


def _check_keys(p: Path, d: dict, known: tuple, prefix: str) -> None:
    """Unknown keys are typos until proven otherwise: name them, and suggest the closest known one."""
    for k in d:
        if k not in known:
            close = difflib.get_close_matches(str(k), known, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f" (known: {', '.join(known)})"
            raise BadInput(f"{p}: unknown key {clip(prefix + str(k))}{hint}")


def _hourly(p: Path, v) -> tuple[float, ...] | None:
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or len(v) != 24:
        n = len(v) if isinstance(v, (list, tuple)) else type(v).__name__
        raise BadInput(f"{p}: hourly_rps must be a list of 24 rates (req/s, one per hour), got {n}")
    rates = tuple(_number(x, f"{p}: hourly_rps[{i}]") for i, x in enumerate(v))
    if min(rates) < 0 or max(rates) <= 0:
        raise BadInput(f"{p}: hourly_rps must be >= 0 with at least one hour > 0")
    if max(rates) > MAX_RATE_RPS or sum(rates) / 24 < MIN_RATE_RPS:
        raise BadInput(f"{p}: hourly_rps must average at least {MIN_RATE_RPS:g} req/s and stay under {MAX_RATE_RPS:g} req/s, "
                       f"got {min(rates):g}..{max(rates):g}")
    return rates
