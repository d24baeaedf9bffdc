"""A prefill worker that runs everything queued as one batch padded to its longest prompt.

This project's runtime (planner.runtime.prefill) batches whatever is queued whenever it frees,
whether or not batching pays; queueing.models.PrefillModel assumes a server that batches only once
it pays. On a CPU a batch of k costs about k single prompts (plus padding), so the first of a batch
waits for all of it. Engines whose `prefill_batching` is "greedy-padded" use this model. Times in
s, rates in req/s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.queueing.samples import N_SAMPLES, Demand, Pcts, RoleEval

@dataclass(frozen=True)
class GreedyPrefill:
    """A prefill worker under the runtime's batching rule (see greedy_prefill). Times in s."""

    ttft_s: np.ndarray  # samples: wait + own batch
    wait_s: np.ndarray  # samples: the rest of the batch running on arrival (0 if idle)
    busy: float  # share of time a batch runs
    batch_mean: float  # prompts per batch while busy

def padded_batch_table(rep, d: Demand, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """(prompt lengths grid, time of a batch of k = 1..slots prompts padded to each length (s)):
    independent of the rate, so a capacity search builds it once."""
    grid_L = np.unique(np.quantile(np.asarray(d.prompt, dtype=float), np.linspace(0, 1, 33)))
    return grid_L, np.array([[rep.prefill_time_s(np.full(k, L)) for L in grid_L] for k in range(1, slots + 1)])


def greedy_prefill(rep, d: Demand, lam: float, max_batch_tokens: int, slots: int = 16, n: int = N_SAMPLES,
                   seed: int = 6, table=None) -> GreedyPrefill | None:
    """TTFT of a prefill worker that, whenever it frees, runs everything queued as one batch
    right-padded to its longest prompt (FIFO, at most max_batch_tokens padded tokens and `slots`
    prompts): planner.runtime.prefill's rule, at lam req/s. It batches whether or not batching
    pays: on a CPU a batch of k costs about k single prompts (plus padding), so the first of a
    batch waits for all of it; queueing.PrefillModel assumes a server that batches only once it
    pays. A prompt that finds the worker idle runs alone at once; one that finds a batch running
    (probability `busy`) waits for the rest of it (a uniform share), then runs with every prompt
    that arrived meanwhile, 1 + Poisson(lam T) in all. Busy share and batch time solve
    busy = lam E[T] / E[k] with k = max(1, Poisson(lam T)): a batch carries what arrived during
    the last one (one prompt, after an idle spell).
    None when the worker cannot keep up."""
    rng = np.random.default_rng(seed)
    P = np.asarray(d.prompt, dtype=float)
    grid_L, table = table or padded_batch_table(rep, d, slots)

    def batch_time(k, longest):
        k = np.clip(k, 1, slots).astype(int)
        out = np.empty(len(k))
        for kk in np.unique(k):
            m = k == kk
            out[m] = np.interp(longest[m], grid_L, table[kk - 1])
        return out

    def batch(k, own=None):
        """(k, longest, time) of batches of k prompts (own prompt first, if given)."""
        draws = rng.choice(P, size=(len(k), slots))
        if own is not None:
            draws[:, 0] = own
        cols = np.arange(slots)[None, :] < np.minimum(k, slots)[:, None]
        longest = np.where(cols, draws, 0.0).max(axis=1)
        k = np.minimum(np.minimum(k, slots), np.maximum(1, max_batch_tokens // np.maximum(longest, 1)))
        return k, longest, batch_time(k, longest)

    t_mean = float(rep.prefill_time_s(np.array([P.mean()])))
    for _ in range(30):  # a batch carries what arrived during the last one (one, after an idle spell)
        k, _, tb = batch(np.maximum(1, rng.poisson(lam * t_mean, n)))
        t_new = float(tb.mean())
        if abs(t_new - t_mean) < 1e-4 * t_mean:
            break
        t_mean = 0.5 * (t_mean + t_new)
    busy = lam * t_mean / float(k.mean())
    if busy >= 0.999:
        return None
    own = rng.choice(P, n)
    _, _, t_cur = batch(np.maximum(1, rng.poisson(lam * t_mean, n)))
    wait = rng.random(n) * t_cur
    _, _, t_own = batch(1 + rng.poisson(lam * t_cur), own)
    alone = rep.prefill_times_s(own)
    is_busy = rng.random(n) < busy
    ttft = np.where(is_busy, wait + t_own, alone)
    return GreedyPrefill(ttft, np.where(is_busy, wait, 0.0), busy, float(k.mean()))

def greedy_prefill_capacity(rep, d: Demand, max_batch_tokens: int, slots: int = 16, rel_tol: float = 0.005, table=None) -> float:
    """The largest rate (req/s) a prefill worker batching the runtime's way keeps up with
    (greedy_prefill's busy share below 1), by bisection from a single prompt's service rate."""
    lo, hi = 0.0, 1.0 / float(rep.prefill_times_s(np.asarray(d.prompt, dtype=float)).mean())
    while greedy_prefill(rep, d, hi, max_batch_tokens, slots, table=table) is not None and hi < 1e6:
        lo, hi = hi, 2 * hi
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if greedy_prefill(rep, d, mid, max_batch_tokens, slots, table=table) is not None else (lo, mid)
    return lo


class GreedyPrefillModel:
    """A greedy-padded prefill replica as a role model (eval, upper_bound) for the optimizer and
    the pool predictions: TTFT = wait for the batch in flight + own padded batch (+ transfer_s,
    the KV transfer when the engine moves it before the first token)."""

    def __init__(self, rep, d: Demand, max_batch_tokens: int, slots: int, transfer_s=0.0):
        self.rep, self.d, self.max_batch_tokens, self.slots = rep, d, int(max_batch_tokens), int(slots)
        self.transfer_s = transfer_s
        self.table = padded_batch_table(rep, d, self.slots)
        self.s1 = rep.prefill_times_s(d.prompt)  # each prompt alone (s)
        self._cap = None

    def stage(self, lam: float) -> GreedyPrefill | None:
        return greedy_prefill(self.rep, self.d, lam, self.max_batch_tokens, self.slots, table=self.table)

    def upper_bound(self) -> float:
        """The most req/s the worker keeps up with (busy share below 1) (req/s)."""
        if self._cap is None:
            self._cap = greedy_prefill_capacity(self.rep, self.d, self.max_batch_tokens, self.slots, table=self.table)
        return self._cap

    @property
    def lam_max(self) -> float:
        return self.upper_bound()

    def eval(self, lam: float) -> RoleEval:
        g = self.stage(lam)
        if g is None:
            return RoleEval(False, "throughput", lam, utilization=1.0)
        p = Pcts.of(g.ttft_s + self.transfer_s)
        ok = p.at(self.d.q) <= self.d.ttft_slo_s * 1e3
        return RoleEval(ok, "" if ok else "ttft", lam, ttft_ms=p, utilization=g.busy, batch_mean=g.batch_mean,
                        extra={"mean_wait_ms": float(g.wait_s.mean()) * 1e3})
