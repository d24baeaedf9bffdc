"""The OpenAI-compatible API of a 1 prefill + 1 decode server: 50 concurrent streams, bad input,
models, tokenize, health and metrics."""

import json
import re

import pytest

pytest.importorskip("torch")
pytest.importorskip("zmq")
pytest.importorskip("aiohttp")

from planner.runtime import start_server  # noqa: E402
from planner.measure.client import get, post_json, run_many  # noqa: E402

pytestmark = pytest.mark.e2e  # starts servers or kernels: not in the fast set (-m "not e2e and not fuzz")

MAX_LEN = 96


@pytest.fixture(scope="module")
def server():
    # A KV budget of 160 tokens holds ~5 of the 50 requests at once: the rest must wait, not drop.
    with start_server(model="tiny", mode="disaggregated", prefill_workers=1, decode_workers=1,
                      max_model_len=MAX_LEN, max_seqs=8, kv_budget_tokens=160, max_batch_tokens=256,
                      threads_per_worker=1) as h:
        yield h


def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_fifty_concurrent_streams_all_complete(server):
    payloads = [{"prompt": f"request number {i}: " + "x" * (i % 7), "max_tokens": 4 + i % 5, "temperature": 0.0}
                for i in range(50)]
    results = run_many(server.url, payloads, concurrency=50, timeout_s=120)
    assert [r.error for r in results] == [None] * 50
    assert [len(r.token_ids) for r in results] == [p["max_tokens"] for p in payloads]
    assert all(r.finish_reason == "length" and r.usage["completion_tokens"] == len(r.token_ids) for r in results)
    # identical prompts give identical outputs whatever batch they landed in
    again = run_many(server.url, payloads[:3], concurrency=3)
    assert [r.token_ids for r in again] == [r.token_ids for r in results[:3]]
    status, text = get(server.url + "/metrics")
    assert status == 200
    assert _metric(text, "planner:time_to_first_token_seconds_count") >= 53
    assert _metric(text, "planner:request_success_total", finished_reason="length") >= 53
    # every request's KV crossed: prompt tokens x 2 (K, V) x 6 layers x 4 KV heads x 64 x 4 bytes (fp32)
    prompt_tokens = sum(len(p["prompt"].encode()) for p in payloads + payloads[:3])
    assert _metric(text, "planner:kv_transfer_bytes_total") == prompt_tokens * 12288
    assert _metric(text, "planner:kv_transfer_seconds_count") >= 53
    assert _metric(text, "planner:request_queue_time_seconds_count") >= 53
    assert "planner:kv_cache_usage_perc{" in text and 'worker="decode-0"' in text
    assert re.search(r'planner:inter_token_latency_seconds_bucket\{le="\+Inf",model_name="tiny"\} \d+', text)


