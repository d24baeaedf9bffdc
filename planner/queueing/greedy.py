"""A prefill worker that runs everything queued as one batch padded to its longest prompt.

This project's runtime (planner.runtime.prefill) batches whatever is queued whenever it frees,
whether or not batching pays; queueing.models.PrefillModel assumes a server that batches only once
it pays. On a CPU a batch of k costs about k single prompts (plus padding), so the first of a batch
waits for all of it. Engines whose `prefill_batching` is "greedy-padded" use this model. Times in
s, rates in req/s.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from planner.queueing.samples import Demand, Pcts, RoleEval

@dataclass(frozen=True)
class GreedyPrefill:
    """A prefill worker under the runtime's batching rule (see greedy_prefill). Times in s."""

    ttft_s: np.ndarray  # samples: wait + own batch
    wait_s: np.ndarray  # samples: queued until its batch starts (0 if the worker was idle)
    busy: float  # share of time a batch runs
    batch_mean: float  # prompts per batch while busy
    departures_s: np.ndarray  # when each simulated prompt's batch ended, after the warm-up, ascending

def padded_batch_table(rep, d: Demand, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """(prompt lengths grid, time of a batch of k = 1..slots prompts padded to each length (s)):
    independent of the rate, so a stream (_Stream) looks its batch times up once."""
    grid_L = np.unique(np.quantile(np.asarray(d.prompt, dtype=float), np.linspace(0, 1, 33)))
    return grid_L, np.array([[rep.prefill_time_s(np.full(k, L)) for L in grid_L] for k in range(1, slots + 1)])


#: Prompts simulated per stage evaluation: `COPIES` passes over the demand's samples after
#: WARMUP more. At 90% load a queue's waits stay correlated over many batches: for the
#: long-prompt mix on this CPU's profile, TTFT p50 and p90 varied by 17% and 24% (std / mean over
#: 8 seeds) with one pass of 1,000 prompts, by 8% and 9% with 8 (an evaluation: 18-32 ms).
COPIES, WARMUP = 8, 400
STREAM_SEED = 6


class _Stream:
    """The demand's prompts as one long FIFO stream (WARMUP extra prompts, then COPIES shuffled
    passes over the samples), every padded batch time looked up in advance so that the stage's
    loop does plain arithmetic; `erlang` > 1 spaces the arrivals as a round robin over that many
    workers does. Times in s."""

    def __init__(self, rep, d: Demand, max_batch_tokens: int, slots: int, seed: int, erlang: int = 1):
        rng = np.random.default_rng(seed)
        P = np.asarray(d.prompt, dtype=float)
        n = len(P)
        perms = [rng.permutation(n) for _ in range(COPIES)]
        order = np.concatenate([rng.choice(n, WARMUP)] + perms)
        # pick[i]: where demand sample i stands in pass i mod COPIES
        where = np.stack([np.argsort(q) for q in perms])
        self.pick = WARMUP + (np.arange(n) % COPIES) * n + where[np.arange(n) % COPIES, np.arange(n)]
        values, idx = np.unique(P[order], return_inverse=True)
        grid_L, tab = padded_batch_table(rep, d, slots)
        self.times = [np.interp(values, grid_L, tab[k]).tolist() for k in range(slots)]  # [k - 1][length index]
        self.p, self.idx = P[order].tolist(), idx.tolist()
        self.slots, self.budget = int(slots), int(max_batch_tokens)
        # gaps of mean 1 (scaled by 1 / lam in run()): Poisson, or every `erlang`-th arrival of a
        # Poisson stream (Erlang gaps, SCV 1 / erlang), a router's round robin over that many workers
        self.exp = rng.standard_exponential((len(order), max(1, int(erlang)))).mean(axis=1)
        self._saturated = None

    def take(self, i: int, stop: int) -> tuple[int, float]:
        """(prompts, seconds) of the batch that starts at prompt i with prompts i..stop-1 queued:
        planner.runtime.engine.take_batch's rule, FIFO while rows x longest prompt stays within
        the budget (one over-long prompt runs alone) and a slot is free."""
        p, k, longest, lv = self.p, 0, 0.0, 0
        stop = min(stop, i + self.slots)
        while i + k < stop:
            L = p[i + k]
            if k and (k + 1) * max(L, longest) > self.budget:
                break
            if L > longest:
                longest, lv = L, self.idx[i + k]
            k += 1
        return k, self.times[k - 1][lv]

    def run(self, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(arrival, batch start, batch end, prompts in its batch) of every prompt at `lam` req/s."""
        at = np.cumsum(self.exp / lam).tolist()
        m = len(at)
        start, end, size = [0.0] * m, [0.0] * m, [0] * m
        i, free = 0, 0.0
        while i < m:
            t0 = max(free, at[i])
            k, dt = self.take(i, bisect_right(at, t0, i))
            free = t0 + dt
            start[i:i + k], end[i:i + k], size[i:i + k] = [t0] * k, [free] * k, [k] * k
            i += k
        return np.asarray(at), np.asarray(start), np.asarray(end), np.asarray(size)

    def saturated_rps(self) -> float:
        """Prompts a second with the queue never empty (full batches cut from the stream in order):
        the rate no load can reach, and any load below it keeps up with."""
        if self._saturated is None:
            i, busy, m = WARMUP, 0.0, len(self.p)
            while i < m:
                k, dt = self.take(i, m)
                busy, i = busy + dt, i + k
            self._saturated = (m - WARMUP) / busy
        return self._saturated


def greedy_prefill(rep, d: Demand, lam: float, max_batch_tokens: int, slots: int = 16, seed: int = STREAM_SEED,
                   stream: _Stream | None = None) -> GreedyPrefill | None:
    """TTFT of a prefill worker that, whenever it frees, runs everything queued as one batch
    right-padded to its longest prompt (FIFO, at most max_batch_tokens padded tokens and `slots`
    prompts): planner.runtime.prefill's rule, at lam req/s of Poisson arrivals. It batches whether
    or not batching pays: on a CPU a batch of k costs about k single prompts (plus padding), so the
    first of a batch waits for all of it; queueing.PrefillModel assumes a server that batches only
    once it pays.

    The rule is simulated as it is, over COPIES passes of the demand's prompts: what the budget
    leaves queued waits for the next batch, and a long batch lets more arrive for the one after.
    Closed forms of this (a batch carries what arrived during the last one, all of it) left that
    backlog out and put long-prompt pilots at 90% load a median 40% under their measured TTFT p50
    over 8 fidelity runs (simulated, they are over it: the prefill times it is given run high,
    README "How good is the model?"). Sample i of the result is demand sample i's prompt, from
    pass i mod COPIES (so that it lines up with per-sample terms such as a KV transfer). None
    when the worker cannot keep up."""
    s = stream or _Stream(rep, d, max_batch_tokens, slots, seed)
    if lam <= 0 or lam >= 0.999 * s.saturated_rps():
        return None
    at, start, end, size = s.run(lam)
    tail = slice(WARMUP, None)
    span = end[-1] - at[WARMUP]
    busy = min(float(np.sum(((end - start) / size)[tail])) / span, 1.0)  # each batch's time once, shared by its prompts
    return GreedyPrefill(end[s.pick] - at[s.pick], start[s.pick] - at[s.pick], busy, 1.0 / float(np.mean(1.0 / size[tail])),
                         end[tail])


def greedy_departures(rep, d: Demand, lam: float, max_batch_tokens: int, slots: int = 16, erlang: int = 1) -> np.ndarray | None:
    """When each prompt's batch ends (s, ascending, after the warm-up) for a worker batching the
    runtime's way at lam req/s, its arrivals Poisson or (erlang > 1) every erlang-th of a Poisson
    stream, as a round robin over that many workers leaves them; None when it cannot keep up."""
    g = greedy_prefill(rep, d, lam, max_batch_tokens, slots, stream=_Stream(rep, d, max_batch_tokens, slots, STREAM_SEED, erlang))
    return None if g is None else g.departures_s


def greedy_prefill_capacity(rep, d: Demand, max_batch_tokens: int, slots: int = 16,
                            stream: _Stream | None = None) -> float:
    """The largest rate (req/s) a prefill worker batching the runtime's way keeps up with: its
    throughput with the queue never empty (_Stream.saturated_rps)."""
    s = stream or _Stream(rep, d, max_batch_tokens, slots, STREAM_SEED)
    return 0.999 * s.saturated_rps()


class GreedyPrefillModel:
    """A greedy-padded prefill replica as a role model (eval, upper_bound) for the optimizer and
    the pool predictions: TTFT = wait for the batch in flight + own padded batch (+ transfer_s,
    the KV transfer when the engine moves it before the first token)."""

    def __init__(self, rep, d: Demand, max_batch_tokens: int, slots: int, transfer_s=0.0):
        self.rep, self.d, self.max_batch_tokens, self.slots = rep, d, int(max_batch_tokens), int(slots)
        self.transfer_s = transfer_s
        self.stream = _Stream(rep, d, self.max_batch_tokens, self.slots, STREAM_SEED)
        self.s1 = rep.prefill_times_s(d.prompt)  # each prompt alone (s)

    def stage(self, lam: float) -> GreedyPrefill | None:
        return greedy_prefill(self.rep, self.d, lam, self.max_batch_tokens, self.slots, stream=self.stream)

    def upper_bound(self) -> float:
        """The most req/s the worker keeps up with (req/s)."""
        return greedy_prefill_capacity(self.rep, self.d, self.max_batch_tokens, self.slots, stream=self.stream)

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
