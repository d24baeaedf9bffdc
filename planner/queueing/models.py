"""What one replica does under load: TTFT and TPOT percentiles, and its capacity within the SLOs.

Routing assumption (stated in every report): a pool splits its arrivals between replicas in
proportion to their capacity, at random. A random split of a Poisson stream is Poisson, so each
replica is an independent single-server queue fed at its share `lam` (req/s). Join-shortest-queue
routing does better than this, so the sizing errs on the safe side.

Roles and their closed forms (times in s, rates in req/s):

* Prefill replica: prompts are batched up to a token budget. The batch size k solves
  k = clip(lam * T(k), 1, k_max) (prompts that arrive during one batch form the next). The wait is the
  M/G/1 Pollaczek-Khinchine wait  W = lam E[S^2] / (2 (1 - rho))  while batches are single prompts,
  and the batch-residual wait  W = T(k) / (2 (1 - lam / lam_max))  once batching absorbs the load
  (lam_max = k_max / T(k_max)); we take the smaller. The wait's distribution is P(W > 0) = rho with an
  exponential tail (the M/M/1 shape), and TTFT = W + own prefill (+ KV transfer when disaggregated).
* Decode replica (continuous batching): by Little's law b = lam * E[steps] * t(b) with t(b) the step
  time at batch b; solved by fixed-point iteration. The number running is Poisson(b) (M/G/inf), so
  TPOT at percentile q is t(Poisson_q(b)). Feasible while the KV of that many sequences fits.
* Colocated replica: unchunked, each prefill batch stalls every running decode; chunked prefill
  mixes a token budget C of prompt chunks into every step (smooth TPOT, longer TTFT).

Percentiles come from 1,000 fixed-seed samples of the workload's lengths pushed through these
formulas (deterministic, vectorised); `planner plan --simulate` checks them by discrete-event
simulation (planner.simulate.des).
"""

from __future__ import annotations

from functools import cached_property
from math import expm1, factorial

import numpy as np

from planner.queueing.engine import GENERIC_MAX_NUM_SEQS, GENERIC_PREFILL_TOKEN_BUDGET
from planner.queueing.samples import (_E, _U, Demand, Pcts, RoleEval, _seeded_rng, _wait_samples,
                                      itl_samples, poisson_quantiles, stall_samples)
from planner.steptime.roofline import Replica

MAX_DECODE_BATCH = GENERIC_MAX_NUM_SEQS  # the generic engine's running-batch cap per replica
DEFAULT_PREFILL_TOKEN_BUDGET = GENERIC_PREFILL_TOKEN_BUDGET  # tokens per prefill batch


