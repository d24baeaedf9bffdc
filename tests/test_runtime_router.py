"""The router and the supervisor in process, with stand-in workers: who holds a request when a
worker dies, what a death clears, and when a dead worker is started again. No torch, no processes."""

import asyncio
from types import SimpleNamespace

import pytest

pytest.importorskip("zmq")

from planner.runtime.config import make_config  # noqa: E402
from planner.runtime.metrics import RouterMetrics  # noqa: E402
from planner.runtime.router import Request, Router, WorkerInfo  # noqa: E402
from planner.runtime.supervisor import Supervisor  # noqa: E402


def _router(**cfg):
    r = Router(make_config(model="tiny", max_model_len=96, max_seqs=4, **cfg), RouterMetrics("tiny"), {"type": "config"})
    r.sent = []

    async def send(w, msg):
        r.sent.append((w.name, msg))
        return True

    r.send = send
    return r


def _ready(r, name, role, proc=None):
    r.workers[name] = WorkerInfo(name=name, role=role, state="ready", pid=100, proc=proc,
                                 kv_addr="tcp://127.0.0.1:1" if role == "decode" else None)
    return r.workers[name]


def _events(req):
    out = []
    while not req.events.empty():
        out.append(req.events.get_nowait())
    return out


def _gauge(metric, **labels) -> float:
    return metric.values.get(tuple(sorted(labels.items())), None)


def test_prefill_death_after_the_first_token_but_before_the_kv_arrived_fails_the_request():
    async def go():
        r = _router()
        try:
            _ready(r, "prefill-0", "prefill")
            _ready(r, "decode-0", "decode")
            a, b = Request(id="a", prompt=[1, 2, 3], max_tokens=5), Request(id="b", prompt=[4, 5], max_tokens=5)
            await r.submit(a)
            await r.submit(b)
            for rid in ("a", "b"):
                await r._handle("prefill-0", {"type": "first", "id": rid, "token": 7, "finish": None})
            await r._handle("decode-0", {"type": "kv_received", "id": "b"})  # b's KV is all on decode-0
            r.mark_dead(r.workers["prefill-0"], "killed by signal 9")
            await asyncio.sleep(0)
            # a: its KV may never reach decode-0, so it ends with an error (it used to wait forever)
            assert [e[0] for e in _events(a)] == ["token", "error"] and a.done
            assert ("decode-0", {"type": "cancel", "id": "a"}) in r.sent
            # b: decode-0 has all it needs: untouched
            assert [e[0] for e in _events(b)] == ["token"] and not b.done
            assert r.workers["decode-0"].requests == {"b"}
        finally:
            await r.close()

    asyncio.run(go())


def test_a_death_clears_the_workers_load_from_health_and_metrics_at_once():
    async def go():
        r = _router()
        try:
            w = _ready(r, "decode-0", "decode")
            await r._handle("decode-0", {"type": "stats", "running": 3, "waiting": 2, "kv_reserved_tokens": 200,
                                         "kv_budget_tokens": 384})
            assert w.public()["running"] == 3 and w.public()["kv_cache_usage"] > 0
            deaths = []
            r.on_dead = deaths.append
            r.mark_dead(w, "killed by signal 9")
            r.mark_dead(w, "again")  # a second notice of the same death changes nothing
            pub = w.public()
            assert (pub["state"], pub["running"], pub["waiting"], pub["kv_cache_usage"]) == ("dead", 0, 0, 0.0)
            m = r.metrics
            for gauge in (m.running, m.waiting, m.kv_usage, m.up):
                assert _gauge(gauge, worker="decode-0", role="decode") == 0, gauge.name
            assert deaths == [w]
            # stats a dead worker sent before it died are ignored
            await r._handle("decode-0", {"type": "stats", "running": 3, "waiting": 0})
            assert w.running == 0
        finally:
            await r.close()

    asyncio.run(go())


def _proc(pid):
    return SimpleNamespace(pid=pid, sentinel=-1, is_alive=lambda: False, join=lambda timeout=None: None, kill=lambda: None)


def test_supervisor_restarts_through_spawn_and_gives_up_on_a_crash_loop(caplog):
    async def go():
        r = _router(restart_max=2, restart_window_s=60.0)
        spawned = []

        def spawn(name, role):
            spawned.append((name, role))
            p = _proc(200 + len(spawned))
            r.workers[name] = WorkerInfo(name=name, role=role, pid=p.pid, proc=p)
            return p

        sup = Supervisor(r.cfg, r, spawn, serving=lambda: True)
        r.on_dead = sup.on_dead
        try:
            _ready(r, "decode-0", "decode", proc=_proc(100))
            for wait_s in (0.05, 0.6, 0.05):  # the first restart is immediate, the second waits 0.5 s
                w = r.workers["decode-0"]
                w.state = "ready"
                r.mark_dead(w, "killed by signal 9")
                await asyncio.sleep(wait_s)
            assert spawned == [("decode-0", "decode")] * 2
            assert r.workers["decode-0"].restarts == 2
            assert r.metrics.restarts.values == {(("role", "decode"), ("worker", "decode-0")): 2.0}
            assert "died 3 times within 60 s: not restarting it again" in caplog.text
        finally:
            sup.close()
            await r.close()

    asyncio.run(go())


def test_supervisor_leaves_remote_workers_and_a_stopping_server_alone():
    async def go():
        r = _router()
        spawned = []
        state = {"serving": True}
        sup = Supervisor(r.cfg, r, lambda n, role: spawned.append(n), serving=lambda: state["serving"])
        r.on_dead = sup.on_dead
        try:
            r.mark_dead(_ready(r, "remote-decode", "decode", proc=None), "no heartbeat")
            state["serving"] = False
            r.mark_dead(_ready(r, "decode-0", "decode", proc=_proc(100)), "killed")
            await asyncio.sleep(0.05)
            assert spawned == []
        finally:
            sup.close()
            await r.close()

    asyncio.run(go())
