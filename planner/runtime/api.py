"""The OpenAI-compatible HTTP API (aiohttp): completions, chat, models, tokenize, health, metrics.

Requests are checked here, once, and anything malformed gets a 400 with an OpenAI-style body
{"error": {"message", "type", "param", "code"}}; an unknown model name gets 404, no ready worker
503, a worker that dies mid-request 500 (or an "error" event on a stream). Every other 4xx/5xx
gets the same JSON body too: aiohttp's own (404 route, 405, 413 body too large) are rewritten by
a middleware, and a bug is logged with its traceback and answered as a JSON 500. A client that
disconnects cancels its requests (counted in planner:request_cancelled_total, one log line).
Streams are SSE
("data: {...}\\n\\n", "data: [DONE]") and always end with a usage chunk (choices: []).
Extension: "return_token_ids": true adds each choice's generated `token_ids`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time

from aiohttp import web

from planner.runtime.router import Request, Unavailable
from planner.runtime.tokenizer import chat_prompt

log = logging.getLogger("planner.serve")
MAX_BODY_BYTES = 32 * 1024 * 1024
# Options this server does not implement, accepted only at a value that changes nothing, so no
# client silently gets other sampling than it asked for (None, i.e. absent, is always fine).
NO_OP_VALUES = {"echo": (False,), "logprobs": (False, 0), "top_logprobs": (0,), "tools": ([],), "suffix": ("",),
                "presence_penalty": (0,), "frequency_penalty": (0,), "repetition_penalty": (1,),
                "top_k": (-1, 0), "min_p": (0,), "logit_bias": ({},), "best_of": (1,)}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, type_: str | None = None, code=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or ("service_unavailable" if status == 503 else
                              "server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _show(v, limit: int = 200) -> str:
    """repr(v), cut to `limit` characters: an error message never echoes a whole huge value."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit] + f"... ({len(r)} characters)"


