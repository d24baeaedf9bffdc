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
import hashlib
import math
import numbers
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from planner.errors import BadInput

Z90 = 1.2815515655446004  # standard normal 90th percentile, float(scipy.special.ndtri(0.90))


def ndtr(x):
    """Standard normal CDF (scipy.special, imported here: fixed-length plans never pay its ~0.1 s)."""
    from scipy.special import ndtr as f

    return f(x)


def ndtri(p):
    """Inverse of the standard normal CDF (scipy.special, imported lazily as ndtr)."""
    from scipy.special import ndtri as f

    return f(p)


SLO_PERCENTILES = (50, 90, 99)
KINDS = ("fixed", "lognormal", "uniform", "normal", "empirical")


def _phi(x):
    """Standard normal density, 0 at +-inf."""
    return np.exp(-0.5 * np.square(x)) / math.sqrt(2 * math.pi)


def _xphi(x: float) -> float:
    """x * phi(x), with the limit 0 at +-inf (inf * 0 would be nan)."""
    return 0.0 if math.isinf(x) else x * float(_phi(x))


# ---- length distributions ---------------------------------------------------------------------


@dataclass(frozen=True)
class LengthDist:
    """A distribution of token counts. Build it with the classmethods, not the constructor.

    Fields by kind (tokens unless said): fixed `value_tok`; lognormal `mu`, `sigma` (of ln tokens)
    with an optional cap `high_tok`; uniform `low_tok`..`high_tok`; normal `loc_tok`, `scale_tok`
    (before truncation) truncated to [`low_tok`, `high_tok`]; empirical `values` (kept in their
    given order, so a trace's values[i] is request i) identified by `digest` for equality.
    """

    kind: str
    value_tok: float = 0.0
    mu: float = 0.0
    sigma: float = 0.0
    loc_tok: float = 0.0
    scale_tok: float = 0.0
    low_tok: float = 0.0
    high_tok: float = math.inf
    values: np.ndarray | None = field(default=None, compare=False, repr=False)
    digest: str = ""

    # ---- constructors ------------------------------------------------------------------------
    @classmethod
    def fixed(cls, value: float) -> LengthDist:
        if not value >= 1:
            raise BadInput(f"fixed length must be >= 1 token, got {value}")
        return cls("fixed", value_tok=float(round(value)))

    @classmethod
    def lognormal(cls, mean=None, sigma=None, median=None, p90=None, max=None) -> LengthDist:
        """Lognormal from any two of mean, sigma (std of ln L), median, p90 (tokens).

        median = e^mu, mean = e^(mu + sigma^2/2), p90 = e^(mu + 1.2816 sigma). From mean and p90,
        sigma = z - sqrt(z^2 - 2 ln(p90/mean)) (the root with sigma < z; needs 1 < p90/mean <= 2.27).
        `max` caps lengths by truncation (e.g. the model's context); the other numbers describe
        the law before the cap, so a cap lowers the mean a little.
        """
        given = {k: v for k, v in dict(mean=mean, sigma=sigma, median=median, p90=p90).items() if v is not None}
        if len(given) != 2:
            raise BadInput("lognormal needs exactly two of mean, sigma, median, p90 "
                           f"(e.g. lognormal:mean=1000,sigma=0.8), got {', '.join(given) or 'none'}")
        for k, v in given.items():
            if not (v > 0 and math.isfinite(v)):
                raise BadInput(f"lognormal {k} must be > 0, got {v}")
        if sigma is None:
            if median is not None and p90 is not None:
                if p90 <= median:
                    raise BadInput(f"lognormal p90 ({p90}) must exceed median ({median})")
                sigma = math.log(p90 / median) / Z90
            elif mean is not None and median is not None:
                if mean <= median:
                    raise BadInput(f"lognormal mean ({mean}) must exceed median ({median})")
                sigma = math.sqrt(2 * math.log(mean / median))
            else:  # mean and p90
                r = math.log(p90 / mean)
                if not 0 < r <= Z90 * Z90 / 2:
                    raise BadInput(f"lognormal p90/mean must be in (1, 2.27] to exist, got {p90 / mean:.3g}")
                sigma = Z90 - math.sqrt(Z90 * Z90 - 2 * r)
        if median is not None:
            mu = math.log(median)
        elif mean is not None:
            mu = math.log(mean) - sigma * sigma / 2
        else:
            mu = math.log(p90) - Z90 * sigma
        high = math.inf if max is None else float(max)
        if not high >= 1:
            raise BadInput(f"lognormal max must be >= 1 token, got {max}")
        return cls("lognormal", mu=mu, sigma=float(sigma), high_tok=high)

    @classmethod
    def uniform(cls, low: float, high: float) -> LengthDist:
        if not (1 <= low <= high < math.inf):
            raise BadInput(f"uniform needs 1 <= low <= high tokens, got {low}-{high}")
        return cls("uniform", low_tok=float(round(low)), high_tok=float(round(high)))

    @classmethod
    def normal(cls, mean: float, std: float, low: float = 1, high: float = math.inf) -> LengthDist:
        """Normal(mean, std) truncated to [low, high] (tokens): `mean` is before truncation."""
        if not std > 0:
            raise BadInput(f"normal std must be > 0, got {std}")
        if not (0 <= low < high):
            raise BadInput(f"normal needs 0 <= min < max, got min {low}, max {high}")
        d = cls("normal", loc_tok=float(mean), scale_tok=float(std), low_tok=float(low), high_tok=float(high))
        if d._mass < 1e-12:
            raise BadInput(f"normal(mean {mean}, std {std}) has no mass in [{low}, {high}]")
        return d

    @classmethod
    def empirical(cls, values) -> LengthDist:
        """Observed lengths (tokens). Zeros (failed requests) count as 1 token; negatives are an error."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0 or not np.isfinite(v).all() or (v < 0).any():
            raise BadInput("empirical lengths must be a non-empty list of numbers >= 0")
        v = np.maximum(np.rint(v), 1).astype(np.int64)
        v.setflags(write=False)
        return cls("empirical", values=v, digest=hashlib.sha1(v.tobytes()).hexdigest()[:16])

    # ---- the truncated-law algebra (normal and lognormal) --------------------------------------
    @property
    def _bounds_z(self) -> tuple[float, float]:
        """Truncation bounds in standard-normal units: of L (normal) or of ln L (lognormal)."""
        if self.kind == "normal":
            return ((self.low_tok - self.loc_tok) / self.scale_tok, (self.high_tok - self.loc_tok) / self.scale_tok)
        lo = -math.inf if self.low_tok <= 0 else (math.log(self.low_tok) - self.mu) / self.sigma
        return lo, (math.log(self.high_tok) - self.mu) / self.sigma

    @property
    def _mass(self) -> float:
        a, b = self._bounds_z
        return float(ndtr(b) - ndtr(a))

    def _ppf(self, p):
        """Inverse CDF at probability p in [0, 1] (array ok), for the parametric kinds."""
        p = np.asarray(p, dtype=np.float64)
        if self.kind == "fixed":
            return np.full(p.shape, self.value_tok)
        if self.kind == "uniform":
            return self.low_tok + p * (self.high_tok - self.low_tok)
        a, b = self._bounds_z
        z = ndtri(np.clip(ndtr(a) + p * self._mass, 0.0, 1.0))
        z = np.clip(z, a, b)  # keep rounding in ndtr/ndtri from stepping outside the bounds
        if self.kind == "normal":
            return self.loc_tok + self.scale_tok * z
        return np.exp(self.mu + self.sigma * z)

    # ---- moments and percentiles -------------------------------------------------------------
    @property
    def mean(self) -> float:
        """E[L] (tokens). Truncated normal: loc + scale (phi(a) - phi(b)) / Z.
        Truncated lognormal: e^(mu + s^2/2) (Phi(b - s) - Phi(a - s)) / Z, Z = Phi(b) - Phi(a)."""
        return self._raw_moment(1)

    @property
    def mean_square(self) -> float:
        """E[L^2] (tokens^2): causal attention FLOPs grow with the sum of squared prompt lengths."""
        return self._raw_moment(2)

    @property
    def var(self) -> float:
        """Var[L] (tokens^2)."""
        return max(self.mean_square - self.mean ** 2, 0.0)

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def _raw_moment(self, k: int) -> float:
        if self.kind == "fixed":
            return self.value_tok ** k
        if self.kind == "empirical":
            return float(np.mean(self.values.astype(np.float64) ** k))
        if self.kind == "uniform":  # discrete on low..high: var = ((n^2 - 1) / 12), n = high - low + 1
            m = (self.low_tok + self.high_tok) / 2
            n = self.high_tok - self.low_tok + 1
            return m if k == 1 else (n * n - 1) / 12 + m * m
        a, b = self._bounds_z
        Z = self._mass
        if self.kind == "lognormal":  # E[L^k] = e^(k mu + k^2 s^2 / 2) (Phi(b - k s) - Phi(a - k s)) / Z
            s = self.sigma
            return float(math.exp(k * self.mu + k * k * s * s / 2) * (ndtr(b - k * s) - ndtr(a - k * s)) / Z)
        # Truncated normal, standard formulas in units of scale around loc.
        m, s = self.loc_tok, self.scale_tok
        d = float(_phi(a) - _phi(b)) / Z
        mean = m + s * d
        if k == 1:
            return mean
        var = s * s * (1 + (_xphi(a) - _xphi(b)) / Z - d * d)
        return var + mean * mean

    def percentile(self, q: float) -> float:
        """The q-th percentile (tokens), q in 0..100."""
        if not 0 <= q <= 100:
            raise BadInput(f"percentile must be in 0..100, got {q}")
        if self.kind == "empirical":
            return float(np.percentile(self.values, q))
        return float(self._ppf(q / 100.0))

    @property
    def max(self) -> int:
        """A length bound for memory sizing (tokens): the cap, or the p99.9 of an unbounded law."""
        if self.kind == "empirical":
            return int(self.values.max())
        if self.kind == "fixed":
            return int(self.value_tok)
        if math.isfinite(self.high_tok):
            return int(self.high_tok)
        return int(math.ceil(self.percentile(99.9)))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n lengths as int64 >= 1: inverse-CDF sampling, uniform and empirical drawn directly."""
        if self.kind == "empirical":
            return rng.choice(self.values, size=n)
        if self.kind == "uniform":
            return rng.integers(int(self.low_tok), int(self.high_tok) + 1, size=n, dtype=np.int64)
        x = self._ppf(rng.random(n))
        return np.maximum(np.rint(x), 1).astype(np.int64)

    # ---- presentation --------------------------------------------------------------------------
    def describe(self) -> str:
        """One short line with units, e.g. 'lognormal mean 1000 tok, p90 2100 tok'."""
        if self.kind == "fixed":
            return f"fixed {_tok(self.value_tok)}"
        if self.kind == "uniform":
            return f"uniform {self.low_tok:.0f}-{_tok(self.high_tok)}"
        if self.kind == "normal":
            hi = "" if math.isinf(self.high_tok) else f"-{self.high_tok:.0f}"
            return (f"normal mean {_tok(self.mean)}, std {_tok(self.std)} "
                    f"(truncated to {self.low_tok:.0f}{hi or '+'} tok)")
        if self.kind == "lognormal":
            cap = "" if math.isinf(self.high_tok) else f", max {_tok(self.high_tok)}"
            return f"lognormal mean {_tok(self.mean)}, p90 {_tok(self.percentile(90))}{cap}"
        return f"empirical ({len(self.values)} values) mean {_tok(self.mean)}, p90 {_tok(self.percentile(90))}"

    def summary(self) -> dict:
        """JSON-ready: kind, mean, p50, p90, p99, max (tokens), the parameters and describe()."""
        params = {"fixed": {"value_tok": self.value_tok},
                  "lognormal": {"mu": self.mu, "sigma": self.sigma, "high_tok": _finite(self.high_tok)},
                  "uniform": {"low_tok": self.low_tok, "high_tok": self.high_tok},
                  "normal": {"loc_tok": self.loc_tok, "scale_tok": self.scale_tok,
                             "low_tok": self.low_tok, "high_tok": _finite(self.high_tok)},
                  "empirical": {"n": 0 if self.values is None else int(len(self.values))}}[self.kind]
        return {"kind": self.kind, "mean": self.mean, "p50": self.percentile(50), "p90": self.percentile(90),
                "p99": self.percentile(99), "max": self.max, "params": params, "describe": self.describe()}


