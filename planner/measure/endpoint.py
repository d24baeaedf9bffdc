"""Profile a running OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, planner's runtime).

Two sweeps over streamed `/v1/completions` (or `/v1/chat/completions`):

    prefill  prompt length L at concurrency 1: time to first token ~ queue + prefill(L) + network
    decode   concurrency c at fixed lengths: the gap between streamed tokens ~ one decode step at
             batch c (all c requests decode together)

Prompt lengths are the server's own token counts: prompts are built word by word and re-counted
with its `/tokenize` (vLLM, SGLang, llama.cpp and TGI dialects) until exact, else read from the
usage block of the response; never guessed from characters. Each request records its TTFT, every
inter-token gap, its output tokens and its error (timeout, HTTP status, error event, stream cut).
Around each point the server's Prometheus `/metrics` are scraped; histogram deltas give the
server-side queue, prefill and decode times of just that point's requests (planner.measure.prometheus).

The result is one profile file (planner.measure.files, kind "endpoint"); whatever was measured is saved
even when the run stops early (`"complete": false`). The API key is read from an environment
variable, sent as a Bearer token, and scrubbed from everything written.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import random
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from planner.errors import BadInput, shown
from planner.measure import prometheus
from planner.measure.sse import SSEParser, SSEEvent
from planner.measure.files import check_writable, save_profile

DEFAULT_PROMPT_LENS = (128, 256, 512, 1024, 2048, 4096)
QUICK_PROMPT_LENS = (128, 512, 2048)
DEFAULT_CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)
QUICK_CONCURRENCY = (1, 4, 16)
MAX_CONCURRENCY = 4096
MAX_PROMPT_LEN = 2_000_000
PREFILL_MAX_TOKENS = 2  # the prefill sweep only needs the first token; 2 keeps it a normal stream
RETRY_DELAYS_S = (0.25, 1.0)  # connection refused before any byte: safe to resend, twice
GIVE_UP_AFTER = 6  # consecutive requests that could not even connect: the server is gone
# Short common English words: one token each (with the leading space) in the BPE vocabularies
# of widely served models, so a prompt's count moves by about one per word and the search for an
# exact length converges in 2-3 tries.
WORDS = tuple(
    "the of and to in is it that was for on are as with his they at be this from have or by one had "
    "not but what all were when we there can an your which their said if do will each about how up "
    "out them then she many some so these would other into has more her two like him see time could "
    "no make than first been its who now people my made over did down only way find use may water "
    "long little very after words called just where most know get through back much go good new "
    "write our me man too any day same right look think also around another came come work three "
    "word must because does part even place well such here take why help put different away again "
    "off went old number great tell men say small every found still between name should home big "
    "give air line set own under read last never us left end along while might next sound below saw".split()
)


@dataclass(frozen=True)
class RequestResult:
    """One streamed request. Times in seconds from sending it; `gaps_s` are the times between
    consecutive streamed tokens; `error` is None when the stream ended normally."""

    sweep: str  # "warmup" | "prefill" | "decode"
    point: int  # target prompt length (prefill) or concurrency (decode)
    prompt_tokens: int | None
    prompt_tokens_source: str  # "usage" | "tokenize" | "unknown"
    output_tokens: int | None
    output_tokens_source: str  # "usage" | "events"
    ttft_s: float | None
    gaps_s: tuple[float, ...]
    e2e_s: float | None
    status: int | None
    error: str | None
    attempts: int
    started_s: float  # since the run started
    token_events: int = 0

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
        """Inter-token gaps with reads undone: tokens that arrived in one network read (same
        timestamp) share the time since the previous read, (t_j - t_(j-1)) / tokens_j each,
        instead of showing one long gap and zeros. Tokens read with the first one are dropped
        (nothing before them to measure from). Seconds."""
        out: list[float] = []
        t_prev, k, t = None, 0, None
        arrivals = [0.0]
        for g in self.gaps_s:
            arrivals.append(arrivals[-1] + g)
        for a in arrivals + [None]:  # None flushes the last group
            if t is not None and a == t:
                k += 1
                continue
            if t is not None and t_prev is not None:
                out += [(t - t_prev) / k] * k
            if t is not None:
                t_prev = t
            t, k = a, 1
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gaps_s"] = [round(g, 6) for g in self.gaps_s]
        for k in ("ttft_s", "e2e_s", "started_s"):
            d[k] = None if d[k] is None else round(d[k], 6)
        return d


class _ServerGone(Exception):
    """Several requests in a row could not connect: stop measuring, save what we have."""


@dataclass
class _Run:
    """The mutable state of one profiling run: everything a partial save needs."""

    base: str
    model: str | None
    chat: bool
    timeout_s: float
    api_key: str | None
    api_key_env: str | None
    metrics_url: str
    session: object = None
    engine: str | None = None
    engine_version: str | None = None
    server_header: str | None = None
    metrics_ok: bool = True
    tokenizer: str | None = None  # "vllm" | "llama.cpp" | "tgi" dialect of /tokenize, None: none
    tokenize_path: str = "/tokenize"
    max_model_len: int | None = None
    usage_ok: bool = False
    extras_ok: bool = True  # the server accepts stream_options / ignore_eos
    kv_capacity_tokens: int | None = None
    records: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    points: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)
    connect_failures: int = 0
    words_for: dict = field(default_factory=dict)  # target tokens -> words that hit it
    salt: int = field(default_factory=lambda: random.SystemRandom().randrange(1 << 48))

    @property
    def gen_url(self) -> str:
        return self.base + ("/v1/chat/completions" if self.chat else "/v1/completions")

    def headers(self, url: str) -> dict:
        """The Bearer header, only for the profiled server's own origin (never leak the key)."""
        if self.api_key and _origin(url) == _origin(self.base):
            return {"Authorization": f"Bearer {self.api_key}"}
        return {}

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def _origin(url: str) -> tuple:
    u = urlsplit(url)
    return (u.scheme, u.hostname, u.port)


