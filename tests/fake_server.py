"""A fake OpenAI-compatible server with known timings: the answer key for the endpoint profiler.

It streams completions (and chat completions) the way vLLM does, but its speed is a formula:

    TTFT       = queue wait + prefill_base_s + prefill_s_per_token * prompt_tokens
    token gap  = decode_base_s + decode_s_per_seq * (requests decoding now)

so a test can check that `planner profile endpoint` recovers these numbers. It also exposes what a
profiler meets in the wild: vLLM-style `/metrics` histograms (or SGLang names, or none),
`/tokenize` in the vLLM or llama.cpp dialect (or none), an optional API key, and injected faults
(streams cut mid-way, error events, HTTP 500s), and chunks whose text is "" (a token that decodes
to nothing yet, as vLLM streams them), with the token ids when `return_token_ids` asks. Its tokenizer is a toy: BOS + one token per 4
characters of each whitespace-separated word, so prompt building has to re-tokenize to be exact.

Run one by hand: `python -m fake_server --port 8000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web

#: vLLM's default latency buckets (seconds), so quantiles behave like a real server's.
BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


@dataclass(frozen=True)
class FakeServerConfig:
    """Timings in seconds; `metrics_prefix` None -> no /metrics; `tokenize` one of "vllm",
    "llama.cpp" or None (no /tokenize); `fault` hits every `fault_every`-th completion request
    (0: never): "cut" (connection dropped after 2 tokens), "error_event" (an error frame after 2
    tokens), "stall" (silence after 2 tokens, until the client gives up), "http_500", "http_503"."""

    model: str = "fake-model"
    prefill_base_s: float = 0.002
    prefill_s_per_token: float = 0.0001
    decode_base_s: float = 0.004
    decode_s_per_seq: float = 0.001
    max_batch: int = 256
    max_model_len: int = 8192
    metrics_prefix: str | None = "vllm:"
    tokenize: str | None = "vllm"
    usage: bool = True
    api_key: str | None = None
    fault: str | None = None
    fault_every: int = 0
    kv_blocks: int = 1024
    block_size: int = 16
    empty_text_every: int = 3  # like vLLM: every n-th token streams as a chunk with text "" (0: never)
    root: str | None = None  # /v1/models `root` (vLLM: the path it serves from)
    token_ids: bool = True  # honour `return_token_ids` (False: a server that ignores it)
    info_after: int = 0  # cache_config_info appears only once this many completions were served

    def prefill_s(self, prompt_tokens: int) -> float:
        """Prefill time (s) of one prompt of `prompt_tokens` tokens."""
        return self.prefill_base_s + self.prefill_s_per_token * prompt_tokens

    def decode_step_s(self, batch: int) -> float:
        """Decode step time (s) with `batch` sequences decoding."""
        return self.decode_base_s + self.decode_s_per_seq * batch


def fake_tokenize(text: str) -> list[int]:
    """BOS (id 1) + ceil(len(word)/4) ids per whitespace-separated word."""
    ids = [1]
    for word in text.split():
        for i in range(0, len(word), 4):
            ids.append(2 + sum(map(ord, word[i : i + 4])) % 30000)
    return ids


def chat_text(messages: list) -> str:
    """The toy chat template: one `<|role|> content` line per message."""
    return "\n".join(f"<|{m.get('role', 'user')}|> {m.get('content', '')}" for m in messages)


@dataclass
class _Hist:
    counts: list = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, x: float) -> None:
        i = next((k for k, b in enumerate(BUCKETS_S) if x <= b), len(BUCKETS_S))
        self.counts[i] += 1
        self.total += x
        self.n += 1

    def render(self, name: str, label: str) -> list[str]:
        lines = [f"# HELP {name} fake", f"# TYPE {name} histogram"]
        cum = 0
        for b, c in zip(list(BUCKETS_S) + [math.inf], self.counts):
            cum += c
            le = "+Inf" if math.isinf(b) else repr(b)
            lines.append(f'{name}_bucket{{le="{le}",{label}}} {float(cum)}')
        lines += [f"{name}_sum{{{label}}} {self.total!r}", f"{name}_count{{{label}}} {float(self.n)}"]
        return lines


class FakeServer:
    """The aiohttp app and its state. Use `start_fake_server` to run it on a thread."""

    def __init__(self, cfg: FakeServerConfig):
        self.cfg = cfg
        self.hists = {k: _Hist() for k in ("ttft", "itl", "queue", "prefill", "decode", "e2e")}
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.success_total = 0
        self.requests = 0
        self.decoding = 0
        self.waiting = 0
        self.kv_tokens = 0
        self.auth_headers_seen: list[str] = []
        self._slots: asyncio.Semaphore | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/version", self.version)
        app.router.add_get("/health", self.version)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.completions)
        if self.cfg.tokenize:
            app.router.add_post("/tokenize", self.tokenize)
        if self.cfg.metrics_prefix:
            app.router.add_get("/metrics", self.metrics)
        if self.cfg.metrics_prefix == "sglang:":
            app.router.add_get("/get_server_info", self.server_info)
        return app

    async def server_info(self, request):
        """A few of SGLang's server arguments, as its /get_server_info lists them."""
        return web.json_response({"model_path": self.cfg.model, "tp_size": 2, "chunked_prefill_size": 8192,
                                  "max_running_requests": 128, "page_size": 1, "disable_radix_cache": False,
                                  "schedule_policy": "fcfs", "version": "fake-sglang-0.1"})

    @web.middleware
    async def _auth(self, request, handler):
        got = request.headers.get("Authorization", "")
        self.auth_headers_seen.append(got)
        if self.cfg.api_key and request.path.startswith("/v1") and got != f"Bearer {self.cfg.api_key}":
            return _error(401, "invalid API key")
        return await handler(request)

    async def version(self, request):
        return web.json_response({"version": "fake-0.1"})

    async def models(self, request):
        card = {"id": self.cfg.model, "object": "model", "max_model_len": self.cfg.max_model_len,
                "owned_by": "vllm", "root": self.cfg.root or self.cfg.model}
        return web.json_response({"object": "list", "data": [card]})

    async def tokenize(self, request):
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body is not JSON")
        if self.cfg.tokenize == "vllm":
            if "messages" in body:
                text = chat_text(body["messages"])
            elif isinstance(body.get("prompt"), str):
                text = body["prompt"]
            else:
                return _error(400, "field 'prompt' required")
            ids = fake_tokenize(text)
            return web.json_response({"count": len(ids), "tokens": ids, "max_model_len": self.cfg.max_model_len})
        if not isinstance(body.get("content"), str):
            return _error(400, "field 'content' required")
        return web.json_response({"tokens": fake_tokenize(body["content"])})

    async def metrics(self, request):
        p, label = self.cfg.metrics_prefix, f'model_name="{self.cfg.model}"'
        sglang = p == "sglang:"
        names = {
            "ttft": "time_to_first_token_seconds",
            "itl": "inter_token_latency_seconds",
            "queue": "queue_time_seconds" if sglang else "request_queue_time_seconds",
            "prefill": None if sglang else "request_prefill_time_seconds",
            "decode": None if sglang else "request_decode_time_seconds",
            "e2e": "e2e_request_latency_seconds",
        }
        lines = []
        for key, short in names.items():
            if short:
                lines += self.hists[key].render(p + short, label)
        capacity = self.cfg.kv_blocks * self.cfg.block_size
        counters = (("prompt_tokens", self.prompt_tokens_total), ("generation_tokens", self.generation_tokens_total),
                    ("request_success", self.success_total))
        for name, v in counters:
            lines += [f"# TYPE {p}{name}_total counter", f"{p}{name}_total{{{label}}} {float(v)}"]
        lines += [f"# TYPE {p}num_requests_running gauge",
                  f"{p}num_requests_running{{{label}}} {float(self.decoding)}"]
        if sglang:
            lines += [f"sglang:token_usage{{{label}}} {self.kv_tokens / capacity!r}",
                      f"sglang:max_total_num_tokens{{{label}}} {float(capacity)}"]
        else:
            lines += [f"{p}kv_cache_usage_perc{{{label}}} {self.kv_tokens / capacity!r}"]
            if self.success_total >= self.cfg.info_after:
                lines += [f'{p}cache_config_info{{block_size="{self.cfg.block_size}",enable_prefix_caching="True",'
                          f'engine="0",num_gpu_blocks="{self.cfg.kv_blocks}"}} 1.0']
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def completions(self, request):
        cfg = self.cfg
        chat = request.path.endswith("/chat/completions")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body is not JSON")
        if body.get("model") not in (None, cfg.model):
            return _error(404, f"The model `{body.get('model')}` does not exist.")
        if chat:
            text = chat_text(body.get("messages") or [])
        else:
            prompt = body.get("prompt", "")
            text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
        n_prompt = len(fake_tokenize(text))
        max_tokens = int(body.get("max_tokens") or 16)
        if n_prompt + max_tokens > cfg.max_model_len:
            return _error(400, f"prompt ({n_prompt}) + max_tokens ({max_tokens}) > max_model_len "
                               f"({cfg.max_model_len})")
        self.requests += 1
        fault = cfg.fault if cfg.fault_every and self.requests % cfg.fault_every == 0 else None
        if fault in ("http_500", "http_503"):
            return _error(int(fault[-3:]), "injected failure")
        if self._slots is None:
            self._slots = asyncio.Semaphore(cfg.max_batch)
        arrive = time.perf_counter()
        self.waiting += 1
        async with self._slots:
            self.waiting -= 1
            t0 = time.perf_counter()
            self.hists["queue"].observe(t0 - arrive)
            await asyncio.sleep(cfg.prefill_s(n_prompt))
            t1 = time.perf_counter()
            self.hists["prefill"].observe(t1 - t0)
            self.kv_tokens += n_prompt
            try:
                return await self._generate(request, body, chat, n_prompt, max_tokens, arrive, t1, fault)
            finally:
                self.kv_tokens -= n_prompt

    async def _generate(self, request, body, chat, n_prompt, max_tokens, arrive, t_first, fault):
        cfg = self.cfg
        stream = bool(body.get("stream"))
        usage_wanted = cfg.usage and bool((body.get("stream_options") or {}).get("include_usage"))
        rid = f"cmpl-{self.requests}"
        obj = "chat.completion.chunk" if chat else "text_completion"
        resp = None
        if stream:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await resp.prepare(request)

        async def send(doc) -> None:
            if resp is not None:
                await resp.write(b"data: " + json.dumps(doc).encode() + b"\n\n")

        ids_wanted = cfg.token_ids and bool(body.get("return_token_ids"))

        def chunk(i: int, finish=None) -> dict:
            empty = cfg.empty_text_every and i % cfg.empty_text_every == cfg.empty_text_every - 1
            text = "" if empty else f" tok{i}"
            choice = {"index": 0, "finish_reason": finish}
            if ids_wanted:
                choice["token_ids"] = [] if finish is not None else [100 + i]
            if chat:
                choice["delta"] = {"content": text} if finish is None else {}
            else:
                choice["text"] = text if finish is None else ""
            return {"id": rid, "object": obj, "model": cfg.model, "choices": [choice]}

        if chat:
            await send({"id": rid, "object": obj, "model": cfg.model,
                        "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        await send(chunk(0))
        self.hists["ttft"].observe(time.perf_counter() - arrive)
        self.decoding += 1
        last = due = time.perf_counter()
        produced = 1
        try:
            for i in range(1, max_tokens):
                if fault == "cut" and i == 2:
                    request.transport.close()  # the connection drops mid-stream, no [DONE]
                    return resp
                if fault == "stall" and i == 2:
                    # Silence until the client gives up (aiohttp does not cancel handlers on disconnect).
                    while request.transport is not None and not request.transport.is_closing():
                        await asyncio.sleep(0.01)
                    return resp
                if fault == "error_event" and i == 2:
                    err = {"message": "injected engine failure", "type": "InternalServerError", "code": 500}
                    await send({"error": err})
                    await resp.write(b"data: [DONE]\n\n")
                    return resp
                # Tokens are due on a schedule, not after a sleep: a late wake-up (busy CPU) makes
                # this gap longer and the next one shorter, so the typical gap stays the step.
                due += cfg.decode_step_s(self.decoding)
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                await send(chunk(i))
                now = time.perf_counter()
                self.hists["itl"].observe(now - last)
                last = now
                produced += 1
                self.kv_tokens += 1
        finally:
            self.decoding -= 1
            self.kv_tokens -= produced - 1
        end = time.perf_counter()
        self.hists["decode"].observe(end - t_first)
        self.hists["e2e"].observe(end - arrive)
        self.prompt_tokens_total += n_prompt
        self.generation_tokens_total += produced
        self.success_total += 1
        usage = {"prompt_tokens": n_prompt, "completion_tokens": produced, "total_tokens": n_prompt + produced}
        if resp is None:
            text = "".join(f" tok{i}" for i in range(produced))
            choice = {"index": 0, "finish_reason": "length"}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            return web.json_response({"id": rid, "object": obj.replace(".chunk", ""), "model": cfg.model,
                                      "choices": [choice], "usage": usage if cfg.usage else None})
        await send(chunk(produced, finish="length"))
        if usage_wanted:
            await send({"id": rid, "object": obj, "model": cfg.model, "choices": [], "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _error(status: int, message: str) -> web.Response:
    err = {"message": message, "type": "BadRequestError", "code": status}
    return web.json_response({"error": err}, status=status)


class RunningFakeServer:
    """A fake server on its own thread and event loop; `.url` is its base URL, `.stop()` ends it."""

    def __init__(self, cfg: FakeServerConfig, host: str = "127.0.0.1", port: int = 0, keepalive_s: float = 75.0):
        self.server = FakeServer(cfg)
        self._keepalive_s = keepalive_s
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._error: BaseException | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, args=(host, port), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start in 10 s")
        if self._error is not None:
            raise self._error
        self.url = f"http://{host}:{self.port}"

    def _run(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self._loop)

        async def start():
            self._runner = web.AppRunner(self.server.app(), access_log=None, shutdown_timeout=1.0,
                                         keepalive_timeout=self._keepalive_s)
            await self._runner.setup()
            site = web.TCPSite(self._runner, host, port)
            await site.start()
            self.port = self._runner.addresses[0][1]

        try:
            self._loop.run_until_complete(start())
        except BaseException as e:  # surfaced in the constructor
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> "RunningFakeServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_fake_server(cfg: FakeServerConfig | None = None, host: str = "127.0.0.1",
                      port: int = 0, keepalive_s: float = 75.0) -> RunningFakeServer:
    """Start a fake server on a background thread (port 0: a free port); use as a context manager.
    `keepalive_s`: how long it keeps an idle connection open (uvicorn, which serves vLLM: 5 s)."""
    return RunningFakeServer(cfg or FakeServerConfig(), host, port, keepalive_s)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--model", default="fake-model")
    ap.add_argument("--prefill-ms-per-token", type=float, default=0.1)
    ap.add_argument("--decode-ms", type=float, default=4.0, help="decode step at batch 0 (ms)")
    ap.add_argument("--decode-ms-per-seq", type=float, default=1.0)
    ap.add_argument("--metrics-prefix", default="vllm:", help="'' for no /metrics")
    ap.add_argument("--tokenize", default="vllm", choices=["vllm", "llama.cpp", "none"])
    a = ap.parse_args(argv)
    cfg = FakeServerConfig(model=a.model, prefill_s_per_token=a.prefill_ms_per_token / 1e3,
                           decode_base_s=a.decode_ms / 1e3, decode_s_per_seq=a.decode_ms_per_seq / 1e3,
                           metrics_prefix=a.metrics_prefix or None,
                           tokenize=None if a.tokenize == "none" else a.tokenize)
    web.run_app(FakeServer(cfg).app(), host=a.host, port=a.port, access_log=None)


if __name__ == "__main__":
    main()
