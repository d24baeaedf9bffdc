"""The one streaming OpenAI client: `/v1/completions` and `/v1/chat/completions`, timed per token.

The profiler (planner.measure.endpoint), the pilot's load generator (planner.pilot.replay), the
runtime's tests and the benchmarks all send requests through `stream`, so a token is counted the
same way everywhere:

* by the token ids each chunk carries (`"return_token_ids": true`, which vLLM >= 0.10 and this
  project's runtime honour), else by the chunk's logprobs entries, else, for a server that gives
  neither, one token per chunk with text, the total then taken from the usage block. Never by
  non-empty text alone when ids are there: vLLM streams chunks whose `text` is `""` (a token
  that decodes to nothing yet), and a text counter drops them;
* every token's arrival time (`perf_counter`, seconds): the tokens of one chunk share its time;
* the prompt tokens the server counted (usage block, else the echoed `prompt_token_ids`);
* any error, as one line: HTTP status, error event, stream cut, timeout, interrupted.

SSE framing is planner.measure.sse. aiohttp is imported when a request is sent, so `planner plan`
never loads it; `post_json` and `get` are plain urllib for tests and scripts.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit, urlunsplit

from planner.measure.sse import SSEEvent, SSEParser

#: Statuses that mean "overloaded, nothing generated": safe to resend.
RETRY_STATUSES = (429, 502, 503)


@dataclass
class StreamResult:
    """One streamed request. `sent_s`, `ended_s` and `event_times_s` are perf_counter readings
    (s); `event_tokens[i]` is how many tokens the i-th token-carrying chunk held."""

    status: int | None = None
    error: str | None = None
    sent_s: float = 0.0
    ended_s: float | None = None
    event_times_s: list = field(default_factory=list)
    event_tokens: list = field(default_factory=list)
    token_ids: list = field(default_factory=list)
    text: str = ""
    counted_by: str | None = None  # "token_ids" | "logprobs" | "text" (chunks with text: a fallback)
    usage: dict | None = None
    echoed_prompt_tokens: int | None = None
    finish_reason: str | None = None
    done: bool = False  # the [DONE] sentinel (or a finish_reason) was seen
    content_type: str = ""
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.event_times_s)

    @property
    def output_tokens(self) -> int:
        """Tokens generated: by ids (or logprobs) when the server sent them, else the usage
        block's completion_tokens, else the chunks with text."""
        counted = sum(self.event_tokens)
        if self.counted_by in ("token_ids", "logprobs"):
            return counted
        u = (self.usage or {}).get("completion_tokens")
        return u if isinstance(u, int) else counted

    @property
    def output_tokens_source(self) -> str:
        if self.counted_by in ("token_ids", "logprobs"):
            return self.counted_by
        return "usage" if isinstance((self.usage or {}).get("completion_tokens"), int) else "events"

    @property
    def prompt_tokens(self) -> int | None:
        u = (self.usage or {}).get("prompt_tokens")
        return u if isinstance(u, int) else self.echoed_prompt_tokens

    @property
    def token_times_s(self) -> list:
        """Every token's arrival time (perf_counter, s): one entry per token by the ids count."""
        return [t for t, k in zip(self.event_times_s, self.event_tokens) for _ in range(k)]

    @property
    def ttft_s(self) -> float | None:
        return self.event_times_s[0] - self.sent_s if self.event_times_s else None

    @property
    def e2e_s(self) -> float | None:
        """Send to last token (s)."""
        return self.event_times_s[-1] - self.sent_s if self.event_times_s else None

    @property
    def gaps_s(self) -> list:
        """Times between consecutive token-carrying chunks (s)."""
        t = self.event_times_s
        return [b - a for a, b in zip(t, t[1:])]


@dataclass(frozen=True)
class RequestResult:
    """One streamed request. Times in seconds from sending it; `gaps_s` are the times between
    consecutive streamed tokens; `error` is None when the stream ended normally."""

    sweep: str  # "warmup" | "prefill" | "decode"
    point: int  # target prompt length (prefill) or concurrency (decode)
    prompt_tokens: int | None
    prompt_tokens_source: str  # "usage" | "tokenize" | "unknown"
    output_tokens: int | None
    output_tokens_source: str  # "token_ids" | "logprobs" | "usage" | "events" (planner.measure.client)
    ttft_s: float | None
    gaps_s: tuple[float, ...]
    e2e_s: float | None
    status: int | None
    error: str | None
    attempts: int
    started_s: float  # since the run started
    token_events: int = 0
    event_tokens: tuple = ()  # tokens per token-carrying chunk (by ids); () means one each

    @property
    def ok(self) -> bool:
        return self.error is None and self.ttft_s is not None

    @property
    def tpot_s(self) -> float | None:
        """(last token time - first token time) / (output tokens - 1), s per token."""
        if self.ttft_s is None or self.e2e_s is None or not self.output_tokens or self.output_tokens < 2:
            return None
        return sum(self.gaps_s) / (self.output_tokens - 1) if self.gaps_s else None

    def step_gaps_s(self) -> list[float]:
        """Inter-token gaps with reads undone: the k tokens that arrived together (one chunk
        carrying k ids, or chunks of one network read, same timestamp) share the time since the
        previous arrival, (t_j - t_(j-1)) / k each, instead of one long gap and zeros. Tokens
        that came with the first one are dropped (nothing before them to measure from). Seconds."""
        arrivals = [0.0]
        for g in self.gaps_s:
            arrivals.append(arrivals[-1] + g)
        ks = list(self.event_tokens) or [1] * len(arrivals)
        groups: list[list] = []  # [time, tokens]
        for a, k in zip(arrivals, ks):
            if groups and groups[-1][0] == a:
                groups[-1][1] += k
            else:
                groups.append([a, k])
        out: list[float] = []
        for (t0, _), (t1, k) in zip(groups, groups[1:]):
            out += [(t1 - t0) / k] * k
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gaps_s"] = [round(g, 6) for g in self.gaps_s]
        d["event_tokens"] = list(self.event_tokens) if any(k != 1 for k in self.event_tokens) else None
        for k in ("ttft_s", "e2e_s", "started_s"):
            d[k] = None if d[k] is None else round(d[k], 6)
        return d


