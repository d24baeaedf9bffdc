"""Faults and lifecycle: kill -9 of workers mid-run (with restarts off: see test_runtime_heal.py for
the supervisor), SIGTERM drain, no orphans after the server dies."""

import os
import signal
import threading
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("zmq")
pytest.importorskip("aiohttp")

from planner.runtime import start_server  # noqa: E402
from planner.measure.client import get, post_json, run_many  # noqa: E402

pytestmark = pytest.mark.e2e  # starts servers or kernels: not in the fast set (-m "not e2e and not fuzz")

COMMON = dict(model="tiny", max_model_len=160, max_seqs=8, threads_per_worker=1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _metric(text: str, name: str, **labels) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()))


def test_kill_decode_then_prefill_worker_mid_run():
    with start_server(mode="disaggregated", prefill_workers=2, decode_workers=2, restart=False, **COMMON) as h:
        pids = h.worker_pids()
        payloads = [{"prompt": f"long story {i}", "max_tokens": 140, "temperature": 0.0} for i in range(4)]
        box = {}
        t = threading.Thread(target=lambda: box.update(res=run_many(h.url, payloads, concurrency=4, timeout_s=90)))
        t.start()
        deadline = time.monotonic() + 30
        while _metric(get(h.url + "/metrics")[1], "planner:time_to_first_token_seconds_count") < 4:
            assert time.monotonic() < deadline, "streams never started"
            time.sleep(0.05)
        t_kill = time.perf_counter()
        os.kill(pids["decode-0"], signal.SIGKILL)
        t.join(60)
        res = box["res"]
        failed = [r for r in res if r.error]
        ok = [r for r in res if not r.error]
        # the router spread the 4 requests over both decode workers: 2 die with decode-0, 2 finish
        assert len(failed) == 2 and len(ok) == 2, [r.error for r in res]
        assert all("decode-0" in r.error for r in failed)
        assert all(r.ended_s - t_kill < 5.0 for r in failed), [r.ended_s - t_kill for r in failed]
        assert all(len(r.token_ids) == 140 for r in ok)

        health = h.health()
        state = {w["name"]: w["state"] for w in health["workers"]}
        assert state["decode-0"] == "dead" and state["decode-1"] == "ready" and health["status"] == "degraded"
        # new work goes to the survivor only
        for _ in range(3):
            status, body = post_json(h.url + "/v1/completions", {"prompt": "after", "max_tokens": 3})
            assert status == 200, body

        os.kill(pids["prefill-0"], signal.SIGKILL)
        assert not _wait_gone([pids["prefill-0"]], 5)
        time.sleep(0.3)
        for _ in range(3):
            status, body = post_json(h.url + "/v1/completions", {"prompt": "still here", "max_tokens": 3})
            assert status == 200, body
        text = get(h.url + "/metrics")[1]
        assert _metric(text, "planner:worker_deaths_total") == 2
        assert _metric(text, "planner:worker_deaths_total", worker="decode-0", role="decode") == 1
        assert _metric(text, "planner:request_failure_total", reason="worker_died") == 2
        assert _metric(text, "planner:worker_up", worker="prefill-0") == 0
        assert _metric(text, "planner:worker_restarts_total") == 0  # restart=False
        assert all(w["running"] == 0 and w["kv_cache_usage"] == 0 for w in h.health()["workers"] if w["state"] == "dead")
        assert "decode-0" in h.log_text() and "dead" in h.log_text()
    assert _wait_gone(list(pids.values()), 10) == []


def test_all_decode_workers_dead_gives_503():
    with start_server(mode="disaggregated", prefill_workers=1, decode_workers=1, restart=False, **COMMON) as h:
        pids = h.worker_pids()
        os.kill(pids["decode-0"], signal.SIGKILL)
        _wait_gone([pids["decode-0"]], 5)
        deadline = time.monotonic() + 5
        while h.health()["status"] == "ok" and time.monotonic() < deadline:
            time.sleep(0.05)
        status, body = post_json(h.url + "/v1/completions", {"prompt": "anyone?", "max_tokens": 3})
        assert status == 503 and "decode" in body["error"]["message"]
        assert get(h.url + "/health")[0] == 503
        # max_tokens 1 needs no decode worker at all
        assert post_json(h.url + "/v1/completions", {"prompt": "one", "max_tokens": 1})[0] == 200


def test_sigterm_drains_in_flight_requests_and_leaves_no_orphans():
    h = start_server(mode="colocated", workers=1, **COMMON)
    pids = list(h.worker_pids().values())
    box = {}
    t = threading.Thread(target=lambda: box.update(res=run_many(
        h.url, [{"prompt": "drain me", "max_tokens": 60, "temperature": 0.0}], timeout_s=60)))
    t.start()
    deadline = time.monotonic() + 30
    while _metric(get(h.url + "/metrics")[1], "planner:time_to_first_token_seconds_count") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    h.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert h.proc.wait(30) == 0
    r = box["res"][0]
    assert r.error is None and len(r.token_ids) == 60  # the in-flight request finished
    assert _wait_gone(pids, 10) == []


def test_server_killed_hard_workers_exit_by_themselves():
    h = start_server(mode="disaggregated", prefill_workers=1, decode_workers=1, **COMMON)
    pids = list(h.worker_pids().values())
    h.proc.kill()
    h.proc.wait(10)
    assert _wait_gone(pids, 10) == []