def _text(s: str, param: str) -> str:
    """`s` if UTF-8 can encode it. JSON may carry lone surrogates ("\\ud800"), which Python
    strings hold but no tokenizer can encode."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(400, f"'{param}' is not valid Unicode: lone surrogate U+{ord(s[e.start]):04X} "
                            f"at character {e.start}", param) from None
    return s


def _number(body: dict, key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise ApiError(400, f"'{key}' must be a number, got {_show(v)}", key)
    if isinstance(v, float) and not math.isfinite(v):  # json.loads takes NaN and Infinity
        raise ApiError(400, f"'{key}' must be a finite number, got {v}", key)
    if v < low or v > high or (low_open and v == low):
        raise ApiError(400, f"'{key}' must be in {'(' if low_open else '['}{low}, {high}], got {v}", key)
    return float(v)


class Api:
    """Handlers bound to a running Server (router, tokenizer, config, state)."""

    def __init__(self, server):
        self.server = server
        self.cfg = server.cfg
        self.tok = server.tokenizer
        self.router = server.router
        self.created = int(time.time())

    # ---- parsing ----------------------------------------------------------------------------------
    async def _json(self, request: web.Request) -> dict:
        try:
            body = await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise ApiError(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"request body must be a JSON object, got {type(body).__name__}")
        return body

    def _check_model(self, body: dict) -> None:
        model = body.get("model")
        if model is not None and model != self.cfg.name:
            raise ApiError(404, f"The model `{str(model)[:200]}` does not exist. This server serves `{self.cfg.name}`.",
                           "model", code="model_not_found")

    def _prompts(self, body: dict) -> list[list[int]]:
        if "prompt" not in body:
            raise ApiError(400, "missing required field 'prompt'", "prompt")
        p = body["prompt"]
        if isinstance(p, str):
            items = [p]
        elif isinstance(p, list) and p and all(_is_int(t) for t in p):
            items = [p]
        elif isinstance(p, list) and p and all(isinstance(x, str) or (isinstance(x, list) and all(_is_int(t) for t in x)) for x in p):
            items = p
        else:
            raise ApiError(400, "'prompt' must be a non-empty string, list of strings, or list of token ids", "prompt")
        out = []
        for x in items:
            ids = self.tok.encode(_text(x, "prompt")) if isinstance(x, str) else list(x)
            if not ids:
                raise ApiError(400, "'prompt' must not be empty", "prompt")
            bad = [t for t in ids if t < 0 or t >= self.server.spec.vocab]
            if bad:
                raise ApiError(400, f"token id {bad[0]} is outside the vocabulary (0..{self.server.spec.vocab - 1})", "prompt")
            out.append(ids)
        return out

    def _messages(self, body: dict) -> list[int]:
        msgs = body.get("messages")
        if msgs is None:
            raise ApiError(400, "missing required field 'messages'", "messages")
        if not isinstance(msgs, list) or not msgs:
            raise ApiError(400, "'messages' must be a non-empty list", "messages")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), (str, list)):
                raise ApiError(400, f"messages[{i}] must be an object with a string 'role' and a 'content'", "messages")
            _text(m["role"], "messages")
            parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            for j, part in enumerate(parts):
                if not isinstance(part, dict) or part.get("type", "text") != "text" or not isinstance(part.get("text"), str):
                    raise ApiError(400, f"messages[{i}].content[{j}] must be a text part {{\"type\": \"text\", "
                                        f"\"text\": string}} (this server reads text only), got {_show(part)}", "messages")
                _text(part["text"], "messages")
        return self.tok.encode(chat_prompt(msgs))

    def _params(self, body: dict, prompt_len: int, chat: bool) -> dict:
        limit = min(self.cfg.max_model_len, self.cfg.kv_budget_tokens)
        key = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
        mt = body.get(key)
        if mt is None:
            mt = max(1, limit - prompt_len) if chat else 16
        elif not _is_int(mt) or mt <= 0:
            raise ApiError(400, f"'{key}' must be a positive integer, got {_show(mt)}", key)
        if prompt_len + mt > limit:
            raise ApiError(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                                f"{prompt_len + mt} tokens ({prompt_len} in the prompt, {mt} in the completion). "
                                "Please reduce the length of the prompt or the completion.", key)
        n = body.get("n", 1)
        if n != 1 or isinstance(n, bool):
            raise ApiError(400, f"'n' must be 1 (got {_show(n)}): this server returns one choice per prompt", "n")
        for key, no_op in NO_OP_VALUES.items():
            v = body.get(key)
            if v is not None and not any(isinstance(v, bool) == isinstance(ok, bool) and v == ok for ok in no_op):
                allowed = " or ".join(json.dumps(ok) for ok in no_op)
                raise ApiError(400, f"'{key}' is not supported by this server (only {allowed}), got {_show(v)}", key)
        stop = body.get("stop")
        if stop is None:
            stop = []
        elif isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
            raise ApiError(400, "'stop' must be a string or a list of at most 4 non-empty strings", "stop")
        for x in stop:
            _text(x, "stop")
        seed = body.get("seed")
        if seed is not None and not _is_int(seed):
            raise ApiError(400, f"'seed' must be an integer, got {_show(seed)}", "seed")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiError(400, f"'stream' must be a boolean, got {_show(stream)}", "stream")
        return {
            "max_tokens": int(mt),
            "temperature": _number(body, "temperature", 1.0, 0.0, 2.0),
            "top_p": _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
            "seed": int(seed) if seed is not None else int.from_bytes(os.urandom(4), "little"),
            "stop": stop,
            "stream": stream,
            "token_ids": bool(body.get("return_token_ids", False)),
        }

    # ---- running ----------------------------------------------------------------------------------
    async def _start(self, prompts: list[list[int]], p: dict, prefix: str) -> list[Request]:
        if self.server.state != "serving":
            raise ApiError(503, f"server is {self.server.state}")
        reqs = []
        try:
            for ids in prompts:
                req = Request(id=self.router.new_id(prefix), prompt=ids, max_tokens=p["max_tokens"],
                              temperature=p["temperature"], top_p=p["top_p"], seed=p["seed"])
                await self.router.submit(req)
                reqs.append(req)
        except Unavailable as e:
            for r in reqs:
                await self.router.cancel(r)
            raise ApiError(503, str(e)) from None
        return reqs

    async def _outputs(self, req: Request, stop: list[str]):
        """Yield (text delta, token id or None, finish reason or None); raise ApiError(500) when
        a worker fails. Text that might begin a stop string is held back until it cannot."""
        stream = self.tok.stream()
        text, sent = "", 0
        while True:
            kind, tok, finish = await req.events.get()
            if kind == "error":
                raise ApiError(500, tok, type_="server_error")
            text += stream.push(tok)
            if finish:
                text += stream.flush()
            hit = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
            if hit >= 0:
                yield text[sent:hit], tok, "stop"
                if not finish:
                    await self.router.cancel(req, finished_reason="stop")
                return
            hold = 0 if finish else max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
            end = len(text) - hold
            yield text[sent:end], tok, finish
            sent = end
            if finish:
                return

    async def _collect(self, req: Request, stop: list[str]) -> tuple[str, list[int], str]:
        text, ids, finish = [], [], None
        async for delta, tok, fin in self._outputs(req, stop):
            text.append(delta)
            ids.append(tok)
            finish = fin
        return "".join(text), ids, finish

    async def _run(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body = await self._json(request)
        self._check_model(body)
        prompts = [self._messages(body)] if chat else self._prompts(body)
        params = [self._params(body, len(ids), chat) for ids in prompts][0]
        for ids in prompts[1:]:
            self._params(body, len(ids), chat)
        kind = "chatcmpl" if chat else "cmpl"
        reqs = await self._start(prompts, params, kind)
        rid = reqs[0].id
        try:
            if params["stream"]:
                return await self._stream(request, reqs, params, chat, rid)
            results = await asyncio.gather(*(self._collect(r, params["stop"]) for r in reqs))
        except asyncio.CancelledError:  # the client hung up: aiohttp cancels its handler
            await self._client_left(reqs)
            raise
        finally:
            for r in reqs:
                await self.router.cancel(r)
        choices = []
        for i, (text, ids, finish) in enumerate(results):
            c = ({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": finish}
                 if chat else {"index": i, "text": text, "logprobs": None, "finish_reason": finish})
            if params["token_ids"]:
                c["token_ids"] = ids
            choices.append(c)
        return web.json_response({
            "id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": self.cfg.name, "choices": choices, "usage": self._usage(reqs, [len(ids) for _, ids, _ in results]),
        })

    @staticmethod
    def _usage(reqs, completion_counts) -> dict:
        prompt = sum(len(r.prompt) for r in reqs)
        completion = sum(completion_counts)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def _stream(self, request, reqs, params, chat, rid) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(i, delta, finish, ids=None):
            c = ({"index": i, "delta": delta, "logprobs": None, "finish_reason": finish} if chat
                 else {"index": i, "text": delta, "logprobs": None, "finish_reason": finish})
            if ids is not None:
                c["token_ids"] = ids
            return {"id": rid, "object": obj, "created": created, "model": self.cfg.name, "choices": [c]}

        async def write(payload) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await resp.write(f"data: {data}\n\n".encode())

        merged: asyncio.Queue = asyncio.Queue()
        counts = [0] * len(reqs)

        async def pump(i, req):
            try:
                async for item in self._outputs(req, params["stop"]):
                    await merged.put((i, item))
            except ApiError as e:
                await merged.put((i, e))
            await merged.put((i, None))

        tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(reqs)]
        try:
            if chat:
                await write(chunk(0, {"role": "assistant", "content": ""}, None))
            open_ = len(reqs)
            while open_:
                i, item = await merged.get()
                if item is None:
                    open_ -= 1
                    continue
                if isinstance(item, ApiError):
                    await write(item.body())
                    continue
                delta, tok, finish = item
                counts[i] += 1
                ids = [tok] if params["token_ids"] else None
                if chat:
                    await write(chunk(i, {"content": delta} if delta or not finish else {}, finish, ids))
                else:
                    await write(chunk(i, delta, finish, ids))
            await write({"id": rid, "object": obj, "created": created, "model": self.cfg.name, "choices": [],
                         "usage": self._usage(reqs, counts)})
            await write("[DONE]")
            await resp.write_eof()
        except ConnectionResetError:  # the client hung up between two writes
            await self._client_left(reqs)
        finally:
            for t in tasks:
                t.cancel()
        return resp

    async def _client_left(self, reqs: list[Request]) -> None:
        """Count and log (one line, no traceback) the requests a disconnect cut short."""
        live = [r for r in reqs if await self.router.abandon(r)]
        if live:
            why = "server stopped" if self.server.state == "stopped" else "client disconnected"
            log.info("%s: %s cancelled after %d of %d token(s)", why, ", ".join(r.id for r in live),
                     sum(r.next_index for r in live), sum(r.max_tokens for r in live))

    # ---- endpoints --------------------------------------------------------------------------------
    async def completions(self, request):
        return await self._guard(self._run(request, chat=False))

    async def chat(self, request):
        return await self._guard(self._run(request, chat=True))

    async def _guard(self, coro):
        self.server.inflight += 1
        try:
            return await coro
        except ApiError as e:
            return e.response()
        finally:
            self.server.inflight -= 1

    async def models(self, request):
        return web.json_response({"object": "list", "data": [{
            "id": self.cfg.name, "object": "model", "created": self.created, "owned_by": "planner",
            "root": self.cfg.model, "max_model_len": self.cfg.max_model_len}]})

    async def tokenize(self, request):
        try:
            body = await self._json(request)
            if "messages" in body:
                ids = self._messages(body)
            elif isinstance(body.get("prompt"), str):
                ids = self.tok.encode(_text(body["prompt"], "prompt"))
            else:
                raise ApiError(400, "'prompt' (a string) or 'messages' is required", "prompt")
        except ApiError as e:
            return e.response()
        return web.json_response({"count": len(ids), "max_model_len": self.cfg.max_model_len, "tokens": ids})

    async def detokenize(self, request):
        try:
            body = await self._json(request)
            ids = body.get("tokens")
            if not isinstance(ids, list) or not all(_is_int(t) for t in ids):
                raise ApiError(400, "'tokens' must be a list of token ids", "tokens")
            bad = [t for t in ids if not 0 <= t < self.server.spec.vocab]
            if bad:
                raise ApiError(400, f"token id {_show(bad[0])} is outside the vocabulary "
                                    f"(0..{self.server.spec.vocab - 1})", "tokens")
        except ApiError as e:
            return e.response()
        return web.json_response({"prompt": self.tok.decode(ids)})

    async def health(self, request):
        s = self.server
        ok = s.state == "serving" and self.router.can_serve()
        dead = any(w.state == "dead" for w in self.router.workers.values())
        status = s.state if s.state != "serving" else ("degraded" if dead or not ok else "ok")
        body = {"status": status, "mode": self.cfg.mode, "model": self.cfg.name,
                "cold_start_s": s.cold_start_s, "uptime_s": round(time.monotonic() - s.t_start, 3),
                "router": self.router.address, "pid": os.getpid(),
                "workers": [w.public() for w in self.router.workers.values()]}
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(self, request):
        return web.Response(text=self.server.metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Prometheus-Format": "0.0.4"})


def _http_error(request: web.Request, e: web.HTTPException, max_body: int) -> ApiError:
    """aiohttp's own error (plain text) as the API's JSON error."""
    if isinstance(e, web.HTTPNotFound):
        return ApiError(404, f"no route {request.method} {_show(request.path)}")
    if isinstance(e, web.HTTPMethodNotAllowed):
        return ApiError(405, f"method {request.method} not allowed on {_show(request.path)}")
    if isinstance(e, web.HTTPRequestEntityTooLarge):
        size = f" ({request.content_length} bytes)" if request.content_length else ""
        return ApiError(413, f"request body too large{size}: the limit is {max_body} bytes", code="request_too_large")
    return ApiError(e.status, e.reason or f"HTTP {e.status}")


def make_app(server, max_body_bytes: int = MAX_BODY_BYTES) -> web.Application:
    api = Api(server)

    @web.middleware
    async def errors(request, handler):
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return _http_error(request, e, max_body_bytes).response()
        except ApiError as e:
            return e.response()
        except Exception:  # a bug, not the client's mistake: the traceback goes to the log, JSON to the client
            log.exception("internal error on %s %s", request.method, request.path)
            return ApiError(500, "internal server error (details in the server log)").response()

    app = web.Application(middlewares=[errors], client_max_size=max_body_bytes)
    app.router.add_post("/v1/completions", api.completions)
    app.router.add_post("/v1/chat/completions", api.chat)
    app.router.add_get("/v1/models", api.models)
    app.router.add_post("/tokenize", api.tokenize)
    app.router.add_post("/detokenize", api.detokenize)
    app.router.add_get("/health", api.health)
    app.router.add_get("/metrics", api.metrics)
    return app