def chunk_tokens(choice: dict) -> tuple[int, str | None]:
    """(tokens one streamed choice carries, how they were counted)."""
    ids = choice.get("token_ids")
    if isinstance(ids, list):
        return len(ids), "token_ids"
    lp = choice.get("logprobs")
    if isinstance(lp, dict):
        for key in ("tokens", "content"):  # completions | chat
            if isinstance(lp.get(key), list):
                return len(lp[key]), "logprobs"
    delta = choice.get("delta") or {}
    text = choice.get("text") or delta.get("content") or delta.get("reasoning_content") or ""
    return (1, "text") if text else (0, None)


def request_body(model: str | None, prompt, max_tokens: int, chat: bool = False, extras: bool = True,
                 min_tokens: bool = True) -> dict:
    """A greedy (temperature 0) streamed body. `prompt` is text or token ids (completions only).
    `extras`: the usage block, per-chunk token ids and ignore_eos so exactly max_tokens come back
    (vLLM, SGLang and this project's runtime honour them; a strict server that refuses them gets
    a plain body, see the callers' warm-ups), with `min_tokens` = max_tokens as well unless told
    not to (the pilot's replay sends it; the profiler sends ignore_eos alone, as vLLM's own
    benchmark does)."""
    body = {"max_tokens": int(max_tokens), "stream": True, "temperature": 0.0}
    if model:
        body["model"] = model
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if extras:
        body.update(stream_options={"include_usage": True}, return_token_ids=True, ignore_eos=True)
        if min_tokens:
            body["min_tokens"] = int(max_tokens)
    return body


def _fold(ev: SSEEvent, now: float, r: StreamResult) -> None:
    """One SSE event into the result."""
    err = ev.error
    if err:
        r.error = r.error or f"error event after {r.output_tokens} tokens: {err}"
        return
    if ev.is_done:
        r.done = True
        return
    doc = ev.json()
    if not isinstance(doc, dict):
        return
    if isinstance(doc.get("usage"), dict):
        r.usage = doc["usage"]
    if isinstance(doc.get("prompt_token_ids"), list):  # chat: top level
        r.echoed_prompt_tokens = len(doc["prompt_token_ids"])
    k_all = 0
    for ch in doc.get("choices") or []:
        if not isinstance(ch, dict):
            continue
        if isinstance(ch.get("prompt_token_ids"), list):  # completions: first choice chunk
            r.echoed_prompt_tokens = len(ch["prompt_token_ids"])
        k, how = chunk_tokens(ch)
        if how is not None and (r.counted_by in (None, "text") or how != "text"):
            r.counted_by = how
        k_all += k
        if isinstance(ch.get("token_ids"), list):
            r.token_ids += ch["token_ids"]
        r.text += ch.get("text") or (ch.get("delta") or {}).get("content") or ""
        if ch.get("finish_reason"):
            r.finish_reason = ch["finish_reason"]
    if k_all:
        r.event_times_s.append(now)
        r.event_tokens.append(k_all)


def why(e) -> str:
    """The OS's reason for a failed connection ('connection refused'), else the exception text."""
    os_error = getattr(e, "os_error", None)
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    return (os_error.strerror if os_error is not None and os_error.strerror else str(e)) or type(e).__name__


