"""How smooth the arrivals at a decode worker are, and what a request then decodes beside.

A decode starts when its prefill ends, so a decode worker's arrivals are a prefill queue's
departures: smoother than Poisson from a busy worker that prefills one prompt at a time, burstier
from one that batches (a batch's prompts start decoding together: window_dispersion of the
simulated departures); a router that fills workers least-loaded first smooths them further.
Fewer others running means faster steps, and on a device whose step time jumps from batch 1 to 2
(a CPU's matrix-vector kernel) who decodes alone matters; Little's law averages the step over the
batch a request meets (mean_step). Pure functions: rates in
req/s, times in s, counts in sequences. Used by planner.queueing.pools for engines whose
`decode_arrivals` is "departures" and by every per-request TPOT.
"""

from __future__ import annotations

import math

import numpy as np

from planner.queueing.samples import poisson_pmf


def _scv(x: np.ndarray) -> float:
    """Squared coefficient of variation: variance over squared mean."""
    return float(np.var(x) / max(float(np.mean(x)), 1e-12) ** 2)

def smooth_arrivals(ca2: float, life_s: np.ndarray, seed: int = 4) -> float:
    """How many fewer others (sequences) a request decodes beside when its worker's arrivals are
    smoother than Poisson, the shift (c_a^2 - 1) beta of the GI/G/inf two-moment approximation
    (Whitt): the occupancy's variance-to-mean ratio is z = 1 + (c_a^2 - 1) beta, with
    beta = E[min(L1, L2)] / E[L] over decode lives L, and the mean others a request sees over its
    life, E[N(N - 1)] / E[N] (a life-weighted Palm average), is b - 1 + z. Poisson: 0."""
    life = np.asarray(life_s, dtype=float)
    beta = float(np.minimum(life, np.random.default_rng(seed).permutation(life)).mean() / max(life.mean(), 1e-12))
    return (ca2 - 1.0) * beta

def decode_arrival_scv(mode: str, rho_prefill: float, cs2: float, prefill_workers: int, decode_workers: int,
                       workers: int, departure_scv: float | None = None) -> float:
    """Squared coefficient of variation of the arrivals at one decode worker (QNA rules, Whitt
    1983). A decode starts when its prefill ends, so its arrivals are a prefill queue's departures,
    c_d^2 = rho^2 c_s^2 + (1 - rho^2) c_a^2: a busy prefill worker spaces them by its service times.
    The router fills workers least-loaded first, close to round robin, which splits a stream of
    SCV c^2 into n of SCV c^2 / n (gaps of n arrivals each). Disaggregated: Poisson arrivals at the
    prefill workers, their departures merged (tending to Poisson as workers add up: the average),
    split over the decode workers. Colocated: the router's split of Poisson arrivals over the
    workers, then each worker's own prefills. `departure_scv`: one prefill worker's departures'
    dispersion where it is known (a simulated stage, `window_dispersion`), instead of the QNA rule."""
    r2 = min(max(rho_prefill, 0.0), 1.0) ** 2
    if mode == "colocated":
        return r2 * cs2 + (1 - r2) / max(workers, 1)
    dep = r2 * cs2 + (1 - r2) if departure_scv is None else float(departure_scv)
    merged = (dep + (max(prefill_workers, 1) - 1)) / max(prefill_workers, 1)
    return merged / max(decode_workers, 1)

def window_dispersion(times_s: np.ndarray, window_s: float) -> float:
    """Variance over mean of the number of events in consecutive windows of `window_s` s: the
    SCV a GI/G/inf occupancy sees at that time scale (1 for Poisson, k for Poisson batches of k
    events at once, below 1 for a busy server's spaced departures). A batch that ends releases all
    its prompts at once: the batch-mates start decoding together, which the QNA rule for single
    departures (smoother than Poisson) misses. 1 when there are too few windows to tell."""
    t = np.sort(np.asarray(times_s, dtype=float))
    if window_s <= 0 or len(t) < 2 or t[-1] - t[0] < 20 * window_s:
        return 1.0
    counts = np.histogram(t, bins=np.arange(t[0], t[-1], window_s))[0]
    m = float(counts.mean())
    return float(counts.var() / m) if m > 0 else 1.0

