"""Discrete-event simulation of serving pools: the check on queueing's closed forms.

The closed forms (Erlang C, Pollaczek-Khinchine, the Little's-law fixed point of decode) assume
things a real pool does not do exactly: batches form FCFS under a token budget, a decode batch
changes size every step, KV memory delays admission, a colocated prefill stalls running decodes.
This module runs those mechanics on a request list and reports the same percentiles, so the gap
between formula and mechanics is a number.

It knows no hardware: service times come in as callables (seconds), so tests pass constants with
known queueing answers and the planner passes the roofline's functions:

    prefill_time_s(lengths: np.ndarray) -> s    one prefill batch of prompts with these lengths
    decode_step_s(batch: int, mean_context: float) -> s    one decode iteration
    kv_transfer_s(prompt_len: int) -> s    moving one request's KV from prefill to decode replica

Modelling choices (each says why):
- The first token is emitted by the prefill (disaggregated: the prefill worker returns it), so
  TTFT = queue wait + prefill and does not include the KV transfer. The transfer delays the second
  token: it sits in the first inter-token gap, so it is inside that request's TPOT and its
  `tpot_max_s`. `kv_transfer_s` is recorded on its own per request.
- KV transfer is a pure per-request delay: transfers overlap and do not share a link capacity
  (check aggregate bandwidth with the closed form `rate * mean bytes <= link`).
- Decode is advanced by runs of steps, not per token: with the batch fixed, the next change is the
  first finish (known from each sequence's finish step) or an admission, so one event covers k
  steps. A run's step time is `decode_step_s(b, c0 + (k-1)/2)`, the step at the run's mid
  context (c0 = mean context at its start, growing one token per step): exact when the step time is
  linear in context, as the roofline's memory term is. An admission cuts a run short at the next
  step boundary. Idle time is jumped over.
- Context of a running sequence = prompt + tokens generated so far (first token included).
  KV is reserved at admission for the final length prompt + output (no preemption, no swapping).
  A disaggregated decode replica that is full leaves arrived KV waiting (that wait is in the
  first gap); the prefill pool is not held back by it (no backpressure).
- A request with output length 1 finishes at its prefill (tpot is NaN, nothing is transferred).
- Routing: "jsq" sends each request, on arrival at a pool, to the replica with the least
  outstanding work (prefill: queued + in-service prompt tokens; decode: reserved + waiting KV
  tokens; colocated: queued + admitted requests); "random" picks uniformly; "shared" (prefill pool
  only; elsewhere it means "jsq") keeps one FCFS queue that idle replicas pull from: that is M/G/c.
- Chunked prefill iteration time, unless `mixed_step_s(prefill_tokens, decode_batch,
  mean_context)` is given: `max(prefill_time_s(chunk lengths), decode_step_s(b, c))`. On the
  roofline a fused step costs max(all FLOPs / F, weights + KV bytes / B): the chunk is
  compute-bound, the decode memory-bound, so the larger part is close to the whole. It errs fast:
  it drops the other part's share and a chunk's attention to the earlier part of its prompt. The
  sum of the two parts (weights read twice, overheads paid twice) would err slow and make
  chunking look worse than it is.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from planner.errors import BadInput

_ARRIVAL, _PREFILL_DONE, _KV_ARRIVE, _BOUNDARY = range(4)
_METRICS = ("ttft_s", "tpot_s", "tpot_max_s", "e2e_s", "kv_transfer_s", "queue_s", "prefill_s")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise BadInput(f"simulate: {message}")


def poisson_arrivals(rate_rps: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Arrival times (s) of `n` requests of a Poisson process of `rate_rps` requests/s."""
    _check(rate_rps > 0, f"rate_rps must be > 0, got {rate_rps}")
    return np.cumsum(rng.exponential(1.0 / rate_rps, size=n))