def _redact_url(url: str) -> str:
    """Drop user:password@ from a URL before it is written anywhere."""
    u = urlsplit(url)
    if u.username or u.password:
        netloc = u.hostname + (f":{u.port}" if u.port else "")
        return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))
    return url


def _why(e) -> str:
    """The OS's reason for a failed connection ('Connection refused'), else the exception text."""
    os_error = getattr(e, "os_error", None)
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    return (os_error.strerror if os_error is not None and os_error.strerror else str(e)) or type(e).__name__


def _check_ints(name: str, values, lo: int, hi: int) -> list[int]:
    vals = list(values)
    if not vals:
        raise BadInput(f"{name}: empty sweep")
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise BadInput(f"{name}: {shown(v)} is out of range (expected an integer in {lo}..{hi})")
    return sorted(set(vals))


# ---- the public entry point -----------------------------------------------------------------
def run_endpoint_profile(
    url: str,
    model: str | None = None,
    out: str | Path | None = None,
    metrics_url: str | None = None,
    api_key_env: str | None = "OPENAI_API_KEY",
    prompt_lens=None,
    concurrency=None,
    input_len: int = 512,
    output_len: int = 64,
    requests_per_point: int | None = None,
    timeout_s: float = 60.0,
    chat: bool = False,
    quick: bool = False,
    progress: bool = True,
) -> Path:
    """Profile the server at `url` and write a profile file; returns its path.

    prompt_lens: prefill sweep, prompt tokens at concurrency 1 (default 128..4096, quick 128, 512,
    2048). concurrency: decode sweep at `input_len` prompt and `output_len` generated tokens
    (default 1..64, quick 1, 4, 16). requests_per_point: at least this many requests per point
    (default 4, quick 2); a decode point sends waves of c concurrent requests until it has them.
    timeout_s: seconds without a byte before a request counts as timed out.
    Raises BadInput (one line) for bad arguments, an unreachable or non-OpenAI server, a model
    it does not serve, or an output path that cannot be written."""
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise BadInput(f"--url: {shown(url)} is not an http(s) URL (e.g. http://localhost:8000)")
    base = url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    prompt_lens = prompt_lens or (QUICK_PROMPT_LENS if quick else DEFAULT_PROMPT_LENS)
    prompt_lens = _check_ints("prompt length", prompt_lens, 1, MAX_PROMPT_LEN)
    concurrency = concurrency or (QUICK_CONCURRENCY if quick else DEFAULT_CONCURRENCY)
    concurrency = _check_ints("concurrency", concurrency, 1, MAX_CONCURRENCY)
    _check_ints("input_len", [input_len], 1, MAX_PROMPT_LEN)
    _check_ints("output_len", [output_len], 2, 1_000_000)  # 2: a gap needs two tokens
    rpp = requests_per_point if requests_per_point is not None else (2 if quick else 4)
    _check_ints("requests_per_point", [rpp], 1, 100_000)
    if not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise BadInput(f"timeout: {shown(timeout_s)} must be a positive number of seconds")
    # Default: profiles/<model>-endpoint-<time>.json, named once the model is known; the folder
    # is checked now, before minutes of measuring.
    out = Path(out) if out is not None else None
    check_writable(out if out is not None else Path("profiles") / "endpoint.json")
    run = _Run(
        base=base, model=model, chat=chat, timeout_s=float(timeout_s),
        api_key=(os.environ.get(api_key_env) or None) if api_key_env else None, api_key_env=api_key_env,
        metrics_url=(metrics_url or base + "/metrics").rstrip("/"),
    )
    sweep = {"prompt_lens": prompt_lens, "concurrency": concurrency, "input_len": input_len,
             "output_len": output_len, "requests_per_point": rpp, "chat": chat, "quick": quick,
             "timeout_s": float(timeout_s)}
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        asyncio.run(_profile(run, sweep, progress))
    except BaseException as e:
        out = out or _default_out(run, stamp)
        if any(r.sweep != "warmup" for r in run.records):
            _save(run, out, sweep, complete=False, stopped=_scrub(f"{type(e).__name__}: {e}", run.api_key))
            if isinstance(e, _ServerGone):
                raise BadInput(f"{_redact_url(base)}: server stopped answering ({e}); "
                               f"partial profile saved to {out}") from None
            if isinstance(e, BadInput):
                raise BadInput(f"{e}; partial profile saved to {out}") from None
        elif isinstance(e, _ServerGone):
            raise BadInput(f"{_redact_url(base)}: server stopped answering ({e})") from None
        raise
    return _save(run, out or _default_out(run, stamp), sweep, complete=True)