def _tok(x: float) -> str:
    return f"{x:.0f} tok" if abs(x) >= 10 else f"{x:.3g} tok"


def _finite(x: float):
    return x if math.isfinite(x) else None


# Spec keys each kind accepts, with the aliases people type.
_SPEC_KEYS = {
    "fixed": {"value": "value"},
    "lognormal": {"mean": "mean", "sigma": "sigma", "median": "median", "p50": "median", "p90": "p90", "max": "max"},
    "uniform": {"low": "low", "min": "low", "high": "high", "max": "high"},
    "normal": {"mean": "mean", "std": "std", "sd": "std", "min": "low", "low": "low", "max": "high", "high": "high"},
}


def parse_length(spec, name: str = "--input-len") -> LengthDist:
    """A length from an int (fixed), a string spec or a dict (YAML), e.g.

    512 | "512" | "fixed:512" | "lognormal:mean=1000,sigma=0.8" | "lognormal:median=800,p90=2000,max=8192"
    | "uniform:100-2000" | "normal:mean=500,std=100,min=1,max=2000" | {"kind": "uniform", "low": 1, "high": 9}.
    `name` (the flag or YAML field) prefixes every error message.
    """
    try:
        if isinstance(spec, bool):
            raise BadInput(f"expected a length, got {spec!r}")
        if isinstance(spec, (int, float, np.integer, np.floating)):
            return LengthDist.fixed(spec)
        if isinstance(spec, dict):
            kind = str(spec.get("kind", "")).lower()
            params = {str(k): v for k, v in spec.items() if k != "kind"}
        elif isinstance(spec, str):
            kind, params = _split_spec(spec)
        else:
            raise BadInput(f"expected a length (int, 'kind:params' or mapping), got {spec!r}")
        if kind == "empirical" and "values" in params:
            return LengthDist.empirical(params["values"])
        if kind not in _SPEC_KEYS:
            raise BadInput(f"unknown length kind {kind!r} (use {', '.join(_SPEC_KEYS)}, or a trace)")
        allowed = _SPEC_KEYS[kind]
        args = {}
        for k, v in params.items():
            if k not in allowed:
                raise BadInput(f"unknown parameter {k!r} for {kind} (use {', '.join(dict.fromkeys(allowed))})")
            args[allowed[k]] = _number(v, f"{kind} {k}")
        if kind == "uniform" and set(args) != {"low", "high"}:
            raise BadInput("uniform needs low and high, e.g. uniform:100-2000")
        if kind == "normal" and not {"mean", "std"} <= set(args):
            raise BadInput("normal needs mean and std, e.g. normal:mean=500,std=100,min=1,max=2000")
        if kind == "fixed" and "value" not in args:
            raise BadInput("fixed needs a value, e.g. fixed:512")
        return getattr(LengthDist, kind)(**args)
    except BadInput as e:
        raise BadInput(f"{name}: {e}") from None