@dataclass(frozen=True, eq=False)
class SimResult:
    """Per-request times (s, arrays in arrival order) and pool statistics of one simulation."""

    arrival_s: np.ndarray
    ttft_s: np.ndarray  # first token - arrival = queue_s + prefill_s
    tpot_s: np.ndarray  # (finish - first token) / (output_len - 1); NaN for output_len 1
    tpot_max_s: np.ndarray  # longest gap between two consecutive tokens of the request
    e2e_s: np.ndarray  # finish - arrival
    kv_transfer_s: np.ndarray  # prefill -> decode transfer delay (0 when colocated)
    queue_s: np.ndarray  # arrival -> start of its (first chunk of) prefill
    prefill_s: np.ndarray  # start of prefill -> first token
    output_len: np.ndarray
    utilization: dict  # role -> busy time / (replicas * duration_s)
    mean_decode_batch: float  # running sequences, time-averaged over decode steps
    duration_s: float  # first arrival -> last finish
    completed: int
    warmup_frac: float = 0.1

    def _kept(self, a: np.ndarray) -> np.ndarray:
        """Drop the first `warmup_frac` of requests: the pool starts empty, which flatters it."""
        return a[int(len(a) * self.warmup_frac):]

    def percentile(self, metric: str, q: float) -> float:
        """q-th percentile (q in 0..100) of a per-request metric (s) after warm-up, NaNs ignored."""
        _check(metric in _METRICS, f"metric must be one of {', '.join(_METRICS)}, got {metric!r}")
        a = self._kept(getattr(self, metric))
        a = a[~np.isnan(a)]
        return float(np.percentile(a, q)) if len(a) else float("nan")

    def summary(self) -> dict:
        """p50/p90/p99 of TTFT, TPOT, max inter-token gap and E2E (ms), throughput, utilization."""
        out = {}
        for name in ("ttft", "tpot", "tpot_max", "e2e"):
            for q in (50, 90, 99):
                out[f"{name}_ms_p{q}"] = 1e3 * self.percentile(f"{name}_s", q)
        out["tpot_ms_mean"] = 1e3 * float(np.nanmean(self._kept(self.tpot_s)))
        out["kv_transfer_ms_mean"] = 1e3 * float(np.mean(self._kept(self.kv_transfer_s)))
        out["throughput_rps"] = self.completed / self.duration_s
        out["output_tokens_per_s"] = float(self.output_len.sum()) / self.duration_s
        out["mean_decode_batch"] = self.mean_decode_batch
        out.update({f"utilization_{k}": v for k, v in self.utilization.items()})
        return out


class _Replica:
    """One model instance: its queues, its continuous batch and its run log."""

    def __init__(self, queue: deque):
        self.queue = queue  # prompts waiting for prefill (one deque shared by all under "shared")
        self.pending, self.pending_kv = deque(), 0  # disaggregated decode: KV arrived, not admitted
        self.prefilling = []  # chunked: [request, prompt tokens left] in FCFS order
        self.running = []  # heap of (decode step at which it finishes, request)
        self.step = self.ctx_sum = self.kv_used = self.slots = self.load = 0
        self.run = None  # (start s, step s, steps, batch) of the decode run in progress
        self.batch = None  # prefill batch in flight (or prompts a mixed step completes)
        self.awake, self.version, self.busy_since = False, 0, None
        self.busy_s = self.decode_s = self.batch_s = self.last_step_end = 0.0
        self.run_start, self.run_dt, self.run_gap = [], [], []  # one entry per run