def _default_out(run: _Run, stamp: str) -> Path:
    name = run.model or urlsplit(run.base).hostname or "server"
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name.split("/")[-1])
    return Path("profiles") / f"{safe}-endpoint-{stamp}.json"


# ---- orchestration --------------------------------------------------------------------------
async def _profile(run: _Run, sweep: dict, show_progress: bool) -> None:
    import aiohttp

    limit = max(sweep["concurrency"]) + 8  # aiohttp's default pool (100) would cap concurrency
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(run.timeout_s, 10.0), sock_read=run.timeout_s)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit), timeout=timeout) as session:
        run.session = session
        await _discover(run)
        await _detect_tokenizer(run)
        await _warmup(run)
        first = await _scrape(run)
        if first is not None:
            run.engine = prometheus.detect_engine(first) or run.engine
            run.kv_capacity_tokens = prometheus.kv_capacity_tokens(first)
            if prometheus.detect_engine(first) is None:
                run.note(f"metrics at {_redact_url(run.metrics_url)} carry no vllm:/sglang:/planner: series: "
                         "no server-side phase times")
        lens = _fit_lengths(run, sweep["prompt_lens"], PREFILL_MAX_TOKENS, "prompt length")
        input_ok = _fit_lengths(run, [sweep["input_len"]], sweep["output_len"], "input_len")
        rpp = sweep["requests_per_point"]
        waves = {c: -(-rpp // c) for c in sweep["concurrency"]}
        total = len(lens) * rpp + (sum(c * w for c, w in waves.items()) if input_ok else 0)
        with _progress(show_progress) as bar:
            task = bar.add_task("prefill", total=total) if bar else None
            for n in lens:
                if bar:
                    bar.update(task, description=f"prefill {n:>6} tok")
                await _prefill_point(run, n, rpp, lambda: bar and bar.advance(task))
            if input_ok:
                for c in sweep["concurrency"]:
                    if bar:
                        bar.update(task, description=f"decode  c={c:<5}")
                    await _decode_point(run, c, waves[c], sweep["input_len"], sweep["output_len"],
                                        lambda k=1: bar and bar.advance(task, k))


def _progress(show: bool):
    if not show:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=Console(stderr=True))


def _fit_lengths(run: _Run, lens: list[int], max_tokens: int, what: str) -> list[int]:
    """Drop lengths the server cannot take (prompt + max_tokens > its max_model_len), with a note."""
    if not run.max_model_len:
        return list(lens)
    keep = [n for n in lens if n + max_tokens <= run.max_model_len]
    if len(keep) < len(lens):
        dropped = [n for n in lens if n not in keep]
        run.note(f"{what}s {dropped} skipped: over the server's max_model_len {run.max_model_len}")
    return keep


async def _get_json(run: _Run, url: str, body=None):
    """(status, parsed JSON or None, text) of a GET (body None) or POST."""
    method = run.session.get if body is None else run.session.post
    kw = {} if body is None else {"json": body}
    async with method(url, headers=run.headers(url), **kw) as r:
        text = (await r.content.read(1 << 20)).decode("utf-8", "replace")
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        return r.status, doc, text, r.headers.get("Server")


async def _discover(run: _Run) -> None:
    """Check the server answers like OpenAI and pick (or check) the model."""
    import aiohttp

    where = _redact_url(run.base)
    try:
        status, doc, text, run.server_header = await _get_json(run, run.base + "/v1/models")
    except aiohttp.ClientConnectorError as e:
        raise BadInput(f"{where}: cannot connect ({_why(e)})") from None
    except asyncio.TimeoutError:
        raise BadInput(f"{where}: no answer within {run.timeout_s:g} s") from None
    except aiohttp.ClientError as e:
        raise BadInput(f"{where}: {_scrub(str(e), run.api_key) or type(e).__name__}") from None
    if status in (401, 403):
        fix = f"the key in ${run.api_key_env} was refused" if run.api_key else f"put the API key in ${run.api_key_env}"
        raise BadInput(f"{where}: HTTP {status} unauthorized: {fix}")
    served = None
    if status == 200 and isinstance(doc, dict) and isinstance(doc.get("data"), list):
        served = [str(m.get("id")) for m in doc["data"] if isinstance(m, dict) and m.get("id")]
    if served is None:
        probe_status, probe_doc = None, None
        try:
            probe = {"model": run.model or "", "prompt": "hi", "max_tokens": 1}
            probe_status, probe_doc, _, _ = await _get_json(run, run.gen_url, probe)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        # A 404 with an OpenAI error body ("model not found") still means the route exists.
        openai_error = isinstance(probe_doc, dict) and ("error" in probe_doc or probe_doc.get("object") == "error")
        if probe_status in (None, 404, 405) and not openai_error:
            raise BadInput(f"{where}: not an OpenAI-compatible server (GET /v1/models -> HTTP {status}, "
                           f"POST {run.gen_url[len(run.base):]} -> {probe_status or 'no answer'})")
        if run.model is None:
            raise BadInput(f"{where}: GET /v1/models -> HTTP {status}; name the model with --model")
        run.note(f"GET /v1/models -> HTTP {status}: model {shown(run.model)} not checked")
    elif run.model is None:
        if not served:
            raise BadInput(f"{where}: the server lists no models at /v1/models")
        run.model = served[0]
        if len(served) > 1:
            run.note(f"server serves {served}; profiled the first (choose with --model)")
    elif run.model not in served:
        raise BadInput(f"{where}: model {shown(run.model)} is not served here; served: {', '.join(served) or 'none'}")
    for card in doc["data"] if served else []:
        if isinstance(card, dict) and card.get("id") == run.model and isinstance(card.get("max_model_len"), int):
            run.max_model_len = card["max_model_len"]  # vLLM lists it here
    try:
        status, doc, _, _ = await _get_json(run, run.base + "/version")
        if status == 200 and isinstance(doc, dict) and doc.get("version"):
            run.engine_version = str(doc["version"])
    except (aiohttp.ClientError, asyncio.TimeoutError):
        pass


def _token_count(doc) -> int | None:
    """Token count from a /tokenize answer: vLLM/SGLang {"count"|"tokens"}, llama.cpp
    {"tokens"}, TGI [ {id, text, ...}, ... ]."""
    if isinstance(doc, dict):
        if isinstance(doc.get("count"), int):
            return doc["count"]
        if isinstance(doc.get("tokens"), list):
            return len(doc["tokens"])
    if isinstance(doc, list):
        return len(doc)
    return None


def _tokenize_body(run: _Run, style: str, text: str) -> dict:
    if style == "vllm":
        if run.chat:
            return {"model": run.model, "messages": [{"role": "user", "content": text}]}
        return {"model": run.model, "prompt": text}
    # llama.cpp leaves BOS out of /tokenize unless asked; its completions count it.
    return {"content": text, "add_special": True} if style == "llama.cpp" else {"inputs": text}


async def _detect_tokenizer(run: _Run) -> None:
    """Find which /tokenize dialect the server speaks. With chat, only the vLLM dialect counts the
    chat template; otherwise counts come from the usage block."""
    import aiohttp

    styles = ("vllm",) if run.chat else ("vllm", "llama.cpp", "tgi")
    for path in ("/tokenize", "/v1/tokenize"):
        for style in styles:
            try:
                text = "the cat sat on the mat"
                status, doc, _, _ = await _get_json(run, run.base + path, _tokenize_body(run, style, text))
                status2, doc2, _, _ = await _get_json(run, run.base + path, _tokenize_body(run, style, text * 4))
            except (aiohttp.ClientError, asyncio.TimeoutError):
                continue
            a, b = _token_count(doc), _token_count(doc2)
            if status == status2 == 200 and a and b and b > a:  # a real count grows with the text
                run.tokenizer, run.tokenize_path = style, path
                if isinstance(doc, dict) and isinstance(doc.get("max_model_len"), int):
                    run.max_model_len = doc["max_model_len"]
                return
    run.note("no /tokenize: prompt token counts come from the usage block of each response")


async def _count_tokens(run: _Run, text: str) -> int | None:
    import aiohttp

    try:
        status, doc, _, _ = await _get_json(run, run.base + run.tokenize_path, _tokenize_body(run, run.tokenizer, text))
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
    return _token_count(doc) if status == 200 else None


def _words(seed: str, k: int) -> str:
    """k words drawn from WORDS by seed; the same seed with more words extends the same text, and
    different seeds differ from the first words, so no prefix cache hides a prefill (seeds carry
    a per-run salt: a second run against the same server must not hit the first one's cache)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(k))


async def _prompt(run: _Run, n: int, seed: str, exact: bool) -> tuple[str, int | None, int]:
    """A prompt of n tokens by the server's count: (text, tokenize count or None, words).

    With /tokenize and `exact`: grow or shrink the word count by the miss (about one token per
    word) and re-count, at most 8 times, keeping the closest; a few " a" pad the last gap. Without:
    reuse the word count that came closest before (the usage block then says what the server
    counted)."""
    k = run.words_for.get(n, n)
    if not (exact and run.tokenizer):
        return _words(seed, k), None, k
    best = under = None  # closest so far; closest from below (to pad)
    tried = set()
    for _ in range(8):
        text = _words(seed, k)
        c = await _count_tokens(run, text)
        if c is None:
            return text, None, k
        if best is None or abs(c - n) < abs(best[1] - n):
            best = (text, c, k)
        if c < n and (under is None or c > under[1]):
            under = (text, c, k)
        if c == n:
            break
        tried.add(k)
        k = max(1, k + round((n - c) * k / max(c, 1)))
        if k in tried:
            k = max(1, k + (1 if c < n else -1))
            if k in tried:
                break
    run.words_for[n] = best[2]
    if best[1] != n and under is not None and n - under[1] <= 16:
        # Some words are 2-3 tokens, so the count can jump over n: pad the closest prompt below
        # it with " a" (one token in common BPE vocabularies) or "." (one byte: one token for a
        # byte-level tokenizer too).
        for pad in (" a", "."):
            padded = under[0] + pad * (n - under[1])
            c = await _count_tokens(run, padded)
            if c is not None and abs(c - n) < abs(best[1] - n):
                best = (padded, c, under[2])
            if best[1] == n:
                break
    return best


def _payload(run: _Run, prompt: str, max_tokens: int) -> dict:
    p = {"model": run.model, "max_tokens": max_tokens, "stream": True, "temperature": 0.0}
    if run.extras_ok:
        # usage: the server's own token counts; ignore_eos (vLLM, SGLang, llama.cpp): exactly max_tokens
        p["stream_options"] = {"include_usage": True}
        p["ignore_eos"] = True
    if run.chat:
        p["messages"] = [{"role": "user", "content": prompt}]
    else:
        p["prompt"] = prompt
    return p


async def _warmup(run: _Run) -> None:
    """One short streamed request: warms the server, checks it streams, learns whether it
    accepts stream_options/ignore_eos and reports usage."""
    prompt = _words(f"{run.salt}-warmup", 16)
    r = await _request(run, "warmup", 0, prompt, None, 4)
    if r.error and r.status in (400, 422):
        run.extras_ok = False
        r2 = await _request(run, "warmup", 0, prompt, None, 4)
        if r2.ok:
            run.note(f"server refused stream_options/ignore_eos ({r.error}); sent plain requests")
            r = r2
    run.records.append(r)
    if r.status == 404:
        raise BadInput(f"{_redact_url(run.gen_url)}: not an OpenAI-compatible completions endpoint ({r.error})")
    if r.status in (401, 403):
        raise BadInput(f"{_redact_url(run.gen_url)}: HTTP {r.status} unauthorized ({r.error})")
    if not r.ok:
        raise BadInput(f"{_redact_url(run.gen_url)}: a minimal streamed request failed: {r.error}")
    run.usage_ok = r.prompt_tokens_source == "usage"
    if not run.usage_ok and not run.tokenizer:
        run.note("neither /tokenize nor usage: prompt token counts unknown, no prefill samples")


async def _request(run: _Run, sweep: str, point: int, prompt: str, counted: int | None,
                   max_tokens: int) -> RequestResult:
    """Send one streamed request and time it. Connection refused before any byte is retried
    (nothing reached the server); anything after the request went out is recorded, not retried."""
    import aiohttp

    attempts = 0
    started = time.perf_counter() - run.t0
    while True:
        attempts += 1
        t_send = time.perf_counter()
        times: list[float] = []
        st = {"usage": None, "done": False, "finish": None, "error": None, "status": None}
        try:
            body, headers = _payload(run, prompt, max_tokens), run.headers(run.gen_url)
            async with run.session.post(run.gen_url, json=body, headers=headers) as resp:
                st["status"] = resp.status
                if resp.status != 200:
                    text = (await resp.content.read(8192)).decode("utf-8", "replace")
                    ev = SSEEvent(data=text.strip(), event="raw")
                    st["error"] = f"HTTP {resp.status}: {ev.error or ' '.join(text.split())[:200] or resp.reason}"
                    if resp.status in (429, 502, 503) and attempts <= len(RETRY_DELAYS_S):
                        await asyncio.sleep(RETRY_DELAYS_S[attempts - 1])  # overloaded, nothing generated: safe
                        continue
                else:
                    parser = SSEParser()
                    async for chunk in resp.content.iter_any():
                        now = time.perf_counter()
                        for ev in parser.feed(chunk):
                            _on_event(ev, now, times, st)
                    for ev in parser.close():
                        _on_event(ev, time.perf_counter(), times, st)
                    ctype = resp.headers.get("Content-Type", "")
                    if st["error"] is None and not times and "event-stream" not in ctype:
                        st["error"] = f"response not streamed (Content-Type {ctype or 'missing'})"
                    elif st["error"] is None and not (st["done"] or st["finish"]):
                        st["error"] = f"stream cut after {len(times)} tokens (no [DONE])"
            run.connect_failures = 0
        except aiohttp.ClientConnectorError as e:
            if attempts <= len(RETRY_DELAYS_S):
                await asyncio.sleep(RETRY_DELAYS_S[attempts - 1])
                continue
            st["error"] = f"cannot connect: {_why(e)}"
            run.connect_failures += 1
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            st["error"] = f"timeout: no byte for {run.timeout_s:g} s after {len(times)} tokens"
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            st["error"] = f"stream cut after {len(times)} tokens ({type(e).__name__})"
        except aiohttp.ClientError as e:
            st["error"] = f"{type(e).__name__}: {e}"
        break
    usage = st["usage"] or {}
    prompt_tokens, src = counted, "tokenize" if counted is not None else "unknown"
    if isinstance(usage.get("prompt_tokens"), int):
        prompt_tokens, src = usage["prompt_tokens"], "usage"
    out_tokens, out_src = len(times), "events"
    if isinstance(usage.get("completion_tokens"), int):
        out_tokens, out_src = usage["completion_tokens"], "usage"
    if st["error"] is None and not times:
        st["error"] = "no tokens streamed"
    result = RequestResult(
        sweep=sweep, point=point, prompt_tokens=prompt_tokens, prompt_tokens_source=src,
        output_tokens=out_tokens, output_tokens_source=out_src,
        ttft_s=times[0] - t_send if times else None,
        gaps_s=tuple(b - a for a, b in zip(times, times[1:])),
        e2e_s=times[-1] - t_send if times else None, status=st["status"],
        error=_scrub(st["error"], run.api_key), attempts=attempts, started_s=started, token_events=len(times),
    )
    if run.connect_failures >= GIVE_UP_AFTER:
        run.records.append(result)
        raise _ServerGone(f"{run.connect_failures} requests in a row could not connect: {result.error}")
    return result


def _on_event(ev: SSEEvent, now: float, times: list, st: dict) -> None:
    """Fold one SSE event into a request's state: a token time per event carrying text."""
    err = ev.error
    if err:
        st["error"] = st["error"] or f"error event after {len(times)} tokens: {err}"
        return
    if ev.is_done:
        st["done"] = True
        return
    doc = ev.json()
    if not isinstance(doc, dict):
        return
    if isinstance(doc.get("usage"), dict):
        st["usage"] = doc["usage"]
    for ch in doc.get("choices") or []:
        if not isinstance(ch, dict):
            continue
        delta = ch.get("delta") or {}
        text = ch.get("text") or delta.get("content") or delta.get("reasoning_content") or ""
        if text:
            times.append(now)
        if ch.get("finish_reason"):
            st["finish"] = ch["finish_reason"]


# ---- sweep points ---------------------------------------------------------------------------
async def _scrape(run: _Run):
    """Parse the server's /metrics, or None (noted once) when there are none."""
    if not run.metrics_ok:
        return None
    import aiohttp

    try:
        async with run.session.get(run.metrics_url, headers=run.headers(run.metrics_url),
                                   timeout=aiohttp.ClientTimeout(total=min(run.timeout_s, 10.0))) as r:
            if r.status != 200:
                raise aiohttp.ClientError(f"HTTP {r.status}")
            return prometheus.parse(await r.text())
    except (aiohttp.ClientError, asyncio.TimeoutError, UnicodeDecodeError) as e:
        run.metrics_ok = False
        why = f"{_redact_url(run.metrics_url)} ({e or type(e).__name__})"
        run.note(f"Prometheus metrics stopped answering at {why}: no server-side times from there on" if run.points
                 else f"no Prometheus metrics at {why}: server-side phase times not recorded")
        return None


async def _server_stats(run: _Run, before, n_ok: int) -> dict:
    """Server-side phase statistics of the requests since `before`. The engine records a request
    in its histograms as it finishes; if the scrape raced it, look once more."""
    if before is None:
        return {}
    after = await _scrape(run)
    if after is None:
        return {}
    stats = prometheus.phase_summary(before, after, run.engine)
    if stats and stats.get("server_ttft_count", n_ok) < n_ok:
        await asyncio.sleep(0.5)
        after = await _scrape(run) or after
        stats = prometheus.phase_summary(before, after, run.engine)
    return stats


def _q(values: list[float], q: float) -> float:
    """Quantile by linear interpolation between order statistics (numpy's default)."""
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


async def _prefill_point(run: _Run, n: int, reps: int, advance) -> None:
    before = await _scrape(run)
    results = []
    for i in range(reps):
        text, counted, k = await _prompt(run, n, seed=f"{run.salt}-prefill-{n}-{i}", exact=True)
        r = await _request(run, "prefill", n, text, counted, PREFILL_MAX_TOKENS)
        results.append(r)
        run.records.append(r)
        advance()
        if counted is None and r.prompt_tokens_source == "usage" and r.prompt_tokens:
            # No /tokenize: the usage block says what k words came to; aim the next prompt by it.
            run.words_for[n] = max(1, k + round((n - r.prompt_tokens) * k / r.prompt_tokens))
    ok = [r for r in results if r.ok and r.prompt_tokens]
    server = await _server_stats(run, before, len(ok))
    point = {"sweep": "prefill", "point": n, "requests": len(results), "errors": len(results) - len(ok), **server}
    run.points.append(point)
    if not ok:
        return
    ttft = [r.ttft_s for r in ok]
    run.samples.append({
        "phase": "prefill", "batch": 1, "prompt_len": int(statistics.median(r.prompt_tokens for r in ok)),
        "context_len": 0, "seconds": statistics.median(ttft), "p10_s": _q(ttft, 0.1), "p90_s": _q(ttft, 0.9),
        "reps": len(ok), "errors": len(results) - len(ok), "target_prompt_len": n,
        "prompt_tokens_source": ok[0].prompt_tokens_source, "source": "client TTFT (includes network and queueing)",
        **server,
    })


async def _decode_point(run: _Run, c: int, waves: int, input_len: int, output_len: int, advance) -> None:
    before = await _scrape(run)
    results: list[RequestResult] = []
    wall = 0.0
    for w in range(waves):
        # Prompts first, so counting their tokens never overlaps the timed wave.
        prompts = [await _prompt(run, input_len, seed=f"{run.salt}-decode-{c}-{w}-{i}", exact=True)
                   for i in range(c)]
        t = time.perf_counter()
        wave = await asyncio.gather(*(_request(run, "decode", c, p, counted, output_len) for p, counted, _ in prompts))
        wall += time.perf_counter() - t
        results += wave
        run.records += wave
        advance(c)
    ok = [r for r in results if r.ok and len(r.gaps_s) > 0]
    server = await _server_stats(run, before, len(ok))
    errors = len(results) - len(ok)
    run.points.append({"sweep": "decode", "point": c, "requests": len(results), "errors": errors, **server})
    if not ok:
        return
    # One SSE event per token: the median gap is the step time, robust to the odd stall (another
    # request's prefill). A server may pack several tokens into one event (or send none for a
    # token ending mid-UTF-8 character): such gaps are not steps. Use the requests that streamed
    # token by token when they are most; else the time per output token of each request.
    # Tokens that arrive in one network read are spread over the time since the previous read
    # (RequestResult.step_gaps_s), not counted as zero gaps.
    stepwise = [r for r in ok if r.token_events == r.output_tokens]
    per_token = len(stepwise) * 2 >= len(ok)
    gaps = [g for r in stepwise for g in r.step_gaps_s()] if per_token else [r.tpot_s for r in ok if r.tpot_s]
    gaps = [g for g in gaps if g > 0]
    if not gaps:
        run.note(f"decode c={c}: no usable token gaps")
        return
    prompt = [r.prompt_tokens for r in ok if r.prompt_tokens]
    out_tokens = sum(r.output_tokens or 0 for r in results)
    run.samples.append({
        "phase": "decode", "batch": c, "prompt_len": 0,
        "context_len": int(statistics.median(prompt) if prompt else input_len) + output_len // 2,
        "context_len_source": "measured prompt tokens + output_len/2" if prompt else "target input_len + output_len/2",
        "seconds": statistics.median(gaps), "p10_s": _q(gaps, 0.1), "p90_s": _q(gaps, 0.9),
        "reps": len(gaps), "requests": len(results), "errors": errors,
        "estimator": "median inter-token gap" if per_token else "median time per output token",
        "output_tok_per_s": out_tokens / wall if wall > 0 else None, **server,
    })


# ---- saving ---------------------------------------------------------------------------------
def _scrub(obj, secret: str | None):
    """Replace the API key wherever it appears (server error messages echo odd things)."""
    if not secret:
        return obj
    if isinstance(obj, str):
        return obj.replace(secret, "***")
    if isinstance(obj, dict):
        return {k: _scrub(v, secret) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v, secret) for v in obj]
    return obj


