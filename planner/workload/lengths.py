"""Length distributions of prompts and outputs (tokens): fixed, lognormal, uniform, normal, empirical.

Parsed from the --input-len / --output-len forms (`parse_length`) or built from a trace's values;
each samples (fixed seeds upstream), reports its percentiles and describes itself with units.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import re
from dataclasses import dataclass, field

import numpy as np

from planner.errors import BadInput, shown

Z90 = 1.2815515655446004  # standard normal 90th percentile, float(scipy.special.ndtri(0.90))


def ndtr(x):
    """Standard normal CDF (scipy.special, imported here: fixed-length plans never pay its ~0.1 s)."""
    from scipy.special import ndtr as f

    return f(x)


def ndtri(p):
    """Inverse of the standard normal CDF (scipy.special, imported lazily as ndtr)."""
    from scipy.special import ndtri as f

    return f(p)

KINDS = ("fixed", "lognormal", "uniform", "normal", "empirical")
#: The longest length a distribution may describe (tokens): 16.8 M, beyond any model's context.
MAX_TOKENS = 1 << 24
#: The widest lognormal (std of ln tokens): at 4 its p99.9 is 2.4e5 x its median.
MAX_SIGMA = 4.0


def _tokens(v, what: str, low: float = 1.0) -> float:
    """A finite token count in low..MAX_TOKENS, or BadInput naming `what`."""
    if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and low <= v <= MAX_TOKENS):
        got = f"{v:g}" if isinstance(v, numbers.Real) and not isinstance(v, bool) else shown(v)
        raise BadInput(f"{what} must be between {low:g} and {MAX_TOKENS:,} tokens, got {got}")
    return float(v)


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
        return cls("fixed", value_tok=float(round(_tokens(value, "fixed length"))))

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
            if k == "sigma":
                if not (isinstance(v, numbers.Real) and 0 < v <= MAX_SIGMA):
                    raise BadInput(f"lognormal sigma must be in (0, {MAX_SIGMA:g}], got {shown(v)}")
            else:
                _tokens(v, f"lognormal {k}", low=1e-3)
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
        if not sigma <= MAX_SIGMA:
            raise BadInput(f"lognormal: these numbers give sigma {sigma:.3g}, wider than {MAX_SIGMA:g}")
        high = math.inf if max is None else _tokens(max, "lognormal max")
        return cls("lognormal", mu=mu, sigma=float(sigma), high_tok=high)

    @classmethod
    def uniform(cls, low: float, high: float) -> LengthDist:
        _tokens(low, "uniform low"), _tokens(high, "uniform high")
        if not low <= high:
            raise BadInput(f"uniform needs 1 <= low <= high tokens, got {low}-{high}")
        return cls("uniform", low_tok=float(round(low)), high_tok=float(round(high)))

    @classmethod
    def normal(cls, mean: float, std: float, low: float = 1, high: float = math.inf) -> LengthDist:
        """Normal(mean, std) truncated to [low, high] (tokens): `mean` is before truncation."""
        _tokens(mean, "normal mean", low=-MAX_TOKENS), _tokens(std, "normal std", low=1e-3)
        _tokens(low, "normal min", low=0), high == math.inf or _tokens(high, "normal max")
        if not (0 <= low < high):
            raise BadInput(f"normal needs 0 <= min < max, got min {low}, max {high}")
        d = cls("normal", loc_tok=float(mean), scale_tok=float(std), low_tok=float(low), high_tok=float(high))
        if d._mass < 1e-12:
            raise BadInput(f"normal(mean {mean}, std {std}) has no mass in [{low}, {high}]")
        return d

    @classmethod
    def empirical(cls, values) -> LengthDist:
        """Observed lengths (tokens). Zeros (failed requests) count as 1 token; negatives are an error."""
        try:
            v = np.asarray(values, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise BadInput(f"empirical values must be a list of numbers, got {shown(values)}") from None
        if v.size == 0 or not np.isfinite(v).all() or (v < 0).any() or (v > MAX_TOKENS).any():
            raise BadInput(f"empirical lengths must be a non-empty list of numbers in 0..{MAX_TOKENS:,}")
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
            raise BadInput(f"expected a length, got {shown(spec)}")
        if isinstance(spec, (int, float, np.integer, np.floating)):
            return LengthDist.fixed(spec)
        if isinstance(spec, dict):
            kind = str(spec.get("kind", "")).lower()
            params = {str(k): v for k, v in spec.items() if k != "kind"}
        elif isinstance(spec, str):
            kind, params = _split_spec(spec)
        else:
            raise BadInput(f"expected a length (int, 'kind:params' or mapping), got {shown(spec)}")
        if kind == "empirical" and "values" in params:
            return LengthDist.empirical(params["values"])
        if kind not in _SPEC_KEYS:
            raise BadInput(f"unknown length kind {shown(kind)} (use {', '.join(_SPEC_KEYS)}, or a trace)")
        allowed = _SPEC_KEYS[kind]
        args = {}
        for k, v in params.items():
            if k not in allowed:
                raise BadInput(f"unknown parameter {shown(k)} for {kind} (use {', '.join(dict.fromkeys(allowed))})")
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
            raise BadInput(f"cannot read {shown(part)} in {shown(text)}: expected key=value")
        params[k.strip().lower()] = v.strip()
    return kind, params


def _number(v, what: str) -> float:
    if isinstance(v, bool):  # YAML's true is not 1 ms
        raise BadInput(f"{what} must be a number, got {shown(v)}")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise BadInput(f"{what} must be a number, got {shown(v)}") from None
    if not math.isfinite(x):
        raise BadInput(f"{what} must be finite, got {shown(v)}")
    return x


# ---- SLO and Workload -------------------------------------------------------------------------
