"""What the server says about itself: Prometheus text metrics, before/after deltas, quantiles.

A client sees TTFT including the network and the queue; the engine's own histograms split it
into queue, prefill and decode time. Scraping `/metrics` before and after a sweep point and
subtracting gives the histogram of just that point's requests. This module parses the text
exposition format (version 0.0.4, plus the OpenMetrics bits servers emit: `# EOF`, exemplars,
quoted UTF-8 metric names), takes deltas, and computes the mean and PromQL-style quantiles.

Engines name the same quantities differently; `PHASES` maps them. vLLM (`vllm:`) and this
project's runtime (`planner:`) share names; SGLang (`sglang:`) has no prefill/decode split
histograms but has its own queue histogram and a KV capacity gauge. Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LabelSet = tuple[tuple[str, str], ...]  # sorted (name, value) pairs

#: Engine metric prefixes this module knows, in detection order.
ENGINES = {"vllm:": "vllm", "sglang:": "sglang", "planner:": "planner"}

#: Phase -> histogram names to try (without prefix), preferred first. `itl`: vLLM renamed
#: time_per_output_token_seconds to inter_token_latency_seconds (v0.11); SGLang has both.
PHASES = {
    "ttft": ("time_to_first_token_seconds",),
    "itl": ("inter_token_latency_seconds", "time_per_output_token_seconds"),
    "queue": ("request_queue_time_seconds", "queue_time_seconds"),
    "prefill": ("request_prefill_time_seconds",),
    "decode": ("request_decode_time_seconds",),
    "e2e": ("e2e_request_latency_seconds",),
}

#: Gauge of KV cache use as a fraction 0..1 (vLLM renamed gpu_cache_usage_perc in v0.7/v1).
KV_USAGE = ("kv_cache_usage_perc", "gpu_cache_usage_perc", "token_usage")

QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class Histogram:
    """A cumulative histogram: `buckets` are (upper bound `le`, count of observations <= le),
    sorted by le, the last one le=+Inf; `sum_s` is the sum of observations (their unit, seconds
    for the latency histograms), `count` the number of observations."""

    buckets: tuple[tuple[float, float], ...]
    sum_s: float
    count: float

    @property
    def mean(self) -> float | None:
        """sum / count (unit of the observations); None when empty."""
        return self.sum_s / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """See histogram_quantile."""
        return histogram_quantile(q, self)


@dataclass(frozen=True)
class Scrape:
    """One parsed exposition: `values[(name, labels)] = value` and `types[family] = type`."""

    values: dict
    types: dict

    def series(self, name: str) -> list[tuple[dict, float]]:
        """All (labels, value) of one sample name."""
        return [(dict(ls), v) for (n, ls), v in self.values.items() if n == name]

    def value(self, name: str, **labels: str) -> float | None:
        """Sum over the series of `name` whose labels include `labels`; None when there is none.
        (Summing is right for counters split by e.g. engine index; for a gauge pass labels.)"""
        vals = [v for ls, v in self.series(name) if _match(ls, labels)]
        return math.fsum(vals) if vals else None

    def histogram(self, name: str, **labels: str) -> Histogram | None:
        """The histogram family `name` (without _bucket), series merged by summing their counts
        per bucket bound (e.g. several model_name or engine labels); None when absent."""
        per_le: dict[float, float] = {}
        for ls, v in self.series(name + "_bucket"):
            if "le" in ls and _match(ls, labels):
                le = parse_float(ls["le"])
                per_le[le] = per_le.get(le, 0.0) + v
        if not per_le:
            return None
        total = self.value(name + "_count", **labels)
        s = self.value(name + "_sum", **labels)
        buckets = tuple(sorted(per_le.items()))
        if total is None:
            total = buckets[-1][1] if math.isinf(buckets[-1][0]) else 0.0
        return Histogram(buckets=buckets, sum_s=s or 0.0, count=total)

    @property
    def names(self) -> set[str]:
        return {n for n, _ in self.values}


def _match(ls: dict, want: dict) -> bool:
    return all(ls.get(k) == v for k, v in want.items())


def parse_float(text: str) -> float:
    """A sample value: decimal or scientific, `NaN`, `+Inf`, `-Inf`, `Inf` (any case)."""
    t = text.strip()
    low = t.lower()
    if low in ("+inf", "inf"):
        return math.inf
    if low == "-inf":
        return -math.inf
    if low == "nan":
        return math.nan
    return float(t)


def parse(text: str) -> Scrape:
    """Parse the Prometheus text format. Malformed lines are skipped (a profiler should not
    die on one odd metric of a server it does not control), everything else is kept."""
    values: dict = {}
    types: dict = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[_unquote_name(parts[2])] = parts[3].strip().lower()
            continue
        try:
            name, labels, rest = _split_sample(line)
            # rest: value [timestamp] [# exemplar]
            value_text = rest.split("#", 1)[0].split()[0]
            values[(name, labels)] = parse_float(value_text)
        except (ValueError, IndexError):
            continue
    return Scrape(values=values, types=types)


def _unquote_name(s: str) -> str:
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s


def _split_sample(line: str) -> tuple[str, LabelSet, str]:
    """`name{a="x",b="y"} rest` -> (name, sorted labels, rest). Handles escaped quotes and
    commas inside label values and the quoted-name form `{"name", a="x"}`."""
    brace = line.find("{")
    space = _first_space(line)
    if brace < 0 or (space >= 0 and space < brace):
        if space < 0:
            raise ValueError("no value")
        return line[:space], (), line[space:]
    name = line[:brace].strip()
    i = brace + 1
    labels: dict[str, str] = {}
    n = len(line)
    while True:
        while i < n and line[i] in " ,":
            i += 1
        if i >= n:
            raise ValueError("unterminated labels")
        if line[i] == "}":
            i += 1
            break
        if line[i] == '"':  # quoted: a metric name (no '=') or a quoted label name
            text, i = _read_quoted(line, i)
            while i < n and line[i] == " ":
                i += 1
            if i < n and line[i] == "=":
                key = text
            else:
                name = text
                continue
        else:
            eq = line.find("=", i)
            if eq < 0:
                raise ValueError("label without '='")
            key, i = line[i:eq].strip(), eq
        if i >= n or line[i] != "=":
            raise ValueError("label without '='")
        i += 1
        while i < n and line[i] == " ":
            i += 1
        if i >= n or line[i] != '"':
            raise ValueError("label value not quoted")
        labels[key], i = _read_quoted(line, i)
    if not name:
        raise ValueError("no metric name")
    return name, tuple(sorted(labels.items())), line[i:]


def _first_space(line: str) -> int:
    for i, c in enumerate(line):
        if c in " \t":
            return i
    return -1


def _read_quoted(line: str, i: int) -> tuple[str, int]:
    """Read a "..." string starting at line[i] == '"' with \\\\, \\" and \\n escapes; return
    (text, index after the closing quote)."""
    assert line[i] == '"'
    out = []
    i += 1
    n = len(line)
    while i < n:
        c = line[i]
        if c == "\\" and i + 1 < n:
            nxt = line[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise ValueError("unterminated quoted string")


# ---- deltas ---------------------------------------------------------------------------------
def _family(name: str, types: dict) -> tuple[str, str]:
    """(family, type) of a sample name: histogram/summary samples carry _bucket/_sum/_count,
    counters (in text format 0.0.4 TYPE lines name the family with _total; OpenMetrics without)."""
    if name in types:
        return name, types[name]
    for suffix in ("_bucket", "_sum", "_count", "_total", "_created"):
        if name.endswith(suffix) and name[: -len(suffix)] in types:
            return name[: -len(suffix)], types[name[: -len(suffix)]]
    return name, "untyped"


def delta(before: Scrape, after: Scrape) -> Scrape:
    """What happened between two scrapes of the same server.

    Counters and histograms (and summaries' _sum/_count): after - before per series. A series
    that went down was reset (server restart): its delta is its `after` value, as PromQL's
    increase() assumes; for histograms the reset is judged on the series' _count, so all its
    buckets are treated alike. Untyped `_total` samples count as counters. Gauges and
    everything else: the `after` value (a level, not an amount)."""
    reset: set = set()  # (family, labels without le) of reset histogram/summary series
    for (name, ls), v in after.values.items():
        fam, typ = _family(name, after.types)
        if typ in ("histogram", "summary") and name.endswith("_count"):
            b = before.values.get((name, ls))
            if b is not None and v < b:
                reset.add((fam, ls))
    out = {}
    for (name, ls), v in after.values.items():
        fam, typ = _family(name, after.types)
        cumulative = typ == "counter" or (typ == "untyped" and name.endswith("_total"))
        if typ in ("histogram", "summary"):
            cumulative = name.endswith(("_bucket", "_sum", "_count"))
        if not cumulative:
            out[(name, ls)] = v
            continue
        b = before.values.get((name, ls))
        base_ls = tuple(kv for kv in ls if kv[0] != "le")
        if b is None or (fam, base_ls) in reset or v < b:
            out[(name, ls)] = v
        else:
            out[(name, ls)] = v - b
    return Scrape(values=out, types=dict(after.types))


# ---- statistics -----------------------------------------------------------------------------
def histogram_quantile(q: float, h: Histogram) -> float | None:
    """The q-quantile of a cumulative histogram, as PromQL's histogram_quantile computes it.

    rank = q * count; find the first bucket whose cumulative count >= rank; interpolate
    linearly inside it: lower + (upper - lower) * (rank - count_below) / count_in_bucket, where
    the lowest bucket's lower bound is 0 (if its upper bound is > 0). A rank landing in the +Inf
    bucket returns the highest finite bound. q < 0 -> -inf, q > 1 -> +inf; empty -> None.
    Non-monotonic counts (scrape races) are made monotonic first, as PromQL does."""
    if not h.buckets or math.isnan(q):
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = list(h.buckets)
    if not math.isinf(buckets[-1][0]):
        return None  # PromQL: no +Inf bucket, no answer
    fixed, hi = [], 0.0
    for le, c in buckets:
        hi = max(hi, c)
        fixed.append((le, hi))
    total = fixed[-1][1]
    if total <= 0:
        return None
    rank = q * total
    for i, (le, c) in enumerate(fixed):
        if c >= rank:
            break
    if math.isinf(le):
        return fixed[-2][0] if len(fixed) > 1 else None
    if i == 0:
        if le <= 0:
            return le
        lower, below = 0.0, 0.0
    else:
        lower, below = fixed[i - 1]
    inside = c - below
    if inside <= 0:
        return le
    return lower + (le - lower) * (rank - below) / inside


def quantile_bucket(q: float, h: Histogram) -> list | None:
    """[lower, upper] bounds (s) of the bucket holding the q-quantile's rank: all a histogram
    knows about it (upper None for the +Inf bucket); None when empty."""
    if not h.buckets or not 0 <= q <= 1:
        return None
    total = max(c for _, c in h.buckets)
    if total <= 0:
        return None
    lower, hi = 0.0, 0.0
    for le, c in h.buckets:
        hi = max(hi, c)
        if hi >= q * total:
            return [lower, None if math.isinf(le) else le]
        lower = le
    return None


def bucket_edges(scrape: Scrape, engine: str) -> dict:
    """{histogram name: its finite bucket upper bounds (s)} for each phase the engine exposes."""
    out = {}
    for phase in PHASES:
        found = phase_histogram(scrape, engine, phase)
        if found is not None:
            out[found[0]] = [le for le, _ in found[1].buckets if not math.isinf(le)]
    return out


def info_labels(scrape: Scrape, short: str) -> dict | None:
    """The labels of an info gauge such as vLLM's `vllm:cache_config_info` (block_size,
    enable_prefix_caching, num_gpu_blocks, ...), first engine's; None when absent."""
    for prefix in ("vllm:", "planner:"):
        series = scrape.series(prefix + short)
        if series:
            return {k: v for k, v in series[0][0].items() if k != "engine"}
    return None