class _Sim:
    def __init__(self, prompt_lens, output_lens, arrival_s, rate_rps, seed, routing, warmup_frac,
                 decode_step_s, max_decode_batch, kv_capacity_tokens):
        self.rng = np.random.default_rng(seed)
        p, o = np.asarray(prompt_lens), np.asarray(output_lens)
        n = len(p)
        _check(p.ndim == 1 and n > 0 and o.shape == p.shape, "prompt_lens and output_lens must be equal-length"
               f" non-empty 1-D arrays, got shapes {p.shape} and {o.shape}")
        _check(p.dtype.kind in "iu" and o.dtype.kind in "iu" and p.min() >= 1 and o.min() >= 1,
               f"lengths must be integers >= 1, got {p.dtype} min {p.min()} and {o.dtype} min {o.min()}")
        _check((arrival_s is None) != (rate_rps is None), "give exactly one of arrival_s and rate_rps")
        arr = poisson_arrivals(rate_rps, n, self.rng) if arrival_s is None else np.asarray(arrival_s, float)
        _check(arr.shape == p.shape and not np.any(np.diff(arr) < 0),
               f"arrival_s must be sorted, one per request ({n}), got shape {arr.shape}")
        _check(routing in ("jsq", "random", "shared"), f"routing must be jsq, random or shared, got {routing!r}")
        _check(max_decode_batch >= 1 and 0 <= warmup_frac < 1, "need max_decode_batch >= 1 and"
               f" 0 <= warmup_frac < 1, got {max_decode_batch} and {warmup_frac}")
        w = int(np.argmax(p + o))
        _check(p[w] + o[w] <= kv_capacity_tokens, f"request {w} needs {p[w] + o[w]} KV tokens,"
               f" more than kv_capacity_tokens={kv_capacity_tokens}")
        self.p, self.out, self.arr = p.tolist(), o.tolist(), arr
        self.routing, self.warmup_frac = routing, warmup_frac
        self.step_s, self.max_batch, self.kv_cap = decode_step_s, max_decode_batch, kv_capacity_tokens
        nan = float("nan")
        self.t_start, self.t_first, self.t_finish = [nan] * n, [nan] * n, [nan] * n
        self.transfer, self.gap, self.first_run = [0.0] * n, [nan] * n, [0] * n
        self.heap, self.seq = [], 0

    # ---- events -----------------------------------------------------------------------------
    def push(self, t, kind, i, ver=0):
        self.seq += 1  # ties break in push order, so same-time events keep causal order
        heapq.heappush(self.heap, (t, self.seq, kind, i, ver))

    def loop(self, on_arrival, on_boundary, on_done=None, on_kv=None):
        arr, n = self.arr, len(self.arr)
        self.push(float(arr[0]), _ARRIVAL, 0)  # arrivals are pushed one at a time: small heap
        while self.heap:
            t, _, kind, i, ver = heapq.heappop(self.heap)
            if kind == _ARRIVAL:
                if i + 1 < n:
                    self.push(float(arr[i + 1]), _ARRIVAL, i + 1)
                on_arrival(i, t)
            elif kind == _BOUNDARY:
                if ver == i.version:  # else a cut-short run superseded this event
                    on_boundary(i, t)
            elif kind == _PREFILL_DONE:
                on_done(i, t)
            else:
                on_kv(i, t)

    def pick(self, reps, key):
        """The replica for a new request: least `key` (jsq/shared) or uniform (random)."""
        if self.routing == "random":
            return reps[int(self.rng.integers(len(reps)))]
        return min(reps, key=key)

    def accrue(self, r, now):
        if r.busy_since is not None:
            r.busy_s += now - r.busy_since
        r.busy_since = None

    # ---- the continuous batch ---------------------------------------------------------------
    def can_admit(self, r, i):
        return r.slots < self.max_batch and r.kv_used + self.p[i] + self.out[i] <= self.kv_cap

    def reserve(self, r, i):
        r.slots += 1
        r.kv_used += self.p[i] + self.out[i]

    def join(self, r, i):
        """Request i (first token already out) runs from r's next step; its last is out-1 steps on."""
        heapq.heappush(r.running, (r.step + self.out[i] - 1, i))
        r.ctx_sum += self.p[i] + 1
        self.first_run[i] = len(r.run_start)

    def finish(self, r, i, now):
        self.t_finish[i] = now
        r.slots -= 1
        r.kv_used -= self.p[i] + self.out[i]

    def first_tokens(self, r, done, now):
        """Prompts whose prefill ended at `now`: emit the first token, then finish or decode."""
        for i in done:
            self.t_first[i] = now
            if self.out[i] == 1:
                self.finish(r, i, now)
            else:
                self.join(r, i)

    def start_run(self, r, now, dt=None, k=None):
        """Start k decode steps (default: up to the first finish) of dt s each; return the end."""
        b = len(r.running)
        if k is None:
            k = r.running[0][0] - r.step
        if dt is None:
            dt = float(self.step_s(b, r.ctx_sum / b + (k - 1) / 2))
        _check(dt > 0, f"step time must be > 0 s, got {dt} at batch {b}")
        r.run = (now, dt, k, b)
        r.run_start.append(now)
        r.run_dt.append(dt)
        r.run_gap.append(now - r.last_step_end + dt)  # a prefill stall before it counts as gap
        r.busy_since = now
        return now + k * dt

    def end_run(self, r, now):
        """Close the run ending at `now`: advance the step count, retire finished sequences."""
        t0, dt, k, b = r.run
        r.run = None
        r.step += k
        r.ctx_sum += b * k
        r.last_step_end = now
        r.decode_s += now - t0
        r.batch_s += b * (now - t0)
        while r.running and r.running[0][0] <= r.step:
            i = heapq.heappop(r.running)[1]
            r.ctx_sum -= self.p[i] + self.out[i]
            i0 = self.first_run[i]  # its first gap (token 1 -> 2) holds transfer and admission wait
            gap = r.run_start[i0] + r.run_dt[i0] - self.t_first[i]
            self.gap[i] = max(gap, max(r.run_gap[i0 + 1:], default=0.0))
            self.finish(r, i, now)

    def cut_short(self, r, now):
        """A newcomer can join: end the decode run at the first step boundary at or after `now`."""
        t0, dt, k, b = r.run
        n = max(1, math.ceil((now - t0) / dt - 1e-9))
        if n < k:
            r.run = (t0, dt, n, b)
            r.version += 1
            self.push(t0 + n * dt, _BOUNDARY, r, r.version)

    def wake(self, r, head, now):
        """Work arrived at r: start it now if r is idle, or cut its decode run short to admit it."""
        if not r.awake:
            r.awake = True
            self.push(now, _BOUNDARY, r, r.version)
        elif r.run is not None and r.batch is None and self.can_admit(r, head):
            self.cut_short(r, now)

    def result(self, reps_by_role) -> SimResult:
        a = self.arr
        first, fin = np.array(self.t_first), np.array(self.t_finish)
        assert not np.isnan(fin).any(), "every request finishes: the simulation drains the pools"
        out = np.array(self.out)
        tpot = np.where(out > 1, (fin - first) / np.maximum(out - 1, 1), np.nan)
        duration = float(fin.max() - a[0]) or 1e-12
        util = {role: sum(r.busy_s for r in reps) / (len(reps) * duration)
                for role, reps in reps_by_role.items()}
        decs = reps_by_role.get("decode", reps_by_role.get("replica"))
        dec_s = sum(r.decode_s for r in decs)
        start = np.array(self.t_start)
        return SimResult(
            arrival_s=a, ttft_s=first - a, tpot_s=tpot, tpot_max_s=np.array(self.gap), e2e_s=fin - a,
            kv_transfer_s=np.array(self.transfer), queue_s=start - a, prefill_s=first - start,
            output_len=out, utilization=util,
            mean_decode_batch=sum(r.batch_s for r in decs) / dec_s if dec_s else 0.0,
            duration_s=duration, completed=len(a), warmup_frac=self.warmup_frac)


