"""The pilot's load generator: replay a workload against an OpenAI-compatible server, open loop.

Why a module of its own: a validation is only as honest as its client. This one

* sends requests at their scheduled times whether or not earlier ones have finished (open loop:
  a closed-loop client would slow down exactly when the server does and hide the queueing the
  model predicts), with no cap on connections;
* sends prompts as token ids (`"prompt": [ids]`), so the prompt length is exact for any tokenizer,
  and asks for exactly the drawn output length (`max_tokens` = `min_tokens` = n, `ignore_eos`);
* times every streamed event (one per token on this project's runtime, whose `return_token_ids`
  extension also says how many tokens an event carries), so TTFT, each inter-token gap and the
  per-request TPOT = (last token - first token) / (tokens - 1) come from the client's own clock;
* accounts for every request it sends: each ends as completed or failed (HTTP error, error event,
  stream cut, timeout, interrupted), so `lost = sent - completed - failed` is 0 by construction,
  and a test checks it.

Schedules: `poisson_schedule` draws arrival gaps from the workload's renewal process (Poisson at
cv^2 = 1) at the pilot's rate; `trace_schedule` replays a trace's own timestamps, scaled to it.
Server metrics (`scrape_metrics`) are parsed by planner.measure.prometheus. No torch here.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import numpy as np

from planner.errors import BadInput
from planner.measure import client

#: Token ids used for prompts: below every real vocabulary's size and above the control ids.
PROMPT_ID_RANGE = (100, 1000)
#: Warm-up requests use indices -1, -2, ...; shifted into the seeds' non-negative range.
WARMUP_INDEX_BASE = 1 << 20


@dataclass(frozen=True)
class ReplayRequest:
    """One request of a schedule: arrives `at_s` seconds after the start, with these lengths (tokens)."""

    index: int
    at_s: float
    prompt_tokens: int
    output_tokens: int


@dataclass
class RequestRecord:
    """What happened to one request. Times in seconds: `sent_s` since the replay started, the rest
    since it was sent. `gaps_s`: time between consecutive token-carrying events."""

    index: int
    at_s: float
    prompt_tokens: int
    max_tokens: int
    sent_s: float = 0.0
    ttft_s: float | None = None
    gaps_s: list = field(default_factory=list)
    e2e_s: float | None = None
    output_tokens: int = 0
    status: int | None = None
    error: str | None = None
    done: bool = False

    @property
    def ok(self) -> bool:
        return self.done and self.error is None

    @property
    def tpot_s(self) -> float | None:
        """(last token - first token) / (output tokens - 1) (s per token); None below 2 tokens."""
        if not self.ok or self.output_tokens < 2 or self.ttft_s is None or self.e2e_s is None:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)

    def to_dict(self) -> dict:
        r = lambda x: None if x is None else round(x, 6)  # noqa: E731
        return {"index": self.index, "at_s": r(self.at_s), "sent_s": r(self.sent_s), "prompt_tokens": self.prompt_tokens,
                "max_tokens": self.max_tokens, "output_tokens": self.output_tokens, "ttft_s": r(self.ttft_s),
                "tpot_s": r(self.tpot_s), "e2e_s": r(self.e2e_s), "status": self.status, "error": self.error}


@dataclass
class ReplayState:
    """Every request sent so far, by index. Mutated by `replay`; readable after an interruption."""

    records: dict = field(default_factory=dict)
    t0: float = 0.0  # perf_counter at the start of the replay
    finished_at_s: float = 0.0  # since t0: when the last request ended
    interrupted: bool = False

    @property
    def sent(self) -> int:
        return len(self.records)

    @property
    def completed(self) -> int:
        return sum(1 for r in self.records.values() if r.ok)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records.values() if r.done and r.error is not None)

    @property
    def lost(self) -> int:
        """Requests sent that ended neither completed nor failed: must be 0."""
        return self.sent - self.completed - self.failed

    def counts(self) -> dict:
        return {"sent": self.sent, "completed": self.completed, "failed": self.failed, "lost": self.lost}

    def errors(self, top: int = 5) -> list[tuple[str, int]]:
        """The most frequent error messages with their counts."""
        seen: dict[str, int] = {}
        for r in self.records.values():
            if r.error:
                seen[r.error] = seen.get(r.error, 0) + 1
        return sorted(seen.items(), key=lambda kv: -kv[1])[:top]


# ---- schedules --------------------------------------------------------------------------------
def _clip_lengths(prompt: np.ndarray, output: np.ndarray, max_len: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Lengths >= 1 token; where prompt + output exceeds the server's context `max_len`, the
    output is kept (up to max_len - 1) and the prompt shortened to fit."""
    prompt, output = np.maximum(prompt.astype(np.int64), 1), np.maximum(output.astype(np.int64), 1)
    if max_len:
        output = np.minimum(output, max_len - 1)
        prompt = np.minimum(prompt, max_len - output)
    return prompt, output