class PrefillModel:
    """Prefill replica under load (see module docstring). Precomputes service times once."""

    def __init__(self, rep: Replica, d: Demand, token_budget: int = DEFAULT_PREFILL_TOKEN_BUDGET, transfer_s: np.ndarray | float = 0.0):
        self.rep, self.d = rep, d
        self.s1 = rep.prefill_times_s(d.prompt)  # each prompt alone (s)
        self.k_max = max(1, int(token_budget // max(d.mean_prompt, 1)))
        self.transfer_s = transfer_s
        self._T_cache: dict[int, float] = {}

    def T(self, k: float) -> float:
        """Time of a batch of k mean-length prompts (s)."""
        k = max(1, int(round(k)))
        if k not in self._T_cache:
            self._T_cache[k] = self.rep.prefill_time_s(np.full(k, self.d.mean_prompt))
        return self._T_cache[k]

    @property
    def lam_max(self) -> float:
        """Most req/s the replica can prefill, with full batches (req/s)."""
        return self.k_max / self.T(self.k_max)

    def batch(self, lam: float) -> float:
        memo = self.__dict__.setdefault("_batch_memo", {})  # the colocated fixed point asks it per iteration
        if lam not in memo:
            memo[lam] = self._batch(lam)
        return memo[lam]

    def _batch(self, lam: float) -> float:
        k = 1.0
        for _ in range(50):
            k_new = min(max(lam * self.T(k), 1.0), self.k_max)
            if abs(k_new - k) < 0.5:
                return k_new
            k = k_new
        return k

    def upper_bound(self) -> float:
        """No rate at or above this is sustainable (req/s): full batches back to back."""
        return self.lam_max

    def wait_samples(self, lam: float) -> tuple[np.ndarray, float, float, float]:
        """Queueing delay before a prompt's batch starts (s): samples, mean, busy share, batch size.

        Single-prompt regime (lam * T(1) < 1): the M/G/1 Pollaczek-Khinchine wait, with an
        exponential tail and P(wait > 0) = rho. Batching regime: the residual of the batch in
        progress, uniform on [0, T(k)], plus an M/D/1 wait for whole batches of k_max when they fill
        up (lam / k_max batches/s of T(k_max) s). The smaller mean wins: batching is what the
        server does once it pays."""
        k = self.batch(lam)
        Tk = self.T(k)
        es, es2 = float(self.s1.mean()), float((self.s1**2).mean())
        rho1 = lam * es
        w_pk = lam * es2 / (2 * (1 - rho1)) if rho1 < 1 else np.inf
        w_full = md1_wait(lam / self.k_max, self.T(self.k_max))
        w_batch = Tk / 2 + w_full
        n = len(self.s1)
        if w_pk <= w_batch:
            return _wait_samples(rho1, w_pk, n), w_pk, rho1, k
        return _U[:n] * Tk + _E[:n] * w_full, w_batch, min(lam * Tk / k, 1.0), k

    def eval(self, lam: float) -> RoleEval:
        if lam >= self.lam_max:
            return RoleEval(False, "throughput", lam, utilization=1.0)
        wait, mean_wait, rho, k = self.wait_samples(lam)
        service = self.s1 + (self.T(k) - self.T(1))  # batch-mates' work delays each prompt
        ttft = wait + service + self.transfer_s
        p = Pcts.of(ttft)
        ok = p.at(self.d.q) <= self.d.ttft_slo_s * 1e3
        return RoleEval(ok, "" if ok else "ttft", lam, ttft_ms=p, utilization=rho, batch_mean=k, extra={"mean_wait_ms": mean_wait * 1e3})


class DecodeModel:
    """Decode replica with continuous batching (see module docstring)."""

    def __init__(self, rep: Replica, d: Demand, max_batch: int = MAX_DECODE_BATCH):
        self.rep, self.d = rep, d
        self.c = d.mean_context
        self.steps = float(d.decode_steps.mean())
        self.kv_cap = rep.kv_capacity_tokens
        per_seq = d.mean_final_context
        kv_batch = int(self.kv_cap // max(per_seq, 1))
        self.max_batch = min(max_batch, kv_batch)
        # Which limit caps the running batch: KV memory, or the engine's max running sequences.
        self.batch_limit = "memory" if kv_batch <= max_batch else "max batch"

    def t(self, b: float) -> float:
        return self.rep.decode_step_s(max(b, 1.0), self.c)

    def t_many(self, n) -> np.ndarray:
        """t over an array of batch sizes (s): the step at batch max(n, 1)."""
        return np.asarray(self.rep.decode_step_s(np.maximum(np.asarray(n, dtype=float), 1.0), self.c), dtype=float)

    def upper_bound(self) -> float:
        """Little's law at the largest batch: lam <= max_batch / (E[steps] t(1 + max_batch)) (req/s)."""
        if self.max_batch < 1 or self.steps <= 0:
            return 0.0
        return self.max_batch / (self.steps * self.t(1 + self.max_batch))

    def overload(self, lam: float, slowdown: float = 1.0) -> str:
        """Why no fixed point: "throughput" if even a full batch cannot keep up with lam, else the
        batch limit (memory or max running sequences) stops the batch from growing enough."""
        m = self.max_batch
        return "throughput" if lam * self.steps * self.t(m) / slowdown > m else self.batch_limit

    def running(self, lam: float) -> float | None:
        """Mean running batch b (time average) solving b = lam * E[steps] * t(1 + b): a request
        shares its steps with the others running, Poisson(b) of them (M/G/inf seen on arrival),
        so its mean step is t(1 + b). None if no fixed point."""
        b = lam * self.steps * self.t(1)
        for _ in range(200):
            b_new = lam * self.steps * self.t(1 + b)
            if b_new > 4 * self.max_batch + 10:
                return None
            if abs(b_new - b) < 1e-3 * max(b, 1):
                return b_new
            b = b_new
        return self._first_root(lam)

    def _first_root(self, lam: float) -> float | None:
        """The smallest b with lam E[steps] t(1 + b) = b, found by a scan and bisection: where a
        measured step curve falls with the batch (a CPU's batch 16 faster than its batch 12) as
        fast as the batch grows, the plain iteration jumps between the two sides for ever. The
        batch grows from 0 until it first keeps up, so the first crossing is where it runs."""
        hi = 4 * self.max_batch + 10
        grid = np.linspace(0.0, hi, 4 * int(hi) + 1)
        g = lam * self.steps * self.t_many(1 + grid) - grid
        down = np.flatnonzero(g <= 0)
        if not len(down):
            return None
        if down[0] == 0:
            return 0.0
        lo, hi = float(grid[down[0] - 1]), float(grid[down[0]])
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if lam * self.steps * self.t(1 + mid) > mid:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    def eval(self, lam: float) -> RoleEval:
        if self.max_batch < 1:
            return RoleEval(False, "memory", lam)
        b = self.running(lam)
        if b is None:
            return RoleEval(False, self.overload(lam), lam, utilization=1.0)
        qs = poisson_quantiles(b)
        # TPOT at percentile q: the step with itself plus the q-quantile of the others (p50: the mean).
        # A measured step curve need not rise with the batch (a CPU profile: batch 2 slower than
        # 4), so the batch's quantiles need not be the step's: keep the percentiles ordered.
        p50 = self.t(1 + b) * 1e3
        p90 = max(p50, self.t(1 + qs[1]) * 1e3)
        tp = Pcts(p50, p90, max(p90, self.t(1 + qs[2]) * 1e3))
        bq = max(qs[2], 1)  # the p99 batch must fit: else requests queue for a slot and TTFT tails grow
        # Share of peak bandwidth the step's reads use; at most 1 (measured step times on a device
        # whose measured ceiling undershoots what the engine reaches would read above it).
        util = min(1.0, (self.rep.decode_weight_bytes(b) + b * self.c * self.rep.kv_bytes_per_token) / self.t(b)
                   / (self.rep.tp * self.rep.gpu.mem_bw_bytes_s))
        # Per step, TPOT's percentiles here are already every gap's (ITL's): one Pcts for both.
        if bq > self.max_batch:
            return RoleEval(False, self.batch_limit, lam, tpot_ms=tp, utilization=util, batch_mean=b, itl_ms=tp)
        ok_p = tp.at(self.d.q) <= self.d.tpot_slo_s * 1e3
        ok_i = self.d.itl_slo_s is None or tp.at(self.d.q) <= self.d.itl_slo_s * 1e3
        return RoleEval(ok_p and ok_i, "" if ok_p and ok_i else ("tpot" if not ok_p else "itl"), lam, tpot_ms=tp, utilization=util,
                        batch_mean=b, itl_ms=tp)


class ColocatedModel:
    """A replica doing both phases: unchunked (a prefill batch stalls every running decode) or with
    chunked prefill (prompt chunks of up to C tokens ride along in decode steps).

    Both cases are "decode steps of t_d, interrupted by stalls": unchunked, a batch of k prompts
    every k/lam s stalls decode for T(k); chunked, a mixed step of time t_m replaces a decode step
    m times a second (fewer and fuller ones as prompts queue: stalls()).
    The decode progress rate solves Little's law as for a decode replica; a request's TPOT is t_d
    plus the stalls that land in its prefill and decode life (a compound Poisson whose spread is a
    busy period's: samples.stall_samples) spread over its tokens. TTFT: half a step in flight,
    then an M/G/1 queue of prompts (unchunked: the prefill model; chunked: each prompt's chunk
    steps)."""

    def __init__(self, rep: Replica, d: Demand, chunk_tokens: int | None = None, max_batch: int = MAX_DECODE_BATCH):
        self.rep, self.d, self.chunk = rep, d, chunk_tokens
        self.pre = PrefillModel(rep, d)
        self.dec = DecodeModel(rep, d, max_batch)
        self._steps = np.maximum(d.decode_steps, 1)

    def upper_bound(self) -> float:
        """Neither phase alone may exceed its own bound (req/s)."""
        d = self.dec.upper_bound()
        return min(self.pre.lam_max, d) if d > 0 else self.pre.lam_max

    def stalls(self, lam: float, b: float) -> tuple[float, float, float]:
        """(stalls per s, extra seconds per stall, time share of stalls) at running batch b."""
        if self.chunk:
            # Prompt tokens per mixed step, P: what waits at its start, up to the budget the decodes
            # leave (cap). A lone prompt is its chunks, p1 tokens each on average. Under load a step
            # also takes what arrived during the one before, given that anything did (else the next
            # step is a plain decode step): a Poisson count over t_m conditioned on > 0, lam E[L] t_m
            # / (1 - e^-(lam t_m)) tokens, E[L] at light load; so P = p1 + that - E[L]. Unconditioned
            # (max(p1, lam E[L] t_m)) the closed forms' chunked TPOT p50 sat 25% under the
            # simulator's at 80% load (tests/test_model_vs_sim.py): fewer, fuller mixed steps.
            t_d, bb = self.dec.t(b), max(b, 1.0)
            cap = max(float(self.chunk) - b, 1.0)
            L = self.d.mean_prompt
            q, w = self.d.prompt_quantiles  # stalls() runs at each step of the batch fixed point
            p1 = L if q[-1] <= cap else float(w @ q) / float(w @ np.ceil(q / cap))  # mean chunk of a lone prompt
            P = min(cap, p1)
            for _ in range(30):
                t_m = float(self.rep.decode_step_s(bb, self.dec.c, P))
                x = lam * t_m
                waiting = lam * L * t_m / -expm1(-x) if x > 1e-9 else L
                P_new = min(cap, max(p1, waiting - (L - p1)))
                if abs(P_new - P) < max(0.5, 0.01 * P):  # 1% of a step's tokens: under 1% of its time
                    break
                P = P_new
            t_m = float(self.rep.decode_step_s(bb, self.dec.c, P))
            m = lam * L / P
            return m, t_m - t_d, m * (t_m - t_d)
        k = self.pre.batch(lam)
        Tk = self.pre.T(k)
        return lam / k, Tk, lam * Tk / k

    def stall_events(self, lam: float, rate: float, stall: float, share: float) -> tuple:
        """(events per s, mean size (s), size spread (s), stall_table of the sizes' shape, the
        prompt lengths' for both): what stalls a running decode, from stalls() at its batch.
        Unchunked: prefill batches, each the batch time with one prompt's spread. Chunked: prompts,
        each its tokens' share of the mixed steps' extra time: one prompt's chunks come in
        consecutive steps, one event, not independent ones (as independent chunk steps the chunked
        TPOT p99 sat 26% under the simulator's, benchmarks/model_vs_sim.py)."""
        if self.chunk:
            per_prompt = share / max(lam, 1e-12)
            return lam, per_prompt, per_prompt * self._prompt_cv, self.d.prompt_stall_table
        return rate, stall, self._prefill_sd, self.d.prompt_stall_table

    @cached_property
    def _prefill_sd(self) -> float:
        """Spread of one prompt's prefill time alone (s): the size spread of unchunked stalls."""
        return float(np.std(self.pre.s1))

    @cached_property
    def _prompt_cv(self) -> float:
        return float(np.std(self.d.prompt) / max(self.d.mean_prompt, 1e-12))

    def own_prefill_s(self, lam: float, b: float) -> np.ndarray:
        """Each sample's own prefill time (s): its chunk steps, or its prefill batch. Prompts that
        arrive meanwhile are prefilled in the steps after it, i.e. during its decode: the window in
        which arrivals stall a request is its prefill plus its decode life."""
        if self.chunk:
            c, bb = self.dec.c, max(b, 1.0)
            P = max(float(self.chunk) - b, 1.0)
            n = np.ceil(self.d.prompt / P)
            return (n - 1) * float(self.rep.decode_step_s(bb, c, P)) + np.asarray(self.rep.decode_step_s(bb, c, self.d.prompt - (n - 1) * P))
        k = self.pre.batch(lam)
        return self.pre.s1 + (self.pre.T(k) - self.pre.T(1))

    def chunked_ttft(self, lam: float, b: float, t_d: float, stall: float) -> tuple[np.ndarray, np.ndarray] | None:
        """(TTFT samples, each prompt's own chunk steps) with chunked prefill (s), None past
        saturation; `stall` (s): a mixed step's time beyond a decode step (stalls()). Each step
        spends its budget left after the b decodes, P = C - b tokens, on prompt chunks FCFS across prompts (a short
        prompt's last chunk shares its step with the next prompt). So the queue drains prompt
        tokens at P per full step t_m(P): the wait is M/G/1 on that fluid work, S = L t_m(P) / P,
        and a prompt's own time is its chunk steps, (ceil(L / P) - 1) t_m(P) + t_m(last chunk).
        A prompt arriving mid-step waits half a decode step first (half a full step when busy).
        Before: an M/G/1 of whole chunk steps per prompt, 49% over the simulator at p50."""
        P = max(float(self.chunk) - b, 1.0)
        t_full = float(self.rep.decode_step_s(max(b, 1.0), self.dec.c, P))
        own = self.own_prefill_s(lam, b)
        work = self.d.prompt * (t_full / P)
        rho = lam * float(work.mean())
        if rho >= 1:
            return None
        # Busy (probability rho), a prompt also waits out the mixed step in progress, not a decode
        # step: one holding the prompt tokens a step carries at this load (stalls(): a prompt's chunk
        # when they are few, up to the whole budget once they pile up), `stall` s beyond a decode step.
        # A full budget's step here (t_full) put a 7 s step in flight behind every light-load prompt
        # of a CPU vLLM pilot: TTFT p90 predicted 6.6 s, measured 1.9 s.
        mean_wait = lam * float((work**2).mean()) / (2 * (1 - rho)) + rho * stall / 2
        wait = _wait_samples(rho, mean_wait, len(work))
        return wait + own + t_d / 2, own

    def itl_pcts(self, b: float, rate: float, stall: float, share: float) -> Pcts:
        """ITL percentiles (ms) beside Poisson(b) others, with stalls of `stall` s at `rate` /s
        taking `share` of the time (stalls())."""
        return Pcts.of(itl_samples(self.dec.t_many, b, self._steps, rate, stall, share))

    def itl_at(self, lam: float) -> Pcts | None:
        """ITL percentiles (ms) at `lam` whether or not an ITL target made eval compute them; None
        when overloaded."""
        e = self.eval(lam)
        if e.itl_ms is not None or e.tpot_ms is None:
            return e.itl_ms
        return self.itl_pcts(e.batch_mean, *self.stalls(lam, e.batch_mean))

    def eval(self, lam: float) -> RoleEval:
        dec, d = self.dec, self.d
        if dec.max_batch < 1:
            return RoleEval(False, "memory", lam)
        if lam >= self.pre.lam_max:
            return RoleEval(False, "throughput", lam, utilization=1.0)
        b = lam * dec.steps * dec.t(1)
        for _ in range(200):
            rate, stall, share = self.stalls(lam, b)
            if share >= 0.98:
                return RoleEval(False, "throughput", lam, utilization=1.0)
            b_new = lam * dec.steps * dec.t(1 + b) / (1 - share)
            if b_new > 4 * dec.max_batch + 10:
                return RoleEval(False, dec.overload(lam, 1 - share), lam, utilization=1.0)
            done = abs(b_new - b) < 2e-3 * max(b, 1)
            b = b_new
            if done:
                break
        rate, stall, share = self.stalls(lam, b)
        bq = poisson_quantiles(b, (99,))[0]
        if max(bq, 1) > dec.max_batch:
            return RoleEval(False, dec.batch_limit, lam, batch_mean=b)
        t_d = dec.t(1 + b)
        if self.chunk:
            got = self.chunked_ttft(lam, b, t_d, stall)
            if got is None:
                return RoleEval(False, "throughput", lam, utilization=1.0)
            ttft, own = got
        else:
            wait, _, rho, k = self.pre.wait_samples(lam)
            own = self.own_prefill_s(lam, b)
            ttft = wait + own + t_d / 2
        steps = self._steps
        life = steps * t_d / (1 - share)
        rng = _seeded_rng(2)
        # arrivals during its prefill stall its first steps: the window is its prefill and decode life
        stall_sum = stall_samples(rng, *self.stall_events(lam, rate, stall, share), life + own, share)
        # The running batch a request lives with fluctuates around b (Poisson, as for decode).
        b_i = 1 + rng.poisson(b, len(steps))
        t_i = np.asarray(self.rep.decode_step_s(b_i.astype(float), dec.c))
        tpot_p = Pcts.of(t_i + stall_sum / steps)
        ttft_p = Pcts.of(ttft)
        ok_t = ttft_p.at(d.q) <= d.ttft_slo_s * 1e3
        ok_p = tpot_p.at(d.q) <= d.tpot_slo_s * 1e3
        itl_p = self.itl_pcts(b, rate, stall, share) if d.itl_slo_s is not None else None  # ~30 us: only when a target needs it
        ok_i = itl_p is None or itl_p.at(d.q) <= d.itl_slo_s * 1e3
        binding = "" if ok_t and ok_p and ok_i else ("tpot" if not ok_p else "ttft" if not ok_t else "itl")
        mode = f"chunked {self.chunk}" if self.chunk else "unchunked"
        return RoleEval(ok_t and ok_p and ok_i, binding, lam, ttft_p, tpot_p, utilization=min(1.0, share + (1 - share) * min(b, 1.0)),
                        batch_mean=b, extra={"mode": mode}, itl_ms=itl_p)


def capacity(model, lam_hi: float | None = None, rel_tol: float = 0.01) -> tuple[float, RoleEval, str]:
    """Largest per-replica rate (req/s) at which `model.eval` is feasible, by bisection.

    Returns (capacity_rps, the evaluation at capacity, the binding constraint just above it).
    Feasibility is monotone in the rate: more load never lowers a latency percentile here. The
    search starts from the model's throughput bound (`upper_bound()`), which the SLOs only lower,
    so a handful of evaluations suffice.
    """
    probe = model.eval(1e-6)
    if not probe.feasible:
        return 0.0, probe, probe.binding
    bound = getattr(model, "upper_bound", None)
    hi = lam_hi or (bound() if bound else 0.0) or 1.0
    lo, best = 0.0, probe
    e = model.eval(hi)
    for _ in range(60):  # the bound was not binding (or no bound): grow until infeasible
        if not e.feasible:
            break
        lo, best, hi = hi, e, hi * 2
        e = model.eval(hi)
    else:
        return lo, best, ""
    binding = e.binding
    while lo == 0.0 and hi > 1e-6:  # halve until something is feasible
        mid = hi / 2
        e = model.eval(mid)
        if e.feasible:
            lo, best = mid, e
        else:
            hi, binding = mid, e.binding
    while lo > 0 and hi - lo > rel_tol * lo:
        mid = (lo + hi) / 2
        e = model.eval(mid)
        if e.feasible:
            lo, best = mid, e
        else:
            hi, binding = mid, e.binding
    return lo, best, binding


def mmc_wait_erlang_c(lam: float, mu: float, c: int) -> float:
    """Mean wait in M/M/c (s), by Erlang C: P_wait / (c mu - lam)."""
    a = lam / mu
    rho = a / c
    if rho >= 1:
        return float("inf")
    terms = sum(a**k / factorial(k) for k in range(c))
    top = a**c / factorial(c) / (1 - rho)
    p_wait = top / (terms + top)
    return p_wait / (c * mu - lam)


def md1_wait(lam: float, d: float) -> float:
    """Mean wait in M/D/1 (s): rho * D / (2 (1 - rho)) (Pollaczek-Khinchine with zero variance)."""
    rho = lam * d
    return rho * d / (2 * (1 - rho)) if rho < 1 else float("inf")


def mg1_wait(lam: float, es: float, es2: float) -> float:
    """Mean wait in M/G/1 (s): lam E[S^2] / (2 (1 - rho)) (Pollaczek-Khinchine)."""
    rho = lam * es
    return lam * es2 / (2 * (1 - rho)) if rho < 1 else float("inf")
