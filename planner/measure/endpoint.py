"""Profile a running OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, planner's runtime).

Two sweeps over streamed `/v1/completions` (or `/v1/chat/completions`):

    prefill  prompt length L at concurrency 1: time to first token ~ queue + prefill(L) + network
    decode   concurrency c at fixed lengths: the gap between streamed tokens ~ one decode step at
             batch c (all c requests decode together)

Prompt lengths are the server's own token counts: prompts are built word by word and re-counted
with its `/tokenize` (vLLM, SGLang, llama.cpp and TGI dialects) until exact, else read from the
usage block of the response; never guessed from characters (planner.measure.prompts). Requests go
through planner.measure.client: each records its TTFT, every inter-token gap, its output tokens
counted by the token ids each chunk carries (else the usage block; vLLM streams chunks whose text is
"") and its error (timeout, HTTP status, error event, stream cut).
Around each point the server's Prometheus `/metrics` are scraped; histogram deltas give the
server-side queue, prefill and decode times of just that point's requests (planner.measure.prometheus).

What served it (engine, model shape, GPU type, tp, dtype, scheduler limits) is taken from flags or
detected (planner.measure.deployment, planner.measure.discover) and written in the header
(planner.measure.endpoint_file) with the lengths dropped and the requests failed.

The result is one profile file (planner.measure.files, kind "endpoint"); whatever was measured is saved
even when the run stops early (`"complete": false`). The API key is read from an environment
variable, sent as a Bearer token, and scrubbed from everything written.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import random
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from planner.errors import BadInput, shown
from planner.measure import client, deployment, endpoint_file, prometheus, prompts
from planner.measure.client import RequestResult
from planner.measure.deployment import DeploymentFlags
from planner.measure.discover import discover
from planner.measure.files import check_writable

DEFAULT_PROMPT_LENS = (128, 256, 512, 1024, 2048, 4096)
QUICK_PROMPT_LENS = (128, 512, 2048)
DEFAULT_CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)
QUICK_CONCURRENCY = (1, 4, 16)
MAX_CONCURRENCY = 4096
MAX_PROMPT_LEN = 2_000_000
PREFILL_MAX_TOKENS = 2  # the prefill sweep only needs the first token; 2 keeps it a normal stream
RETRY_DELAYS_S = (0.25, 1.0)  # connection refused before any byte: safe to resend, twice
GIVE_UP_AFTER = 6  # consecutive requests that could not even connect: the server is gone


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
    flags: DeploymentFlags = field(default_factory=DeploymentFlags)
    command: str | None = None  # the header's `command` (default: this process's command line)
    owned_by: str | None = None  # /v1/models card of the profiled model
    root: str | None = None  # vLLM: the path or id it was started with
    cache_info: dict | None = None  # vllm:cache_config_info labels
    server_info: dict | None = None  # SGLang /get_server_info
    bucket_edges: dict = field(default_factory=dict)  # histogram name -> finite bucket bounds (s)
    dropped: list = field(default_factory=list)  # {"what", "tokens", "reason"}
    model_meta: dict = field(default_factory=dict)  # the header's "model" (deployment.resolve_model)
    model_source: str | None = None
    config_dtype: str | None = None
    local_device: dict | None = None  # --gpu local --measure-ceilings: this machine's name and memory
    ceilings: dict = field(default_factory=lambda: {"matmul_tflops": None, "mem_bw_gbps": None, "link_gbps": None})
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
        if self.api_key and client.origin(url) == client.origin(self.base):
            return {"Authorization": f"Bearer {self.api_key}"}
        return {}

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


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
    deploy: DeploymentFlags | None = None,
    command: str | None = None,
) -> Path:
    """Profile the server at `url` and write a profile file; returns its path.

    prompt_lens: prefill sweep, prompt tokens at concurrency 1 (default 128..4096, quick 128, 512,
    2048). concurrency: decode sweep at `input_len` prompt and `output_len` generated tokens
    (default 1..64, quick 1, 4, 16). requests_per_point: at least this many requests per point
    (default 4, quick 2); a decode point sends waves of c concurrent requests until it has them.
    timeout_s: seconds without a byte before a request counts as timed out. deploy: what the
    user said about the deployment (planner.measure.deployment; detected where not said).
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
    deploy = deploy or DeploymentFlags()
    deployment.check_flags(deploy)
    # Default: profiles/<model>-endpoint-<time>.json, named once the model is known; the folder
    # is checked now, before minutes of measuring.
    out = Path(out) if out is not None else None
    check_writable(out if out is not None else Path("profiles") / "endpoint.json")
    run = _Run(
        base=base, model=model, chat=chat, timeout_s=float(timeout_s),
        api_key=(os.environ.get(api_key_env) or None) if api_key_env else None, api_key_env=api_key_env,
        metrics_url=(metrics_url or base + "/metrics").rstrip("/"), flags=deploy, command=command,
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
            endpoint_file.save(run, out, sweep, complete=False, stopped=client.scrub(f"{type(e).__name__}: {e}", run.api_key))
            if isinstance(e, _ServerGone):
                raise BadInput(f"{client.redact_url(base)}: server stopped answering ({e}); "
                               f"partial profile saved to {out}") from None
            if isinstance(e, BadInput):
                raise BadInput(f"{e}; partial profile saved to {out}") from None
        elif isinstance(e, _ServerGone):
            raise BadInput(f"{client.redact_url(base)}: server stopped answering ({e})") from None
        raise
    return endpoint_file.save(run, out or _default_out(run, stamp), sweep, complete=True)


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
        await discover(run)
        run.model_meta, run.model_source, run.config_dtype = deployment.resolve_model(run.flags, run.model, run.root)
        endpoint_file.ceilings(run)
        await prompts.detect_tokenizer(run)
        await _warmup(run)
        first = await _scrape(run)
        if first is not None:
            if prometheus.detect_engine(first) is None:
                run.note(f"metrics at {client.redact_url(run.metrics_url)} carry no vllm:/sglang:/planner: series: "
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
        run.dropped += [{"what": what, "tokens": n, "reason": f"{n} + {max_tokens} output tokens > max_model_len "
                                                              f"{run.max_model_len}"} for n in dropped]
    return keep


def _payload(run: _Run, prompt: str, max_tokens: int) -> dict:
    """Greedy, streamed; with extras the usage block, per-chunk token ids and exactly max_tokens by
    ignore_eos alone, as `vllm bench serve` sends it (planner.measure.client.request_body)."""
    return client.request_body(run.model, prompt, max_tokens, chat=run.chat, extras=run.extras_ok, min_tokens=False)


async def _warmup(run: _Run) -> None:
    """One short streamed request: warms the server, checks it streams, learns whether it
    accepts stream_options/ignore_eos and reports usage."""
    prompt = prompts.words(f"{run.salt}-warmup", 16)
    r = await _request(run, "warmup", 0, prompt, None, 4)
    if r.error and r.status in (400, 422):
        run.extras_ok = False
        r2 = await _request(run, "warmup", 0, prompt, None, 4)
        if r2.ok:
            run.note(f"server refused stream_options/ignore_eos/return_token_ids ({r.error}): sent plain requests; "
                     "token times are chunks with text, totals from the usage block when there is one")
            r = r2
    run.records.append(r)
    if r.status == 404:
        raise BadInput(f"{client.redact_url(run.gen_url)}: not an OpenAI-compatible completions endpoint ({r.error})")
    if r.status in (401, 403):
        raise BadInput(f"{client.redact_url(run.gen_url)}: HTTP {r.status} unauthorized ({r.error})")
    if not r.ok:
        raise BadInput(f"{client.redact_url(run.gen_url)}: a minimal streamed request failed: {r.error}")
    run.usage_ok = r.prompt_tokens_source == "usage"
    if run.extras_ok and r.output_tokens_source not in ("token_ids", "logprobs"):
        run.note("the server sends no token ids per chunk: token times are chunks with text"
                 + (", totals from the usage block" if r.output_tokens_source == "usage" else ""))
    if not run.usage_ok and not run.tokenizer:
        run.note("neither /tokenize nor usage: prompt token counts unknown, no prefill samples")


async def _request(run: _Run, sweep: str, point: int, prompt: str, counted: int | None,
                   max_tokens: int) -> RequestResult:
    """Send one streamed request and time it (planner.measure.client.stream). Connection refused
    or an overload status before any byte is retried (nothing reached the engine); anything after
    the request went out is recorded, not retried."""
    started = time.perf_counter() - run.t0
    r = await client.stream(run.session, run.gen_url, _payload(run, prompt, max_tokens), timeout_s=run.timeout_s,
                            headers=run.headers(run.gen_url), retry_delays_s=RETRY_DELAYS_S)
    if r.error and r.error.startswith("cannot connect"):
        run.connect_failures += 1
    elif r.status is not None:
        run.connect_failures = 0
    prompt_tokens, src = counted, "tokenize" if counted is not None else "unknown"
    if r.prompt_tokens is not None:
        prompt_tokens, src = r.prompt_tokens, "usage"
    result = RequestResult(
        sweep=sweep, point=point, prompt_tokens=prompt_tokens, prompt_tokens_source=src,
        output_tokens=r.output_tokens, output_tokens_source=r.output_tokens_source,
        ttft_s=r.ttft_s, gaps_s=tuple(r.gaps_s), e2e_s=r.e2e_s, status=r.status,
        error=client.scrub(r.error, run.api_key), attempts=r.attempts, started_s=started,
        token_events=len(r.event_times_s), event_tokens=tuple(r.event_tokens),
    )
    if run.connect_failures >= GIVE_UP_AFTER:
        run.records.append(result)
        raise _ServerGone(f"{run.connect_failures} requests in a row could not connect: {result.error}")
    return result


# ---- sweep points ---------------------------------------------------------------------------
async def _scrape(run: _Run):
    """Parse the server's /metrics, or None (noted once) when there are none."""
    if not run.metrics_ok:
        return None
    import aiohttp

    try:
        status, _, text, _ = await prompts.get_json(run, run.metrics_url, timeout=aiohttp.ClientTimeout(total=min(run.timeout_s, 10.0)))
        if status != 200:
            raise aiohttp.ClientError(f"HTTP {status}")
        scrape = prometheus.parse(text)
        _learn(run, scrape)
        return scrape
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        run.metrics_ok = False
        why = f"{client.redact_url(run.metrics_url)} ({e or type(e).__name__})"
        run.note(f"Prometheus metrics stopped answering at {why}: no server-side times from there on" if run.points
                 else f"no Prometheus metrics at {why}: server-side phase times not recorded")
        return None


def _learn(run: _Run, scrape) -> None:
    """The server's static facts, from the first scrape that has them (vLLM sets its
    cache_config_info gauge a little after it starts answering)."""
    if run.engine is None:
        run.engine = prometheus.detect_engine(scrape)
    if run.kv_capacity_tokens is None:
        run.kv_capacity_tokens = prometheus.kv_capacity_tokens(scrape)
    if run.cache_info is None:
        run.cache_info = prometheus.info_labels(scrape, "cache_config_info")
    if not run.bucket_edges and run.engine:
        run.bucket_edges = prometheus.bucket_edges(scrape, run.engine)


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


def _quantile(values: list[float], q: float) -> float:
    """numpy's linear quantile: the one percentile definition (planner.queueing.samples.Pcts)."""
    import numpy as np

    return float(np.quantile(values, q))


async def _prefill_point(run: _Run, n: int, reps: int, advance) -> None:
    before = await _scrape(run)
    results = []
    for i in range(reps):
        text, counted, k = await prompts.prompt(run, n, seed=f"{run.salt}-prefill-{n}-{i}", exact=True)
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
    # What the engine says its requests waited (exact: a histogram's sum / count) is not prefill.
    queue = server.get("server_queue_mean_s") or 0.0
    net = [max(t - queue, 1e-6) for t in ttft]
    run.samples.append({
        "phase": "prefill", "batch": 1, "prompt_len": int(statistics.median(r.prompt_tokens for r in ok)),
        "context_len": 0, "seconds": statistics.median(net), "p10_s": _quantile(net, 0.1), "p90_s": _quantile(net, 0.9),
        "reps": len(ok), "errors": len(results) - len(ok), "target_prompt_len": n,
        "prompt_tokens_source": ok[0].prompt_tokens_source, "client_ttft_s": statistics.median(ttft),
        "queue_subtracted_s": queue,
        "source": "client TTFT at concurrency 1 (includes network)" + (", minus the server's mean queue time" if queue else ""),
        **server,
    })


async def _decode_point(run: _Run, c: int, waves: int, input_len: int, output_len: int, advance) -> None:
    before = await _scrape(run)
    results: list[RequestResult] = []
    wall = 0.0
    for w in range(waves):
        # Prompts first, so counting their tokens never overlaps the timed wave.
        batch = [await prompts.prompt(run, input_len, seed=f"{run.salt}-decode-{c}-{w}-{i}", exact=True)
                   for i in range(c)]
        t = time.perf_counter()
        wave = await asyncio.gather(*(_request(run, "decode", c, p, counted, output_len) for p, counted, _ in batch))
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
    # (RequestResult.step_gaps_s), not counted as zero gaps. With token ids in each chunk the
    # tokens per chunk are known, so every request streamed token by token in that sense.
    stepwise = [r for r in ok if r.output_tokens_source in ("token_ids", "logprobs") or r.token_events == r.output_tokens]
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
        "seconds": statistics.median(gaps), "p10_s": _quantile(gaps, 0.1), "p90_s": _quantile(gaps, 0.9),
        "reps": len(gaps), "requests": len(results), "errors": errors,
        "estimator": "median inter-token gap" if per_token else "median time per output token",
        "output_tok_per_s": out_tokens / wall if wall > 0 else None, **server,
    })