def poisson_schedule(workload, rate_rps: float, n: int | None = None, duration_s: float | None = None,
                     seed: int = 0, max_len: int | None = None) -> list[ReplayRequest]:
    """Arrivals of the workload's renewal process (cv^2 = workload.arrival_cv2; 1 is Poisson) at
    `rate_rps`, lengths drawn from its distributions, for `n` requests or until `duration_s`."""
    if not (rate_rps > 0 and math.isfinite(rate_rps)):
        raise BadInput(f"pilot rate must be > 0 req/s, got {rate_rps}")
    if n is None:
        if not duration_s or duration_s <= 0:
            raise BadInput("give --requests N or --duration SECONDS (> 0)")
        n = int(rate_rps * duration_s * 1.5 + 20)  # enough draws to cover the window, trimmed below
    rng = np.random.default_rng(seed)
    w = workload.with_rate(rate_rps) if abs(workload.rate_rps - rate_rps) > 1e-12 else workload
    at = w.arrival_times_s(rng, n)
    prompt, output = _clip_lengths(w.input.sample(rng, n), w.output.sample(rng, n), max_len)
    reqs = [ReplayRequest(i, float(at[i]), int(prompt[i]), int(output[i])) for i in range(n)]
    if duration_s:
        reqs = [r for r in reqs if r.at_s < duration_s] or reqs[:1]
    return reqs


def trace_schedule(workload, rate_rps: float, n: int | None = None, duration_s: float | None = None,
                   max_len: int | None = None) -> list[ReplayRequest]:
    """A timed trace replayed in order, its gaps scaled so the trace's sizing rate becomes
    `rate_rps` (request i keeps its own lengths)."""
    ts = workload.timestamps_s
    if ts is None:
        raise BadInput("the workload has no arrival timestamps to replay (use a timed --trace)")
    f = rate_rps / workload.rate_rps
    at = np.asarray(ts, dtype=float) / f
    prompt, output = _clip_lengths(np.asarray(workload.input.values), np.asarray(workload.output.values), max_len)
    k = len(at) if n is None else min(n, len(at))
    reqs = [ReplayRequest(i, float(at[i] - at[0]), int(prompt[i]), int(output[i])) for i in range(k)]
    if duration_s:
        reqs = [r for r in reqs if r.at_s < duration_s] or reqs[:1]
    return reqs


def prompt_ids(index: int, n: int, seed: int = 0, salt: int = 0) -> list[int]:
    """n token ids for request `index`: random (so no prefix cache shares work between requests)
    and deterministic for one (seed, salt): the same schedule sends the same prompts. A per-run
    `salt` keeps a server's prefix cache from serving one pilot's prompts to the next."""
    rng = np.random.default_rng([seed, index + WARMUP_INDEX_BASE, salt])
    return rng.integers(*PROMPT_ID_RANGE, size=n).tolist()


# ---- one request ------------------------------------------------------------------------------
def request_body(model: str | None, ids: list[int], max_tokens: int, extras: bool = True) -> dict:
    """The streamed /v1/completions body (planner.measure.client.request_body): prompt as token
    ids, greedy; `extras` asks for exactly max_tokens (ignore_eos, min_tokens), the usage block
    and per-chunk token ids."""
    return client.request_body(model, ids, max_tokens, extras=extras)


async def send_one(session, url: str, body: dict, rec: RequestRecord, timeout_s: float) -> None:
    """Stream one completion into `rec` (planner.measure.client.stream: tokens counted by the
    ids each chunk carries, else the usage block). Never raises for the server's faults: they
    become `rec.error`. Cancellation (Ctrl-C) is recorded as an error too, then re-raised."""
    r = client.StreamResult()

    def live(r: client.StreamResult) -> None:  # the contention probe watches tokens arrive
        t = r.event_times_s
        if rec.ttft_s is None:
            rec.ttft_s = t[0] - r.sent_s
        rec.gaps_s += [t[j] - t[j - 1] for j in range(len(rec.gaps_s) + 1, len(t))]
        rec.e2e_s = t[-1] - r.sent_s

    try:
        await client.stream(session, url + "/v1/completions", body, timeout_s=timeout_s, result=r, on_tokens=live)
    finally:
        rec.status, rec.error = r.status, r.error
        rec.ttft_s, rec.e2e_s, rec.gaps_s = r.ttft_s, r.e2e_s, r.gaps_s
        rec.output_tokens = r.output_tokens
        rec.done = True