def detect_engine(scrape: Scrape) -> str | None:
    """Which engine exposed these metrics (by prefix): 'vllm', 'sglang', 'planner' or None."""
    names = scrape.names
    for prefix, engine in ENGINES.items():
        if any(n.startswith(prefix) for n in names):
            return engine
    return None


def _prefix(engine: str) -> str:
    return next(p for p, e in ENGINES.items() if e == engine)


def phase_histogram(scrape: Scrape, engine: str, phase: str) -> tuple[str, Histogram] | None:
    """(metric name, histogram) of one phase (key of PHASES), first name present wins."""
    for short in PHASES[phase]:
        name = _prefix(engine) + short
        h = scrape.histogram(name)
        if h is not None:
            return name, h
    return None


def phase_summary(before: Scrape, after: Scrape, engine: str | None = None) -> dict:
    """Per-phase server statistics of the requests between two scrapes, flat for sample rows:
    `server_<phase>_mean_s`, `server_<phase>_p50_s`, `_p90_s`, `_p99_s`, `server_<phase>_count`
    for each phase in PHASES the engine exposes (seconds; count of observations), plus
    `server_kv_usage` (0..1, the gauge's value after) when present. Empty dict when the engine
    is unknown."""
    engine = engine or detect_engine(after)
    if engine is None:
        return {}
    d = delta(before, after)
    out: dict = {}
    for phase in PHASES:
        found = phase_histogram(d, engine, phase)
        if found is None:
            continue
        _, h = found
        out[f"server_{phase}_count"] = h.count
        out[f"server_{phase}_mean_s"] = _finite(h.mean)
        for q in QUANTILES:
            # Bucket-bounded: only the bucket is known, the value inside it is interpolated.
            out[f"server_{phase}_p{round(q * 100)}_s"] = _finite(h.quantile(q))
            out[f"server_{phase}_p{round(q * 100)}_bucket_s"] = quantile_bucket(q, h)
    usage = kv_usage(after, engine)
    if usage is not None:
        out["server_kv_usage"] = usage
    return out


