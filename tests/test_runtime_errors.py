"""The API's error answers, in process (no workers): every 4xx/5xx is an OpenAI-style JSON body.

The server stub is "starting", so a request that passes every check gets a JSON 503 instead of
reaching a worker; everything else must be a 4xx naming the bad field. Plus a hypothesis fuzz:
bodies built from the API's own field names and nasty JSON values never get a 500 or plain text.
"""

import asyncio
import json
import logging
from types import SimpleNamespace

import pytest

pytest.importorskip("aiohttp")

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from planner.runtime.api import make_app  # noqa: E402
from planner.runtime.config import make_config  # noqa: E402
from planner.runtime.metrics import RouterMetrics  # noqa: E402
from planner.runtime.tokenizer import ByteTokenizer  # noqa: E402
from planner.specs.models import resolve_model  # noqa: E402

MAX_BODY = 4096


def _server(tokenizer=None):
    cfg = make_config(model="tiny", max_model_len=96, max_seqs=4)
    spec = resolve_model("tiny")
    router = SimpleNamespace(address="tcp://127.0.0.1:1", workers={}, can_serve=lambda: False)
    return SimpleNamespace(cfg=cfg, spec=spec, tokenizer=tokenizer or ByteTokenizer(spec.vocab), router=router,
                           state="starting", inflight=0, cold_start_s=None, t_start=0.0,
                           metrics=RouterMetrics(cfg.name))


class Client:
    """An in-process aiohttp test client on its own event loop, usable from sync tests."""

    def __init__(self, server=None):
        self.loop = asyncio.new_event_loop()
        self.client = TestClient(TestServer(make_app(server or _server(), max_body_bytes=MAX_BODY)), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())

    def request(self, method: str, path: str, data: bytes | None = None) -> tuple[int, str, bytes]:
        async def go():
            resp = await self.client.request(method, path, data=data, headers={"Content-Type": "application/json"})
            return resp.status, resp.content_type, await resp.read()

        return self.loop.run_until_complete(go())

    def close(self):
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def client():
    c = Client()
    yield c
    c.close()


def _json_error(status: int, ctype: str, raw: bytes) -> dict:
    assert ctype == "application/json", (status, ctype, raw[:200])
    err = json.loads(raw)["error"]
    assert set(err) >= {"message", "type", "code"} and isinstance(err["message"], str) and err["message"], err
    assert len(err["message"]) < 600, err["message"]  # never echoes a whole huge value
    return err


CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
BAD = [
    # (path, raw body, status, param)
    (CMPL, rb'{"prompt": "\ud800", "max_tokens": 2}', 400, "prompt"),
    (CMPL, rb'{"prompt": ["fine", "bad \udfff"], "max_tokens": 2}', 400, "prompt"),
    (CHAT, rb'{"messages": [{"role": "user", "content": [{"text": 5}]}]}', 400, "messages"),
    (CHAT, rb'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}', 400, "messages"),
    (CHAT, rb'{"messages": [{"role": "user", "content": ["just a string"]}]}', 400, "messages"),
    (CHAT, rb'{"messages": [{"role": "user", "content": "\ud83d"}]}', 400, "messages"),
    (CHAT, rb'{"messages": [{"role": "\udc00", "content": "hi"}]}', 400, "messages"),
    ("/detokenize", b'{"tokens": [-1]}', 400, "tokens"),
    ("/detokenize", b'{"tokens": [32000]}', 400, "tokens"),
    ("/detokenize", b'{"tokens": [1, 100000000000000000000000000000]}', 400, "tokens"),
    ("/tokenize", rb'{"prompt": "\ud800"}', 400, "prompt"),
    (CMPL, b'{"prompt": "hi", "temperature": NaN}', 400, "temperature"),
    (CMPL, b'{"prompt": "hi", "temperature": Infinity}', 400, "temperature"),
    (CMPL, b'{"prompt": "hi", "temperature": -Infinity}', 400, "temperature"),
    (CMPL, b'{"prompt": "hi", "temperature": 1' + b"0" * 400 + b'}', 400, "temperature"),  # an int too big for a float
    (CMPL, b'{"prompt": "hi", "top_p": NaN}', 400, "top_p"),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}', 400, "top_p"),
    (CMPL, b'{"prompt": "hi", "presence_penalty": NaN}', 400, "presence_penalty"),
    (CMPL, b'{"prompt": "hi", "frequency_penalty": 0.5}', 400, "frequency_penalty"),  # not implemented: refused
    (CMPL, b'{"prompt": "hi", "top_k": 5}', 400, "top_k"),
    (CMPL, b'{"prompt": "hi", "logprobs": true}', 400, "logprobs"),
    (CMPL, b'{"prompt": "hi", "n": NaN}', 400, "n"),
    (CMPL, b'{"prompt": "hi", "n": true}', 400, "n"),
    (CMPL, b'{"prompt": "hi", "seed": NaN}', 400, "seed"),
    (CMPL, b'{"prompt": "hi", "max_tokens": Infinity}', 400, "max_tokens"),
    (CMPL, rb'{"prompt": "hi", "stop": "\ud800"}', 400, "stop"),
    (CMPL, b'{"prompt": "hi", "model": "' + b"m" * 3000 + b'"}', 404, "model"),
]