_NUM = r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"


def _split_spec(text: str) -> tuple[str, dict]:
    """'lognormal:mean=1000,sigma=0.8' -> ('lognormal', {'mean': '1000', 'sigma': '0.8'})."""
    s = text.strip()
    if re.fullmatch(_NUM, s):
        return "fixed", {"value": s}
    kind, _, rest = s.partition(":")
    kind, rest = kind.strip().lower(), rest.strip()
    if kind == "fixed" and rest and "=" not in rest:
        return kind, {"value": rest}
    m = re.fullmatch(rf"({_NUM})\s*-\s*({_NUM})", rest)
    if kind == "uniform" and m:
        return kind, {"low": m.group(1), "high": m.group(2)}
    params = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        k, eq, v = part.partition("=")
        if not eq:
            raise BadInput(f"cannot read {part!r} in {text!r}: expected key=value")
        params[k.strip().lower()] = v.strip()
    return kind, params


def _number(v, what: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise BadInput(f"{what} must be a number, got {v!r}") from None
    if not math.isfinite(x):
        raise BadInput(f"{what} must be finite, got {v!r}")
    return x


# ---- SLO and Workload -------------------------------------------------------------------------


@dataclass(frozen=True)
class SLO:
    """Latency targets, met at `percentile` (50, 90 or 99) of requests.

    TTFT: time to first token (queueing + prefill + KV transfer). TPOT: time per output token
    after the first (inter-token latency).
    """

    ttft_ms: float
    tpot_ms: float
    percentile: int = 90

    def __post_init__(self):
        for k in ("ttft_ms", "tpot_ms"):
            v = getattr(self, k)
            if isinstance(v, bool) or not (isinstance(v, numbers.Real) and v > 0 and math.isfinite(v)):
                raise BadInput(f"SLO {k} must be > 0, got {v!r}")
        if self.percentile not in SLO_PERCENTILES:
            raise BadInput(f"SLO percentile must be one of 50, 90, 99, got {self.percentile!r}")

    def describe(self) -> str:
        return f"p{self.percentile} TTFT <= {self.ttft_ms:g} ms, p{self.percentile} TPOT <= {self.tpot_ms:g} ms"

    def to_dict(self) -> dict:
        return {"ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "percentile": self.percentile}


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
                  percentile=self.slo.percentile if percentile is None else percentile)
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


def _resolve_rate(rate, requests_per_day, peak_factor, names: dict) -> tuple[float, float, list[str]]:
    """(sizing rate, mean rate, notes) from a mean rate or a daily count, times the peak factor."""
    pf = _positive(peak_factor, names["peak_factor"], 1.0, strict=False)
    if rate is not None and requests_per_day is not None:
        raise BadInput(f"give {names['rate']} or {names['requests_per_day']}, not both")
    if rate is not None:
        mean = _positive(rate, names["rate"])
        how = f"{mean:.4g} req/s ({names['rate']})"
    elif requests_per_day is not None:
        per_day = _positive(requests_per_day, names["requests_per_day"])
        mean = per_day / 86400.0
        how = f"{per_day:,.0f} req/day / 86400 s = {mean:.4g} req/s"
    else:
        raise BadInput(f"no request rate: give {names['rate']} or {names['requests_per_day']}")
    if pf == 1.0:
        note = f"sized for a steady {mean:.4g} req/s = {how}; peak factor 1.0 (no burst headroom)"
    else:
        note = f"peak rate = {how} x peak factor {pf:g} = {mean * pf:.4g} req/s"
    return mean * pf, mean, [note]


_FLAG_NAMES = {"rate": "--rate", "requests_per_day": "--requests-per-day", "peak_factor": "--peak-factor"}


def workload_from_flags(rate=None, requests_per_day=None, peak_factor=1.0, input_len=1000, output_len=250,
                        ttft_slo_ms=1000, tpot_slo_ms=50, percentile=90, arrival_cv2=1.0) -> Workload:
    """The workload `planner plan` flags describe; errors name the flag and the value."""
    rate_rps, mean, notes = _resolve_rate(rate, requests_per_day, peak_factor, _FLAG_NAMES)
    inp = parse_length(input_len, "--input-len")
    out = parse_length(output_len, "--output-len")
    slo = slo_from_flags(ttft_slo_ms, tpot_slo_ms, percentile)
    cv2 = _positive(arrival_cv2, "--arrival-cv2", 0.0, strict=False)
    notes.append("arrivals assumed Poisson (cv^2 = 1)" if cv2 == 1.0 else f"arrival cv^2 = {cv2:g} (given)")
    return Workload(rate_rps=rate_rps, mean_rate_rps=mean, peak_factor=float(peak_factor), input=inp,
                    output=out, slo=slo, arrival_cv2=cv2, source="flags", notes=tuple(notes))


def slo_from_flags(ttft, tpot, pct, names=("--ttft-slo-ms", "--tpot-slo-ms", "--percentile")) -> SLO:
    """An SLO whose errors name the flags (or YAML fields) the values came from."""
    t1 = _positive(ttft, names[0])
    t2 = _positive(tpot, names[1])
    if isinstance(pct, bool) or pct not in SLO_PERCENTILES:
        raise BadInput(f"{names[2]} must be one of 50, 90, 99, got {pct!r}")
    return SLO(ttft_ms=t1, tpot_ms=t2, percentile=int(pct))


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
        f = _positive(rate, names["rate"]) / tr.mean_rate_rps
        notes.append(f"arrivals rescaled from the trace's mean {tr.mean_rate_rps:.4g} req/s to {rate:.4g} req/s "
                     f"(gaps x {1 / f:.4g})")
    mean, peak = tr.mean_rate_rps * f, tr.peak_minute_rps * f
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
_SLO_KEYS = ("ttft_ms", "tpot_ms", "percentile")
_SLO_DEFAULTS = {"ttft_ms": 1000.0, "tpot_ms": 50.0, "percentile": 90}


def load_workload_file(path) -> Workload:
    """Read a workload YAML (`--workload FILE`); relative paths inside resolve against its folder.

        rate_rps: 20              # mean req/s; or requests_per_day: 1.7e6; x peak_factor (default 1)
        input: {kind: lognormal, mean: 1000, sigma: 0.8}   # an int, a spec string, or {kind: trace, path: t.csv}
        output: 250
        slo: {ttft_ms: 1000, tpot_ms: 50, percentile: 90}  # omitted keys take these defaults
        trace: traces/day.csv     # optional: lengths and arrivals (input/output then override lengths)
        hourly_rps: [24 numbers]  # optional daily profile (req/s); alone it also sets the rate
        arrival_cv2: 1.0          # optional; default Poisson, or measured from the trace
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{p}: workload file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{p}: cannot read workload file: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BadInput(f"{p}:{where} invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{p}: a workload file must be a mapping of keys (rate_rps, input, output, slo, ...)")
    _check_keys(p, doc, _FILE_KEYS, "")
    base = p.parent
    names = {k: f"{p}: {k}" for k in ("rate_rps", "requests_per_day", "peak_factor")}
    names["rate"] = names["rate_rps"]

    slo_doc = doc.get("slo") or {}
    if not isinstance(slo_doc, dict):
        raise BadInput(f"{p}: slo must be a mapping like {{ttft_ms: 1000, tpot_ms: 50, percentile: 90}}")
    _check_keys(p, slo_doc, _SLO_KEYS, "slo.")
    defaulted = [k for k in _SLO_KEYS if k not in slo_doc]
    slo_vals = {**_SLO_DEFAULTS, **slo_doc}
    slo = slo_from_flags(slo_vals["ttft_ms"], slo_vals["tpot_ms"], slo_vals["percentile"],
               tuple(f"{p}: slo.{k}" for k in _SLO_KEYS))

    traces: dict = {}  # a file named twice (trace + input: {kind: trace}) is read once

    def trace_at(rel, field_name):
        from planner.workload.trace import load_trace

        if not isinstance(rel, str):
            raise BadInput(f"{p}: {field_name} must be a file path, got {rel!r}")
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
            rate = _positive(rpd, names["requests_per_day"]) / 86400.0
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
        if rate is None and rpd is None and hourly is not None:
            pf = _positive(doc.get("peak_factor", 1.0), names["peak_factor"], 1.0, strict=False)
            mean = sum(hourly) / 24
            notes = [f"rate from hourly_rps: mean {mean:.4g} req/s, busiest hour {max(hourly):.4g} req/s "
                     f"x peak factor {pf:g} = {max(hourly) * pf:.4g} req/s sized"]
            rate_rps = max(hourly) * pf
        else:
            rate_rps, mean, notes = _resolve_rate(rate, rpd, doc.get("peak_factor", 1.0), names)
            if hourly is not None and max(hourly) > rate_rps:
                notes.append(f"warning: hourly_rps peaks at {max(hourly):.4g} req/s, above the sizing rate")
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


def _check_keys(p: Path, d: dict, known: tuple, prefix: str) -> None:
    """Unknown keys are typos until proven otherwise: name them, and suggest the closest known one."""
    for k in d:
        if k not in known:
            close = difflib.get_close_matches(str(k), known, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f" (known: {', '.join(known)})"
            raise BadInput(f"{p}: unknown key {prefix}{k}{hint}")


def _hourly(p: Path, v) -> tuple[float, ...] | None:
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or len(v) != 24:
        n = len(v) if isinstance(v, (list, tuple)) else type(v).__name__
        raise BadInput(f"{p}: hourly_rps must be a list of 24 rates (req/s, one per hour), got {n}")
    rates = tuple(_number(x, f"{p}: hourly_rps[{i}]") for i, x in enumerate(v))
    if min(rates) < 0 or max(rates) <= 0:
        raise BadInput(f"{p}: hourly_rps must be >= 0 with at least one hour > 0")
    return rates