async def stream(session, url: str, body: dict, timeout_s: float = 60.0, headers: dict | None = None,
                 retry_delays_s=(), result: StreamResult | None = None, on_tokens=None) -> StreamResult:
    """POST `body` to `url` (the full completions or chat URL) and stream the answer into
    `result` (a new one when None), which is returned. The server's faults never raise: they
    become `result.error`. A connection refused, or HTTP 429/502/503, before any byte is resent
    after each of `retry_delays_s` (nothing was generated); a connection the server dropped before
    answering is tried once more (a stale keep-alive connection). Cancellation (Ctrl-C) is recorded as
    "interrupted" and re-raised, so a caller holding `result` keeps what was measured.
    `timeout_s`: seconds without a byte before the request counts as timed out. `on_tokens(result)`
    is called after each network read that brought tokens (a watcher of a live stream)."""
    import aiohttp

    r = result if result is not None else StreamResult()
    tmo = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout_s, 10.0), sock_read=timeout_s)
    try:
        while True:
            r.attempts += 1
            r.sent_s = time.perf_counter()
            retry = r.attempts <= len(retry_delays_s)
            try:
                async with session.post(url, json=body, headers=headers or {}, timeout=tmo) as resp:
                    r.status = resp.status
                    r.content_type = resp.headers.get("Content-Type", "")
                    if resp.status != 200:
                        text = (await resp.content.read(8192)).decode("utf-8", "replace")
                        ev = SSEEvent(data=text.strip(), event="raw")
                        r.error = f"HTTP {resp.status}: {ev.error or ' '.join(text.split())[:200] or resp.reason}"
                        if resp.status in RETRY_STATUSES and retry:
                            await asyncio.sleep(retry_delays_s[r.attempts - 1])
                            r.error = None
                            continue
                        return r
                    parser = SSEParser()
                    async for chunk in resp.content.iter_any():
                        now, seen = time.perf_counter(), len(r.event_times_s)
                        for ev in parser.feed(chunk):
                            _fold(ev, now, r)
                        if on_tokens is not None and len(r.event_times_s) > seen:
                            on_tokens(r)
                    for ev in parser.close():
                        _fold(ev, time.perf_counter(), r)
            except aiohttp.ClientConnectorError as e:
                if retry:
                    await asyncio.sleep(retry_delays_s[r.attempts - 1])
                    continue
                r.error = f"cannot connect: {why(e)}"
                return r
            except aiohttp.ServerDisconnectedError:
                # Before any byte came back, on the first try: a pooled keep-alive connection the
                # server had closed while idle; the request never ran. Once more on a fresh one.
                if r.status is None and r.attempts == 1:
                    continue
                raise
            break
        if r.error is None and not r.event_times_s and "event-stream" not in r.content_type:
            r.error = f"response not streamed (Content-Type {r.content_type or 'missing'})"
        elif r.error is None and not (r.done or r.finish_reason):
            r.error = f"stream cut after {r.output_tokens} tokens (no [DONE])"
        elif r.error is None and not r.event_times_s:
            r.error = "no tokens streamed"
    except asyncio.CancelledError:
        r.error = r.error or "interrupted"
        raise
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
        r.error = f"timeout: no byte for {timeout_s:g} s after {r.output_tokens} tokens"
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError) as e:
        r.error = f"stream cut after {r.output_tokens} tokens ({type(e).__name__})"
    except aiohttp.ClientError as e:
        r.error = f"{type(e).__name__}: {e}"
    finally:
        r.ended_s = time.perf_counter()
    return r


# ---- many at once (tests, benchmarks) -------------------------------------------------------
async def _many(base_url: str, payloads: list[dict], concurrency: int, timeout_s: float, arrivals_s=None):
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()
    url = base_url.rstrip("/") + "/v1/completions"

    async def one(i, p):
        if arrivals_s is not None:
            await asyncio.sleep(max(0.0, arrivals_s[i] - (time.perf_counter() - t0)))
        async with sem:
            return await stream(session, url, dict(p, stream=True, return_token_ids=True), timeout_s)

    connector = aiohttp.TCPConnector(limit=max(concurrency, 1) + 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        return await asyncio.gather(*(one(i, p) for i, p in enumerate(payloads)))


def run_many(base_url: str, payloads: list[dict], concurrency: int = 64, timeout_s: float = 300.0,
             arrivals_s: list[float] | None = None) -> list[StreamResult]:
    """Stream every /v1/completions payload (at most `concurrency` at once; optionally each
    starting at its arrival time in seconds from now); results in payload order."""
    return asyncio.run(_many(base_url, payloads, concurrency, timeout_s, arrivals_s))


def post_json(url: str, body, timeout_s: float = 60.0) -> tuple[int, dict]:
    """POST `body` (a dict, or raw str/bytes sent as is) and return (status, parsed JSON body)."""
    data = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def get(url: str, timeout_s: float = 30.0) -> tuple[int, str]:
    """GET `url`: (status, body text)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# ---- what may be sent where, and written -----------------------------------------------------
def origin(url: str) -> tuple:
    """(scheme, host, port): an API key goes only to the origin it is for."""
    u = urlsplit(url)
    return (u.scheme, u.hostname, u.port)


def redact_url(url: str) -> str:
    """Drop user:password@ from a URL before it is written anywhere."""
    u = urlsplit(url)
    if u.username or u.password:
        netloc = u.hostname + (f":{u.port}" if u.port else "")
        return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))
    return url


def scrub(obj, secret: str | None):
    """Replace the API key wherever it appears (server error messages echo odd things)."""
    if not secret:
        return obj
    if isinstance(obj, str):
        return obj.replace(secret, "***")
    if isinstance(obj, dict):
        return {k: scrub(v, secret) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, secret) for v in obj]
    return obj
