"""How much slower a pilot's workers run beside each other: a short probe of the started pilot.

On a GPU cluster each worker owns its device. A CPU pilot's workers share a few cores, their
memory bandwidth, and the ZeroMQ, router and client threads that move KV and tokens between
them, so a prefill next to a busy decode worker runs slower than the same prefill profiled
alone (on this project's 2-core test machine: ~20% slower, although the two model processes
alone slow each other by only 2-8%; the rest is the serving stack's own threads competing for
the cores). The in-process profile cannot see that; this probe measures it through the pilot's
own API before the replay, with no traffic of the replay's, and the prediction scales step
times by it (planner.pilot.validate.pilot_replica):

    prefill time x (1 + kappa_p * u_decode)      decode step x (1 + kappa_d * u_prefill)
    colocated: every time x (1 + kappa_c * u_other worker)

where u are the predicted busy shares. The kappas are slowdowns at a fully busy neighbour
(ratios within one probe, so a profile measured on another day does not leak into them):

* disaggregated: kappa_p = TTFT of sequential prompts beside `streams` decoding streams / TTFT
  alone - 1; kappa_d = (inter-token gap of those streams while the prompts run / the gap before
  them - 1) / the share of that window a prefill ran.
* colocated (2+ workers): kappa_c = the gap of two streams (one per worker: the router sends a
  new request to the least-loaded worker) / the gap of one stream alone - 1.

Times in seconds; kappas are shares (0.2 = 20% slower).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from planner.pilot import replay as rp


@dataclass(frozen=True)
class Contention:
    """Slowdowns at a fully busy neighbour (shares), and what they were measured from."""

    prefill: float = 0.0  # kappa_p: a prefill beside a busy decode worker (disaggregated)
    decode: float = 0.0  # kappa_d: a decode step beside a busy prefill worker (disaggregated)
    colocated: float = 0.0  # kappa_c: a colocated worker beside another busy one
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        r = lambda x: round(float(x), 4)  # noqa: E731
        return {"prefill": r(self.prefill), "decode": r(self.decode), "colocated": r(self.colocated), **self.detail}


class _Stream:
    """A background request whose token arrival times (perf_counter s) are kept."""

    def __init__(self, session, url, model, index, prompt_tokens, max_tokens, extras, timeout_s):
        self.rec = rp.RequestRecord(index, 0.0, prompt_tokens, max_tokens)
        body = rp.request_body(model, rp.prompt_ids(index, prompt_tokens), max_tokens, extras)
        self.t_send = time.perf_counter()
        self.task = asyncio.ensure_future(rp.send_one(session, url, body, self.rec, timeout_s))

    def arrivals(self) -> np.ndarray:
        if self.rec.ttft_s is None:
            return np.zeros(0)
        return self.t_send + self.rec.ttft_s + np.concatenate([[0.0], np.cumsum(self.rec.gaps_s)])

    def tokens(self) -> int:
        return 0 if self.rec.ttft_s is None else 1 + len(self.rec.gaps_s)


def _gaps_in(streams, t0: float, t1: float) -> np.ndarray:
    """Every stream's inter-token gaps that ended inside [t0, t1] (s)."""
    out = []
    for s in streams:
        a = s.arrivals()
        if len(a) > 1:
            g, end = np.diff(a), a[1:]
            out.append(g[(end >= t0) & (end <= t1)])
    return np.concatenate(out) if out else np.zeros(0)


async def _sequential(session, url, model, n, prompt_tokens, extras, timeout_s, base_index) -> list[float]:
    """TTFTs (s) of n prompts sent one after another, each with 2 output tokens (so a
    disaggregated pilot moves its KV, as the replay's requests do)."""
    out = []
    for i in range(n):
        rec = rp.RequestRecord(base_index - i, 0.0, prompt_tokens, 2)
        await rp.send_one(session, url, rp.request_body(model, rp.prompt_ids(base_index - i, prompt_tokens), 2, extras), rec, timeout_s)
        if rec.error or rec.ttft_s is None:
            raise RuntimeError(f"probe request failed: {rec.error}")
        out.append(rec.ttft_s)
    return out