@pytest.mark.parametrize("path,body,status,param", BAD)
def test_bad_requests_get_json_4xx(client, path, body, status, param):
    got, ctype, raw = client.request("POST", path, body)
    assert got == status, raw[:300]
    assert _json_error(got, ctype, raw)["param"] == param


def test_no_op_values_of_unsupported_options_are_accepted(client):
    body = {"prompt": "hi", "presence_penalty": 0, "frequency_penalty": 0.0, "top_k": -1, "repetition_penalty": 1.0,
            "logprobs": None, "logit_bias": {}, "temperature": 0.5, "top_p": 0.9, "seed": -3}
    got, ctype, raw = client.request("POST", CMPL, json.dumps(body).encode())
    assert got == 503 and _json_error(got, ctype, raw)["type"] == "service_unavailable"  # checks passed


def test_body_over_the_limit_is_a_json_413(client):
    got, ctype, raw = client.request("POST", CMPL, b'{"prompt": "' + b"x" * (2 * MAX_BODY) + b'"}')
    assert got == 413
    err = _json_error(got, ctype, raw)
    assert str(MAX_BODY) in err["message"] and err["code"] == "request_too_large"


def test_aiohttp_errors_are_json(client):
    for method, path, status in [("POST", "/v1/nothing", 404), ("GET", CMPL, 405), ("DELETE", "/health", 405)]:
        got, ctype, raw = client.request(method, path, b"{}")
        assert got == status
        _json_error(got, ctype, raw)


def test_a_bug_is_a_json_500_and_a_logged_traceback(caplog):
    class Broken(ByteTokenizer):
        def encode(self, text):
            raise RuntimeError("tokenizer bug")

    c = Client(_server(Broken(32000)))
    try:
        with caplog.at_level(logging.ERROR, logger="planner.serve"):
            got, ctype, raw = c.request("POST", "/tokenize", b'{"prompt": "hi"}')
    finally:
        c.close()
    assert got == 500 and _json_error(got, ctype, raw)["type"] == "server_error"
    assert "tokenizer bug" not in raw.decode()  # internals stay in the log
    assert any("tokenizer bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)


# ---- fuzz ------------------------------------------------------------------------------------------
_nasty_text = st.one_of(st.text(max_size=12), st.text(st.characters(codec=None, min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3),
                        st.sampled_from(["", "\x00", "[/x]", "hi", "\u202e"]))
_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                    st.floats(allow_nan=True, allow_infinity=True), _nasty_text)
_value = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(_nasty_text | st.sampled_from(["text", "type", "role", "content"]), inner, max_size=3)),
                      max_leaves=8)
FIELDS = ["prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "seed",
          "stream", "model", "logprobs", "echo", "presence_penalty", "top_k", "return_token_ids", "tokens"]
_body = st.dictionaries(st.sampled_from(FIELDS), _value, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from([CMPL, CHAT, "/tokenize", "/detokenize"]), body=_body)
def test_fuzzed_bodies_never_get_a_500_or_plain_text(client, path, body):
    got, ctype, raw = client.request("POST", path, json.dumps(body).encode())
    if got == 200:  # /tokenize and /detokenize answer without workers
        assert path in ("/tokenize", "/detokenize")
        return
    assert got in (400, 404, 413, 503), (got, raw[:300])
    _json_error(got, ctype, raw)
