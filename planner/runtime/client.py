"""A small OpenAI-style streaming client for tests, benchmarks and `planner validate` (aiohttp).

`stream_completion` records what a load generator needs per request: the token ids (with
"return_token_ids"), the text, time to first token and every inter-token gap (seconds), the
finish reason, the usage block and any error. No torch.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request


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
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def stream_completion(session, base_url: str, payload: dict, timeout_s: float = 300.0) -> dict:
    """POST a streaming /v1/completions; return {"token_ids", "text", "ttft_s", "gaps_s",
    "finish_reason", "usage", "error", "status", "t_start", "t_end"} (times from time.perf_counter)."""
    import aiohttp

    body = dict(payload, stream=True, return_token_ids=True)
    out = {"token_ids": [], "text": "", "ttft_s": None, "gaps_s": [], "finish_reason": None, "usage": None,
           "error": None, "status": None, "t_start": time.perf_counter(), "t_end": None}
    last = None
    try:
        async with session.post(base_url + "/v1/completions", json=body,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            out["status"] = resp.status
            if resp.status != 200:
                out["error"] = (await resp.json()).get("error", {}).get("message", f"HTTP {resp.status}")
                return out
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n\n" in buf:
                    frame, buf = buf.split(b"\n\n", 1)
                    if not frame.startswith(b"data: "):
                        continue
                    data = frame[6:]
                    if data == b"[DONE]":
                        continue
                    msg = json.loads(data)
                    if "error" in msg:
                        out["error"] = msg["error"].get("message", "error")
                        continue
                    if msg.get("usage"):
                        out["usage"] = msg["usage"]
                    for c in msg.get("choices", []):
                        now = time.perf_counter()
                        ids = c.get("token_ids") or []
                        if ids:
                            if last is None:
                                out["ttft_s"] = now - out["t_start"]
                            else:
                                out["gaps_s"].append(now - last)
                            last = now
                        out["token_ids"] += ids
                        out["text"] += c.get("text", "")
                        if c.get("finish_reason"):
                            out["finish_reason"] = c["finish_reason"]
    except (asyncio.TimeoutError, OSError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    except Exception as e:  # aiohttp.ClientError and friends: record, never lose the rest of a run
        out["error"] = f"{type(e).__name__}: {e}"
    out["t_end"] = time.perf_counter()
    return out


async def _many(base_url: str, payloads: list[dict], concurrency: int, timeout_s: float, arrivals_s=None):
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()

    async def one(i, p):
        if arrivals_s is not None:
            await asyncio.sleep(max(0.0, arrivals_s[i] - (time.perf_counter() - t0)))
        async with sem:
            return await stream_completion(session, base_url, p, timeout_s)

    connector = aiohttp.TCPConnector(limit=max(concurrency, 1) + 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        return await asyncio.gather(*(one(i, p) for i, p in enumerate(payloads)))


def run_many(base_url: str, payloads: list[dict], concurrency: int = 64, timeout_s: float = 300.0,
             arrivals_s: list[float] | None = None) -> list[dict]:
    """Stream every payload (at most `concurrency` at once; optionally each starting at its
    arrival time in seconds from now) and return the results in payload order."""
    return asyncio.run(_many(base_url, payloads, concurrency, timeout_s, arrivals_s))