def test_non_stream_completion_and_chat(server):
    status, body = post_json(server.url + "/v1/completions", {"model": "tiny", "prompt": "Hello", "max_tokens": 5,
                                                               "temperature": 0})
    assert status == 200 and body["object"] == "text_completion"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    assert body["choices"][0]["finish_reason"] == "length" and body["choices"][0]["text"]
    status, chat = post_json(server.url + "/v1/chat/completions",
                             {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    assert status == 200 and chat["choices"][0]["message"]["role"] == "assistant"
    assert chat["usage"]["completion_tokens"] == 3
    # a stop string cuts the text before it and ends the request early
    full = post_json(server.url + "/v1/completions", {"prompt": "Hello", "max_tokens": 5, "temperature": 0})[1]
    text = full["choices"][0]["text"]
    stop = text.split()[1]
    cut = post_json(server.url + "/v1/completions", {"prompt": "Hello", "max_tokens": 5, "temperature": 0, "stop": stop})[1]
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["text"] == text[: text.index(stop)]


def test_models_tokenize_health(server):
    status, text = get(server.url + "/v1/models")
    assert status == 200 and json.loads(text)["data"][0]["id"] == "tiny"
    status, body = post_json(server.url + "/tokenize", {"prompt": "héllo"})
    assert status == 200 and body["count"] == 6 and body["tokens"][:1] == [104]
    status, text = get(server.url + "/health")
    h = json.loads(text)
    assert status == 200 and h["status"] == "ok" and h["cold_start_s"] > 0
    assert sorted((w["role"], w["state"]) for w in h["workers"]) == [("decode", "ready"), ("prefill", "ready")]
    assert all(w["pid"] > 0 for w in h["workers"])


BAD = [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({"model": "tiny"}, 400, "prompt"),
    ({"prompt": ""}, 400, "prompt"),
    ({"prompt": [1, 2, 10**9]}, 400, "prompt"),
    ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "hi", "max_tokens": -3}, 400, "max_tokens"),
    ({"prompt": "hi", "max_tokens": "5"}, 400, "max_tokens"),
    ({"prompt": "x" * MAX_LEN, "max_tokens": 1}, 400, "max_tokens"),  # prompt longer than the context
    ({"prompt": "hi", "max_tokens": MAX_LEN}, 400, "max_tokens"),
    ({"prompt": "hi", "temperature": -1}, 400, "temperature"),
    ({"prompt": "hi", "top_p": 0}, 400, "top_p"),
    ({"prompt": "hi", "n": 2}, 400, "n"),
    ({"prompt": "hi", "stream": "yes"}, 400, "stream"),
    ({"prompt": "hi", "model": "gpt-4"}, 404, "model"),
]


@pytest.mark.parametrize("body,status,param", BAD)
def test_bad_completion_input(server, body, status, param):
    got, err = post_json(server.url + "/v1/completions", body)
    assert got == status
    assert set(err["error"]) >= {"message", "type", "param", "code"} and err["error"]["message"]
    assert err["error"]["param"] == param


def test_bad_chat_input_and_unknown_route(server):
    for body in [{"model": "tiny"}, {"messages": []}, {"messages": [{"role": "user"}]}, {"messages": "hi"}]:
        got, err = post_json(server.url + "/v1/chat/completions", body)
        assert got == 400 and err["error"]["param"] == "messages", body
    got, err = post_json(server.url + "/v1/nothing", {})
    assert got == 404 and "error" in err
    # the server still serves after all of that
    assert post_json(server.url + "/v1/completions", {"prompt": "ok", "max_tokens": 2})[0] == 200


def test_client_disconnect_frees_the_sequence(server):
    import asyncio

    import aiohttp

    async def go():
        async with aiohttp.ClientSession() as s:
            resp = await s.post(server.url + "/v1/completions",
                                json={"prompt": "walk away", "max_tokens": MAX_LEN - 20, "stream": True})
            await resp.content.readuntil(b"\n\n")  # the first token arrived
            resp.close()  # hang up mid-stream

    def successes():
        return _metric(get(server.url + "/metrics")[1], "planner:request_success_total")

    def counter(name):
        return _metric(get(server.url + "/metrics")[1], name)

    before = successes()
    cancelled, failed = counter("planner:request_cancelled_total"), counter("planner:request_failure_total")
    asyncio.run(go())
    import time

    # Uncancelled, the request would run to max_tokens within ~1 s and count a success; so look
    # only after 2 s (worker stats lag 0.25 s), once the decode worker is idle.
    t0 = time.monotonic()
    while time.monotonic() < t0 + 20:
        time.sleep(0.1)
        decode = [w for w in server.health()["workers"] if w["role"] == "decode"][0]
        if time.monotonic() > t0 + 2 and decode["running"] == 0 and decode["kv_cache_usage"] == 0:
            break
    assert decode["running"] == 0 and decode["kv_cache_usage"] == 0, decode
    # cancelled, not run to its max_tokens: counted as cancelled, neither success nor failure
    assert successes() == before
    assert counter("planner:request_cancelled_total") == cancelled + 1
    assert counter("planner:request_failure_total") == failed
    # logged in one line, without a traceback
    log = server.log_text()
    assert len([line for line in log.splitlines() if "client disconnected" in line]) == 1, log[-3000:]
    assert "Traceback" not in log and "ClientConnectionResetError" not in log