def alone_share(m: float, z: float, lam: float, life_s: np.ndarray, ca2: float) -> np.ndarray:
    """Chance a request decodes alone all its life: nobody beside it when it starts (a count of
    mean m and variance-to-mean z: e^-m for Poisson, z^(m / (1 - z)) for a binomial, z < 1) and
    nobody joining before it ends, e^(-lam L c_a^2) (e^-lam L for Poisson arrivals; smoother
    arrivals are less likely to land in a short life)."""
    start = math.exp(-m) if z >= 0.999 else float(max(z, 1e-6) ** (m / (1 - z)))
    return start * np.exp(-lam * np.asarray(life_s, dtype=float) * ca2)

def lifetime_var_factor(life_s: np.ndarray, mean_life_s: float) -> np.ndarray:
    """Var of the time-average of an M/M/inf occupancy over a window L, as a share of its
    variance b: 2 (x - 1 + e^-x) / x^2 with x = L / mean service. 1 for a short window (one
    step sees Poisson(b)), about 2/x for a long one (fluctuations average out)."""
    x = np.maximum(np.asarray(life_s, dtype=float) / max(mean_life_s, 1e-12), 1e-6)
    return np.where(x < 1e-3, 1.0, 2.0 * (x - 1.0 + np.exp(-x)) / (x * x))

def mean_step(t, m: float) -> float:
    """E[t(1 + N)], N ~ Poisson(m): the mean step a decoding request takes beside m others on
    average (s); `t` times an array of batch sizes. Not t(1 + m): a measured step curve is not a
    line in the batch (a CPU's batch 3 runs near its batch 2, its batch 4 much slower; batches
    13-15 slower than 16), and the batch a request decodes in fluctuates around its mean."""
    if m <= 0:
        return float(np.asarray(t(np.ones(1)), dtype=float)[0])
    k, p = poisson_pmf(m)
    return float(p @ np.asarray(t(1.0 + k), dtype=float) / p.sum())

def occupancy(lam: float, steps_mean: float, t, share=lambda b: 0.0, b_max: float = 1e4, shift: float = 0.0) -> float | None:
    """Mean number of sequences decoding on a worker (Little's law, each decoding beside itself):
    b = lam * E[steps] * mean_step(t, others) / (1 - share(b)), others = max(0, b + shift) the mean
    a request decodes beside (`smooth_arrivals`: b for Poisson arrivals), t(n) the step time at
    batch sizes n (s, an array), share the time lost to prefill stalls (colocated).
    queueing.models.DecodeModel.running solves it with t(b): at small b that is one sequence short.
    None when no fixed point."""
    b = lam * steps_mean * mean_step(t, 0.0)
    for _ in range(500):
        sh = share(b)
        if sh >= 0.98:
            return None
        b_new = lam * steps_mean * mean_step(t, max(0.0, b + shift)) / (1 - sh)
        if b_new > b_max:
            return None
        if abs(b_new - b) < 1e-4 * max(b, 1e-3):
            return b_new
        b = 0.5 * (b + b_new)  # damped: the stall share moves with b
    return b

def others_over_life(b: float, var_factor: np.ndarray, alone: np.ndarray, n: int, seed: int = 3) -> np.ndarray:
    """Time-average of the other sequences a request decodes beside, over its life: mean b,
    variance b * var_factor (Poisson(b) would be var_factor = 1), and an atom at 0 of weight
    `alone`, the chance it decodes alone all its life (nobody running when it starts, nobody
    arriving before it ends: e^-b e^-lam L for an M/G/inf worker). At small b that atom is most
    requests, and a step time that jumps from batch 1 to 2 makes it matter. The rest is a Gamma
    with the moments left over."""
    if b <= 0:
        return np.zeros(n)
    rng = np.random.default_rng(seed)
    p0 = np.clip(np.asarray(alone, dtype=float), 0.0, 0.95) * np.ones(n)
    m1 = b / (1 - p0)  # the mean of the positive part keeps the total mean b
    var = np.maximum((b * var_factor + b * b) / (1 - p0) - m1 * m1, 1e-9)
    shape, scale = m1 * m1 / var, var / m1
    x = rng.gamma(shape, scale, size=n)
    return np.where(rng.random(n) < p0, 0.0, x)