def simulate_disaggregated(prompt_lens, output_lens, prefill_time_s, decode_step_s, kv_transfer_s=None,
                           *, arrival_s=None, rate_rps=None, n_prefill=1, n_decode=1,
                           max_prefill_tokens=8192, max_prefill_batch=None, max_decode_batch=256,
                           kv_capacity_tokens=math.inf, routing="jsq", seed=0,
                           warmup_frac=0.1, padded_budget=False) -> SimResult:
    """Separate prefill and decode pools. A prefill replica, when idle with prompts queued, takes
    a batch FCFS while the sum of lengths fits `max_prefill_tokens` (`padded_budget`: rows x the
    longest prompt, planner.runtime's rule; at least one prompt, at most `max_prefill_batch`) and
    is busy for `prefill_time_s(lengths)`. Each prompt's KV then travels
    `kv_transfer_s(prompt_len)` s to a decode replica, which admits it at a step boundary when a slot
    (`max_decode_batch`) and `kv_capacity_tokens` (per replica) allow."""
    _check(min(n_prefill, n_decode, max_prefill_tokens) >= 1, "need n_prefill, n_decode, max_prefill_tokens"
           f" >= 1, got {n_prefill}, {n_decode}, {max_prefill_tokens}")
    sim = _Sim(prompt_lens, output_lens, arrival_s, rate_rps, seed, routing, warmup_frac,
               decode_step_s, max_decode_batch, kv_capacity_tokens)
    p, out, cap = sim.p, sim.out, max_prefill_batch or len(sim.p)
    shared = deque() if routing == "shared" else None
    pre = [_Replica(shared if shared is not None else deque()) for _ in range(n_prefill)]
    dec = [_Replica(deque()) for _ in range(n_decode)]

    def start_prefill(r, now):
        q, batch, tokens, longest = r.queue, [], 0, 0
        while q and len(batch) < cap and (not batch or _fits(len(batch), tokens, longest, p[q[0]], max_prefill_tokens, padded_budget)):
            i = q.popleft()
            batch.append(i)
            tokens, longest = tokens + p[i], max(longest, p[i])
            sim.t_start[i] = now
        r.batch, r.busy_since = batch, now
        sim.push(now + float(prefill_time_s(np.array([p[i] for i in batch]))), _PREFILL_DONE, r)

    def on_arrival(i, now):
        if shared is not None:  # one queue: any idle replica pulls the prompt
            shared.append(i)
            r = next((x for x in pre if x.batch is None), None)
        else:
            r = sim.pick(pre, key=lambda r: r.load)
            r.queue.append(i)
            r.load += p[i]
        if r is not None and r.batch is None:
            start_prefill(r, now)

    def on_done(r, now):
        sim.accrue(r, now)
        for i in r.batch:
            r.load -= p[i]
            sim.t_first[i] = now
            if out[i] == 1:
                sim.t_finish[i] = now
            else:
                sim.transfer[i] = tr = float(kv_transfer_s(p[i])) if kv_transfer_s else 0.0
                sim.push(now + tr, _KV_ARRIVE, i)
        r.batch = None
        if r.queue:
            start_prefill(r, now)

    def on_kv(i, now):
        r = sim.pick(dec, key=lambda r: r.kv_used + r.pending_kv)
        r.pending.append(i)
        r.pending_kv += p[i] + out[i]
        sim.wake(r, r.pending[0], now)

    def on_boundary(r, now):
        sim.accrue(r, now)
        if r.run is not None:
            sim.end_run(r, now)
        while r.pending and sim.can_admit(r, r.pending[0]):
            i = r.pending.popleft()
            r.pending_kv -= p[i] + out[i]
            sim.reserve(r, i)
            sim.join(r, i)
        if r.running:
            sim.push(sim.start_run(r, now), _BOUNDARY, r, r.version)
        else:
            r.awake = False

    sim.loop(on_arrival, on_boundary, on_done, on_kv)
    return sim.result({"prefill": pre, "decode": dec})