def _save(run: _Run, out: Path, sweep: dict, complete: bool, stopped: str | None = None) -> Path:
    errors = sum(1 for r in run.records if r.error)
    meta = {
        "kind": "endpoint",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "complete": complete,
        "device": {"name": f"endpoint {urlsplit(run.base).hostname}", "type": "remote", "count": None,
                   "memory_gb": None, "driver": None},
        "engine": {"name": run.engine or "unknown", "version": run.engine_version, "url": _redact_url(run.base),
                   "server_header": run.server_header},
        "model": {"name": run.model},
        "dtype": "unknown",
        "ceilings": {"matmul_tflops": None, "mem_bw_gbps": None, "link_gbps": None},
        "kv_bytes_per_token": {"measured": None, "formula": None},
        "utilization": {"available": False, "note": "utilization: not available (remote endpoint; "
                                                    "the server's own metrics are in extra.server)"},
        "extra": {
            "sweep": sweep,
            "server": {"metrics_url": _redact_url(run.metrics_url), "metrics_available": run.metrics_ok,
                       "engine": run.engine, "kv_capacity_tokens": run.kv_capacity_tokens,
                       "max_model_len": run.max_model_len, "points": run.points},
            "tokenize_dialect": run.tokenizer, "usage_block": run.usage_ok,
            "requests_total": len(run.records), "requests_failed": errors,
            "notes": run.notes, "stopped": stopped,
            "requests": [r.to_dict() for r in run.records],
        },
    }
    return save_profile(out, _scrub(meta, run.api_key), _scrub(run.samples, run.api_key))