def _finite(x: float | None) -> float | None:
    """None for NaN/inf: a profile file is JSON, which has neither."""
    return x if x is not None and math.isfinite(x) else None


def kv_usage(scrape: Scrape, engine: str) -> float | None:
    """KV cache in use, fraction 0..1 (vLLM kv_cache_usage_perc / gpu_cache_usage_perc, SGLang
    token_usage); the largest value over series (several engines: the fullest one binds)."""
    for short in KV_USAGE:
        vals = [v for _, v in scrape.series(_prefix(engine) + short) if not math.isnan(v)]
        if vals:
            return max(vals)
    return None


def kv_capacity_tokens(scrape: Scrape) -> int | None:
    """KV cache capacity in tokens, when the server says: vLLM's `cache_config_info` info
    gauge labels num_gpu_blocks x block_size (summed over engines), SGLang's
    `max_total_num_tokens` gauge. None when neither is exposed."""
    for prefix in ("vllm:", "planner:"):
        total = 0
        for ls, _ in scrape.series(prefix + "cache_config_info"):
            try:
                total += int(float(ls["num_gpu_blocks"])) * int(float(ls["block_size"]))
            except (KeyError, ValueError):
                continue
        if total > 0:
            return total
    v = scrape.value("sglang:max_total_num_tokens")
    return int(v) if v and v > 0 and not math.isnan(v) else None