def _fits(rows: int, tokens: int, longest: int, nxt: int, budget: int, padded: bool) -> bool:
    """Whether one more prompt of `nxt` tokens joins a batch of `rows` holding `tokens` (longest
    `longest`): the sum of lengths within the budget, or (padded) rows x the longest prompt."""
    return (rows + 1) * max(longest, nxt) <= budget if padded else tokens + nxt <= budget


def _fill_chunks(r, budget: int, p, can_admit, admit) -> tuple[list, list]:
    """One chunked iteration's prompt tokens: (chunk sizes, requests whose prompt ends in it).
    Prompts already started go first (FCFS), then new ones while the budget lasts and they fit."""
    chunks, done = [], []
    for e in r.prefilling:
        if budget <= 0:
            break
        take = min(e[1], budget)
        e[1] -= take
        budget -= take
        chunks.append(take)
        if e[1] == 0:
            done.append(e[0])
    r.prefilling = [e for e in r.prefilling if e[1] > 0]
    while budget > 0 and r.queue and can_admit():
        i = admit()
        take = min(p[i], budget)
        budget -= take
        chunks.append(take)
        if take == p[i]:
            done.append(i)
        else:
            r.prefilling.append([i, p[i] - take])
    return chunks, done


def simulate_colocated(prompt_lens, output_lens, prefill_time_s, decode_step_s, *, arrival_s=None,
                       rate_rps=None, n_replicas=1, max_batch_tokens=8192, max_decode_batch=256,
                       kv_capacity_tokens=math.inf, chunked=False, chunk_tokens=512,
                       mixed_step_s=None, routing="jsq", seed=0, warmup_frac=0.1, padded_budget=False) -> SimResult:
    """Every replica serves both phases. Unchunked (prefill first): at each step boundary, if
    prompts wait and fit (slots, KV), prefill a batch of them FCFS up to `max_batch_tokens` (of
    prompt tokens, or with `padded_budget` rows x the longest) while every running decode stalls;
    otherwise run decode steps. Chunked (Sarathi-style): each
    iteration spends `chunk_tokens`: one per running decode, the rest on prompt chunks FCFS
    (a prompt may span iterations); its first token comes at the end of its last chunk."""
    _check(min(n_replicas, max_batch_tokens) >= 1, f"need n_replicas, max_batch_tokens >= 1, got {n_replicas},"
           f" {max_batch_tokens}")
    _check(not chunked or chunk_tokens > max_decode_batch, f"chunk_tokens ({chunk_tokens}) must exceed"
           f" max_decode_batch ({max_decode_batch}), else a full decode batch starves every prompt")
    sim = _Sim(prompt_lens, output_lens, arrival_s, rate_rps, seed, routing, warmup_frac,
               decode_step_s, max_decode_batch, kv_capacity_tokens)
    p = sim.p
    reps = [_Replica(deque()) for _ in range(n_replicas)]

    def on_arrival(i, now):
        r = sim.pick(reps, key=lambda r: len(r.queue) + r.slots)
        r.queue.append(i)
        sim.wake(r, r.queue[0], now)

    def admit(r, now):
        i = r.queue.popleft()
        sim.reserve(r, i)
        sim.t_start[i] = now
        return i

    def unchunked(r, now):
        batch, tokens, longest = [], 0, 0
        while r.queue and sim.can_admit(r, r.queue[0]) and (
                not batch or _fits(len(batch), tokens, longest, p[r.queue[0]], max_batch_tokens, padded_budget)):
            batch.append(admit(r, now))
            tokens, longest = tokens + p[batch[-1]], max(longest, p[batch[-1]])
        if not batch:
            return None
        r.batch = batch
        r.busy_since = now
        return now + float(prefill_time_s(np.array([p[i] for i in batch])))

    def chunked_step(r, now):
        b = len(r.running)
        chunks, done = _fill_chunks(r, chunk_tokens - b, p, lambda: sim.can_admit(r, r.queue[0]), lambda: admit(r, now))
        if not chunks:
            return None
        ctx = r.ctx_sum / b if b else 0.0
        if mixed_step_s is not None:
            dt = float(mixed_step_s(sum(chunks), b, ctx))
        else:
            dt = max(float(prefill_time_s(np.array(chunks))), float(decode_step_s(b, ctx)) if b else 0.0)
        r.batch = done  # not None: this iteration cannot be cut short
        if b:
            return sim.start_run(r, now, dt=dt, k=1)
        r.busy_since = now
        return now + dt

    def on_boundary(r, now):
        sim.accrue(r, now)
        if r.run is not None:
            sim.end_run(r, now)
        if r.batch is not None:
            sim.first_tokens(r, r.batch, now)
            r.batch = None
        end = chunked_step(r, now) if chunked else unchunked(r, now)
        if end is None and r.running:
            end = sim.start_run(r, now)
        if end is None:
            r.awake = False
        else:
            sim.push(end, _BOUNDARY, r, r.version)

    sim.loop(on_arrival, on_boundary)
    return sim.result({"replica": reps})
