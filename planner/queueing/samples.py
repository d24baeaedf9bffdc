"""What every queueing model speaks: the workload as fixed-seed samples (Demand), latency
percentiles (Pcts: one definition for predicted and measured), a replica's evaluation at a rate
(RoleEval), and the seeded draws the closed forms push samples through (planner.queueing.models).
Times in s unless a name says ms; rates in req/s."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from math import lgamma

import numpy as np

N_SAMPLES = 1000


@dataclass(frozen=True)
class Pcts:
    """Percentiles of a latency (ms)."""

    p50: float
    p90: float
    p99: float

    def at(self, q: int) -> float:
        return {50: self.p50, 90: self.p90, 99: self.p99}[q]

    def to_dict(self) -> dict:
        return {"p50": round(self.p50, 3), "p90": round(self.p90, 3), "p99": round(self.p99, 3)}

    @staticmethod
    def of(samples_s: np.ndarray) -> "Pcts":
        """Percentiles of samples given in seconds, in ms: linear interpolation between order
        statistics (numpy's default), the one definition every percentile here uses, predicted or
        measured (the replay, the simulator, profiles; `vllm bench serve` uses it too)."""
        return Pcts(*(x * 1e3 for x in percentiles_50_90_99(samples_s)))


_Q = np.true_divide((50, 90, 99), 100)
_AT: dict[int, tuple] = {}  # sample count -> (partition points, (below, above, weight) per percentile)


def percentiles_50_90_99(samples) -> tuple[float, float, float]:
    """np.percentile(samples, (50, 90, 99)) bit for bit (its default linear method: the same
    virtual indices and the same two-sided lerp), from one partition at the six order statistics
    it needs: ~11 us for 1,000 samples against numpy's ~50 us, on a path run ~1,200 times a plan."""
    a = np.asarray(samples, dtype=float).ravel()
    n = a.size
    if n < 2:
        return tuple(float(x) for x in np.percentile(a, (50, 90, 99)))  # numpy's own errors for an empty array
    at = _AT.get(n)
    if at is None:
        v = (n - 1) * _Q
        lo = np.floor(v).astype(np.intp).tolist()
        hi = [min(i + 1, n - 1) for i in lo]
        at = (sorted({*lo, *hi, n - 1}), list(zip(lo, hi, (v - lo).tolist())))
        if len(_AT) < 64:  # the model's fixed sample counts; measured ones vary and are not kept
            _AT[n] = at
    kth, spots = at
    part = np.partition(a, kth)
    if part[-1] != part[-1]:  # NaN: numpy moves it to the end, and answers NaN
        return (float("nan"),) * 3
    out = []
    for i, j, g in spots:
        x, y = float(part[i]), float(part[j])
        d = y - x
        out.append(y - d * (1 - g) if g >= 0.5 else x + d * g)
    return tuple(out)


def poisson_quantiles(mean: float, qs=(50, 90, 99)) -> list[int]:
    """Quantiles (percent) of a Poisson(mean) count: the smallest k with P(N <= k) >= q/100.
    Vectorised through the log-pmf: scipy.stats.poisson.ppf costs ~70 us a call, this ~15 us."""
    if mean <= 0:
        return [0 for _ in qs]
    k, pmf = poisson_pmf(mean)
    cdf = np.cumsum(pmf)
    return [int(min(np.searchsorted(cdf, q / 100 - 1e-12), k[-1])) for q in qs]


def poisson_pmf(mean: float) -> tuple[np.ndarray, np.ndarray]:
    """(k = 0, 1, ..., P(N = k)) of a Poisson(mean > 0) count, out to mean + 12 sd + 25 (the rest
    is below 1e-30): through the log-pmf, without scipy on the plan path."""
    k = np.arange(0, int(mean + 12 * np.sqrt(mean) + 25))
    return k, np.exp(k * np.log(mean) - mean - _log_factorials(len(k)))


_LOG_FACT = np.zeros(0)


def _log_factorials(n: int) -> np.ndarray:
    """log(k!) for k = 0..n-1, from a table grown on demand (math.lgamma: no scipy.special
    import on the plan path, which costs ~0.1 s)."""
    global _LOG_FACT
    if len(_LOG_FACT) < n:
        _LOG_FACT = np.array([lgamma(k + 1.0) for k in range(max(n, 2 * len(_LOG_FACT), 512))])
    return _LOG_FACT[:n]


@dataclass(frozen=True)
class RoleEval:
    """A replica at per-replica arrival rate `lam_rps`: predicted latencies and whether SLOs hold."""

    feasible: bool
    binding: str  # what fails (or would fail first): "ttft", "tpot", "memory", "throughput", "" if fine
    lam_rps: float
    ttft_ms: Pcts | None = None
    tpot_ms: Pcts | None = None
    utilization: float = 0.0  # fraction of time busy (prefill) or of bandwidth used (decode)
    batch_mean: float = 0.0
    extra: dict = field(default_factory=dict)
    itl_ms: Pcts | None = None  # every inter-token gap; colocated: only when an ITL SLO asks for it


@dataclass(frozen=True)
class Demand:
    """The workload, reduced to fixed-seed samples the formulas consume."""

    prompt: np.ndarray  # prompt lengths (tokens), N_SAMPLES of them
    output: np.ndarray  # output lengths (tokens)
    ttft_slo_s: float
    tpot_slo_s: float
    q: int  # SLO percentile: 50, 90 or 99
    itl_slo_s: float | None = None  # every inter-token gap at percentile q; None: no ITL target

    @cached_property
    def mean_prompt(self) -> float:
        return float(self.prompt.mean())

    @cached_property
    def prompt_quantiles(self) -> tuple[np.ndarray, np.ndarray]:
        """(lengths, weights): 64 quantiles of the prompt lengths, distinct ones weighted by how many
        fell together, standing for the prompts where a model averages over them many times."""
        q, n = np.unique(np.percentile(self.prompt, np.linspace(0.5, 99.5, 64)), return_counts=True)
        return q, n / n.sum()

    @cached_property
    def prompt_stall_table(self) -> np.ndarray:
        """stall_table of the prompt lengths: the shape of a prefill stall's size (a prompt's
        prefill time, or its share of chunked steps, is close to affine in its length), drawn once
        per workload for every replica the optimizer tries."""
        return stall_table(self.prompt)

    @cached_property
    def decode_steps(self) -> np.ndarray:
        """Decode steps per request: every token after the first (the prefill makes the first)."""
        return np.maximum(self.output - 1, 0)

    @cached_property
    def mean_context(self) -> float:
        """Mean context of a running sequence (tokens): prompt + half its output."""
        return float(self.prompt.mean() + self.output.mean() / 2)

    @cached_property
    def mean_final_context(self) -> float:
        return float(self.prompt.mean() + self.output.mean())

    @staticmethod
    def from_workload(w, n: int = N_SAMPLES, seed: int = 0) -> "Demand":
        rng = np.random.default_rng(seed)
        return Demand(
            prompt=w.input.sample(rng, n).astype(float),
            output=w.output.sample(rng, n).astype(float),
            ttft_slo_s=w.slo.ttft_ms / 1e3,
            tpot_slo_s=w.slo.tpot_ms / 1e3,
            q=int(w.slo.percentile),
            itl_slo_s=None if getattr(w.slo, "itl_ms", None) is None else w.slo.itl_ms / 1e3,
        )


_RNG = np.random.default_rng(1)
_U = _RNG.random(N_SAMPLES)  # fixed draws: the model is deterministic and cheap to re-evaluate
_E = _RNG.exponential(1.0, N_SAMPLES)


_RNG_STATES: dict = {}


def _seeded_rng(seed: int) -> np.random.Generator:
    """The same stream as np.random.default_rng(seed), by resetting one cached generator (3 us
    instead of ~40 us: the capacity search evaluates thousands of times). Single-threaded use."""
    if seed not in _RNG_STATES:
        g = np.random.default_rng(seed)
        _RNG_STATES[seed] = (g, g.bit_generator.state)
    g, state = _RNG_STATES[seed]
    g.bit_generator.state = state
    return g


def _wait_samples(rho_wait: float, mean_wait: float, n: int) -> np.ndarray:
    """Waiting-time samples: zero with probability 1 - rho_wait, else exponential (M/M/1 shape)."""
    if rho_wait <= 0 or mean_wait <= 0:
        return np.zeros(n)
    u, e = (_U, _E) if n == N_SAMPLES else (np.random.default_rng(1).random(n), np.random.default_rng(2).exponential(1.0, n))
    return np.where(u < rho_wait, e * (mean_wait / rho_wait), 0.0)


def itl_samples(t, m_o: float, steps: np.ndarray, stall_rate: float = 0.0, stall_s: float = 0.0, share: float = 0.0,
                first_gap=0.0) -> np.ndarray:
    """N_SAMPLES inter-token gaps (s), each gap of each request equally likely: ITL as `vllm bench
    serve` reports it (percentiles over gaps), where TPOT averages a request's gaps first. A gap is
    one decode step beside Poisson(m_o) others, t(1 + others); a prefill stall (an unchunked batch,
    or the extra time of a chunked mixed step: `stall_s`) lands in it with probability
    stall_rate x t / (1 - share), the stalls' share of a request's decode life; a request's first
    gap also carries `first_gap` (s, scalar or per sample: a layerwise KV transfer's last layer)."""
    rng = np.random.default_rng(3)
    steps = np.asarray(steps, dtype=float)
    i = rng.choice(len(steps), N_SAMPLES, p=steps / steps.sum())  # a request, in proportion to its gaps
    gap = np.asarray(t(1.0 + rng.poisson(max(m_o, 0.0), N_SAMPLES)), dtype=float)
    if stall_rate > 0 and stall_s > 0:
        gap = gap + (rng.random(N_SAMPLES) < np.minimum(1.0, stall_rate * gap / max(1 - share, 1e-9))) * stall_s
    fg = np.broadcast_to(np.asarray(first_gap, dtype=float), steps.shape)[i]
    if np.any(fg > 0):
        gap = gap + (rng.random(N_SAMPLES) < 1.0 / steps[i]) * fg
    return gap


#: Stall events summed draw by draw up to this many per request; beyond, the normal approximation.
EXACT_STALL_EVENTS = 16


def stall_table(sizes: np.ndarray, seed: int = 4) -> np.ndarray:
    """(N_SAMPLES, EXACT_STALL_EVENTS + 1) running sums of standardised draws from `sizes` (any
    unit): row i, column n is the sum of sample i's first n draws of (size - mean) / std. Drawn
    once per workload (Demand.prompt_stall_table), so stall_samples costs a lookup where the
    capacity search calls it often."""
    sizes = np.asarray(sizes, dtype=float)
    sd = float(sizes.std())
    z = (sizes - sizes.mean()) / sd if sd > 0 else np.zeros_like(sizes)
    idx = np.random.default_rng(seed).integers(0, len(z), (N_SAMPLES, EXACT_STALL_EVENTS))
    return np.concatenate([np.zeros((N_SAMPLES, 1)), np.cumsum(z[idx], axis=1)], axis=1)


def stall_samples(rng: np.random.Generator, events_per_s: float, mean_s: float, sd_s: float, table: np.ndarray,
                  window_s: np.ndarray, share: float) -> np.ndarray:
    """Seconds of prefill stalls inside each of N_SAMPLES requests' windows (`window_s`, s: its
    own prefill plus its decode life at the mean stall share). Events arrive as Poisson at
    `events_per_s`, each of `mean_s` +- `sd_s` seconds, shaped like the sizes behind `table`
    (stall_table): the sum is exact for up to EXACT_STALL_EVENTS events (a skewed size shows in a
    short request's tail), normal beyond. Stalls that land in the window lengthen it, and so
    collect more stalls: a request's decode is the low-priority job of a preemptive M/G/1, whose
    completion time (a delay busy period) has variance lam E[S^2] x / (1 - rho)^3 for x seconds of
    its own work, against lam E[S^2] x / (1 - rho) for a compound Poisson over its mean window
    x / (1 - rho). So the deviations from the mean are scaled by 1 / (1 - share). Without it the
    closed forms' colocated TPOT p99 sat 25% under the simulator's (benchmarks/model_vs_sim.py)."""
    window_s = np.asarray(window_s, dtype=float)
    n = rng.poisson(max(events_per_s, 0.0) * window_s)
    z = rng.standard_normal(len(window_s))
    spread = np.sqrt(n) * z
    few = n <= EXACT_STALL_EVENTS
    if few.any():
        spread = np.where(few, table[np.arange(len(n)) % len(table), np.minimum(n, EXACT_STALL_EVENTS)], spread)
    mean = events_per_s * window_s * mean_s
    total = n * mean_s + sd_s * spread
    return np.maximum(mean + (total - mean) / max(1.0 - share, 0.02), 0.0)


def jittered(samples_s: np.ndarray, cv: float, seed: int = 11) -> np.ndarray:
    """TTFT samples (s) with a serving stack's service jitter: each x max(0.2, 1 + cv Z), Z
    standard normal (same seed, same draws). cv = 0: the samples themselves. The step-time
    models give one time per prompt length; a real stack's lone prompts of one length vary
    (cv 6-29% over the 36 pilots of benchmarks/fidelity.py on this project's 2-core VM), which
    widens the TTFT tail the model predicts."""
    if not cv:
        return samples_s
    z = np.random.default_rng(seed).standard_normal(np.shape(samples_s))
    return samples_s * np.maximum(0.2, 1.0 + float(cv) * z)