async def _until(pred, limit_s: float) -> bool:
    t0 = time.perf_counter()
    while not pred():
        if time.perf_counter() - t0 > limit_s:
            return False
        await asyncio.sleep(0.01)
    return True


async def _stop(streams, *windows) -> None:
    """Cancel the background streams; raise if a window caught too few gaps to compare."""
    for s in streams:
        s.task.cancel()
    await asyncio.gather(*(s.task for s in streams), return_exceptions=True)
    if any(len(w) < 5 for w in windows):
        raise RuntimeError("probe streams ended before their windows (outputs too short)")


async def _probe(url: str, model: str | None, mode: str, prompt_tokens: int, streams: int, stream_tokens: int,
                 n: int, window_s: float, extras: bool, timeout_s: float) -> Contention:
    import aiohttp

    base = url.rstrip("/")
    async with aiohttp.ClientSession() as session:
        if mode == "colocated":
            one = [_Stream(session, base, model, -9000, 16, stream_tokens, extras, timeout_s)]
            await _until(lambda: one[0].tokens() >= 3, timeout_s)
            t0 = time.perf_counter()
            await asyncio.sleep(window_s)
            g1 = _gaps_in(one, t0, time.perf_counter())
            two = one + [_Stream(session, base, model, -9001, 16, stream_tokens, extras, timeout_s)]
            await _until(lambda: two[1].tokens() >= 3, timeout_s)
            t0 = time.perf_counter()
            await asyncio.sleep(window_s)
            g2 = _gaps_in(two, t0, time.perf_counter())
            await _stop(two, g1, g2)
            k = max(0.0, float(np.median(g2) / np.median(g1)) - 1.0)
            return Contention(colocated=k, detail={"gap_one_stream_ms": round(float(np.median(g1)) * 1e3, 3),
                                                   "gap_two_streams_ms": round(float(np.median(g2)) * 1e3, 3)})
        alone = await _sequential(session, base, model, n, prompt_tokens, extras, timeout_s, -9100)
        bg = [_Stream(session, base, model, -9200 - i, 16, stream_tokens, extras, timeout_s) for i in range(streams)]
        await _until(lambda: all(s.tokens() >= 3 for s in bg), timeout_s)
        t0 = time.perf_counter()
        await asyncio.sleep(window_s)
        t1 = time.perf_counter()
        busy = await _sequential(session, base, model, n, prompt_tokens, extras, timeout_s, -9300)
        t2 = time.perf_counter()
        quiet, during = _gaps_in(bg, t0, t1), _gaps_in(bg, t1, t2)
        await _stop(bg, quiet, during)
        kp = max(0.0, float(np.median(busy) / np.median(alone)) - 1.0)
        share = min(1.0, float(np.sum(busy)) / max(t2 - t1, 1e-9))  # the window's share with a prompt in flight
        kd = max(0.0, (float(np.mean(during) / np.mean(quiet)) - 1.0) / max(share, 0.1))
        return Contention(prefill=kp, decode=kd, detail={
            "ttft_alone_ms": round(float(np.median(alone)) * 1e3, 3), "ttft_beside_decode_ms": round(float(np.median(busy)) * 1e3, 3),
            "gap_quiet_ms": round(float(np.mean(quiet)) * 1e3, 3), "gap_beside_prefill_ms": round(float(np.mean(during)) * 1e3, 3),
            "prefill_share": round(share, 3), "streams": streams, "prompt_tokens": prompt_tokens})


def probe(url: str, model: str | None, mode: str, prompt_tokens: int, max_model_len: int, streams: int = 4, n: int = 8,
          window_s: float = 1.5, extras: bool = True, timeout_s: float = 60.0) -> Contention:
    """Measure the pilot's contention (module docstring); a few seconds. `prompt_tokens`: the
    workload's mean prompt; `streams`: background decoding streams (disaggregated)."""
    stream_tokens = max(8, int(max_model_len) - 17)
    return asyncio.run(_probe(url, model, mode, max(1, int(prompt_tokens)), max(1, int(streams)), stream_tokens, n,
                              window_s, extras, timeout_s))