# ---- the replay -------------------------------------------------------------------------------
async def replay(url: str, model: str | None, schedule: list[ReplayRequest], state: ReplayState,
                 timeout_s: float = 60.0, extras: bool = True, seed: int = 0, on_event=None, salt: int = 0) -> ReplayState:
    """Send every request of `schedule` at its time (open loop) and wait for all of them.

    `on_event(kind, record)` is called with "sent" and "done" (a progress bar). On cancellation
    every in-flight request is recorded as failed ("interrupted") before this returns the state
    through the exception: `state` holds what was measured."""
    import aiohttp

    base = url.rstrip("/")
    tasks: list[asyncio.Task] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False)) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        state.t0 = time.perf_counter()

        async def one(req: ReplayRequest) -> None:
            rec = state.records[req.index]
            try:
                await send_one(session, base, request_body(model, prompt_ids(req.index, req.prompt_tokens, seed, salt),
                                                           req.output_tokens, extras), rec, timeout_s)
            finally:
                state.finished_at_s = max(state.finished_at_s, time.perf_counter() - state.t0)
                if on_event:
                    on_event("done", rec)

        try:
            for req in sorted(schedule, key=lambda r: r.at_s):
                delay = start + req.at_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                state.records[req.index] = RequestRecord(req.index, req.at_s, req.prompt_tokens, req.output_tokens,
                                                         sent_s=time.perf_counter() - state.t0)
                tasks.append(asyncio.create_task(one(req)))
                if on_event:
                    on_event("sent", state.records[req.index])
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            state.interrupted = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    return state


async def warm_up(url: str, model: str | None, n: int = 2, prompt_tokens: int = 16, output_tokens: int = 4,
                  timeout_s: float = 60.0) -> tuple[bool, str | None]:
    """A few short requests so that the measured run does not pay for first-call costs. Returns
    (whether the server accepts the extra fields, the last error or None). A 400 on the extras
    (a strict server) is retried without them."""
    import aiohttp

    base = url.rstrip("/")
    extras, err = True, None
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            rec = RequestRecord(-1 - i, 0.0, prompt_tokens, output_tokens)
            await send_one(session, base, request_body(model, prompt_ids(-1 - i, prompt_tokens), output_tokens, extras), rec, timeout_s)
            if rec.status in (400, 422) and extras:
                extras = False
                rec = RequestRecord(-1 - i, 0.0, prompt_tokens, output_tokens)
                await send_one(session, base, request_body(model, prompt_ids(-1 - i, prompt_tokens), output_tokens, extras), rec, timeout_s)
            err = rec.error
    return extras, err


async def scrape_metrics(url: str, timeout_s: float = 10.0):
    """The server's /metrics parsed (planner.measure.prometheus.Scrape), or None without them."""
    import aiohttp

    from planner.measure import prometheus

    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url.rstrip("/") + "/metrics", timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                if r.status != 200:
                    return None
                return prometheus.parse(await r.text())
    except (aiohttp.ClientError, asyncio.TimeoutError, UnicodeDecodeError, OSError):
        return None


# ---- summaries --------------------------------------------------------------------------------
def percentiles_ms(values_s, qs=(50, 90, 99)) -> dict:
    """{"p50": ms, ...} by linear interpolation (numpy's default); None entries when empty."""
    v = np.asarray([x for x in values_s if x is not None], dtype=float)
    if v.size == 0:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": float(np.percentile(v, q)) * 1e3 for q in qs}


def summarize(state: ReplayState) -> dict:
    """Client-side measurements of the completed requests: TTFT, TPOT (per request), inter-token
    gaps (ms), end-to-end (s), throughput over the makespan (first send to last completion)."""
    ok = [r for r in state.records.values() if r.ok]
    span = max((r.sent_s + (r.e2e_s or 0.0) for r in ok), default=0.0) - min((r.sent_s for r in state.records.values()), default=0.0)
    out_tokens = sum(r.output_tokens for r in ok)
    gaps = [g for r in ok for g in r.gaps_s]
    late = [r.sent_s - r.at_s for r in state.records.values()]
    return {
        "ttft_ms": percentiles_ms([r.ttft_s for r in ok]),
        "tpot_ms": percentiles_ms([r.tpot_s for r in ok]),
        "itl_ms": percentiles_ms(gaps),
        "ttft_ms_mean": float(np.mean([r.ttft_s for r in ok])) * 1e3 if ok else None,
        "tpot_ms_mean": float(np.mean([r.tpot_s for r in ok if r.tpot_s is not None])) * 1e3 if any(r.tpot_s for r in ok) else None,
        "e2e_s_mean": float(np.mean([r.e2e_s for r in ok])) if ok else None,
        "makespan_s": span,
        "throughput_rps": len(ok) / span if span > 0 else None,
        "output_tokens_per_s": out_tokens / span if span > 0 else None,
        "output_tokens": out_tokens,
        "send_lateness_ms_max": max(late) * 1e3 if late else None,
    }
