"""The pilot's load generator: schedules, the streamed client against a fake server with known
timings, and the accounting rule that every request sent ends completed or failed (lost == 0)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from planner.pilot import replay as rp
from planner.errors import BadInput
from fake_server import FakeServerConfig, start_fake_server
from planner.workload.workload import workload_from_flags


def _w(inp="uniform:10-30", out="uniform:4-12", rate=1.0):
    return workload_from_flags(rate=rate, input_len=inp, output_len=out)


# ---- schedules -------------------------------------------------------------------------------------
def test_poisson_schedule_rate_lengths_and_determinism():
    s = rp.poisson_schedule(_w(), rate_rps=20.0, n=4000, seed=1)
    at = np.array([r.at_s for r in s])
    assert at[0] == 0.0 and np.all(np.diff(at) >= 0)
    gaps = np.diff(at)
    assert gaps.mean() == pytest.approx(1 / 20.0, rel=0.05)  # Poisson at 20 req/s
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.08)  # exponential gaps: cv = 1
    p = np.array([r.prompt_tokens for r in s])
    o = np.array([r.output_tokens for r in s])
    assert p.min() >= 10 and p.max() <= 30 and o.min() >= 4 and o.max() <= 12
    assert s == rp.poisson_schedule(_w(), rate_rps=20.0, n=4000, seed=1)
    assert s != rp.poisson_schedule(_w(), rate_rps=20.0, n=4000, seed=2)


def test_poisson_schedule_duration_trims_and_bad_rate():
    s = rp.poisson_schedule(_w(), rate_rps=5.0, duration_s=10.0, seed=0)
    assert all(r.at_s < 10.0 for r in s)
    assert 25 <= len(s) <= 80  # 50 expected
    with pytest.raises(BadInput):
        rp.poisson_schedule(_w(), rate_rps=0.0, n=3)
    with pytest.raises(BadInput):
        rp.poisson_schedule(_w(), rate_rps=1.0)


def test_clip_lengths_keeps_output_and_fits_context():
    p, o = rp._clip_lengths(np.array([100, 10, 0]), np.array([50, 5, 3]), max_len=64)
    assert o.tolist() == [50, 5, 3]
    assert p.tolist() == [14, 10, 1]  # 64 - 50; untouched; at least one token
    assert (p + o <= 64).all()


def test_trace_schedule_scales_timestamps(tmp_path):
    from planner.workload.workload import SLO, workload_from_trace

    f = tmp_path / "t.csv"
    f.write_text("timestamp,input_tokens,output_tokens\n0,10,5\n2,20,6\n4,30,7\n6,40,8\n")
    w = workload_from_trace(f, SLO(1000, 50, 90))
    s = rp.trace_schedule(w, rate_rps=w.rate_rps * 2)  # twice as fast: gaps halve
    assert [r.at_s for r in s] == pytest.approx([0, 1, 2, 3])
    assert [(r.prompt_tokens, r.output_tokens) for r in s] == [(10, 5), (20, 6), (30, 7), (40, 8)]


def test_prompt_ids_deterministic_exact_length_in_range():
    a = rp.prompt_ids(3, 57)
    assert len(a) == 57 and a == rp.prompt_ids(3, 57)
    assert a != rp.prompt_ids(4, 57)
    assert min(a) >= rp.PROMPT_ID_RANGE[0] and max(a) < rp.PROMPT_ID_RANGE[1]
    assert len(rp.prompt_ids(-1, 5)) == 5  # warm-up indices are negative
    # an endpoint pilot's salt: the same schedule, other prompts (no prefix cache hit from the last pilot)
    assert rp.prompt_ids(3, 57, salt=12345) != a and rp.prompt_ids(3, 57, salt=12345) == rp.prompt_ids(3, 57, salt=12345)


def test_chunk_tokens_counts_ids_then_logprobs_then_text():
    from planner.measure.client import chunk_tokens

    assert chunk_tokens({"text": "", "token_ids": [5, 6]}) == (2, "token_ids")  # vLLM's "" chunk still counts
    assert chunk_tokens({"text": "", "logprobs": {"tokens": ["a"]}}) == (1, "logprobs")
    assert chunk_tokens({"delta": {"content": ""}, "logprobs": {"content": [{}, {}]}}) == (2, "logprobs")
    assert chunk_tokens({"text": "ab"}) == (1, "text")
    assert chunk_tokens({"text": ""}) == (0, None)


def test_summary_percentiles_known_answer():
    st = rp.ReplayState()
    for i, (ttft, n, e2e) in enumerate([(0.1, 11, 1.1), (0.2, 11, 2.2), (0.3, 1, 0.3)]):
        st.records[i] = rp.RequestRecord(i, 0.0, 10, n, sent_s=float(i), ttft_s=ttft, e2e_s=e2e, output_tokens=n, done=True)
    st.records[3] = rp.RequestRecord(3, 0.0, 10, 5, sent_s=3.0, error="HTTP 500: x", done=True)
    s = rp.summarize(st)
    assert s["ttft_ms"]["p50"] == pytest.approx(200.0)
    assert s["tpot_ms"]["p50"] == pytest.approx(150.0)  # (1.0/10 and 2.0/10) -> median 150 ms; n=1 has none
    assert s["makespan_s"] == pytest.approx(3.2)  # first send at 0, last completion at 1 + 2.2
    assert st.counts() == {"sent": 4, "completed": 3, "failed": 1, "lost": 0}


# ---- the client against a fake server ----------------------------------------------------------
def _run(url, schedule, timeout_s=10.0, model=None):
    st = rp.ReplayState()
    asyncio.run(rp.replay(url, model, schedule, st, timeout_s=timeout_s))
    return st


def test_replay_measures_known_timings():
    cfg = FakeServerConfig(prefill_base_s=0.02, prefill_s_per_token=0.0, decode_base_s=0.01, decode_s_per_seq=0.0,
                           tokenize=None)
    sched = [rp.ReplayRequest(i, 0.05 * i, 20, 8) for i in range(10)]
    with start_fake_server(cfg) as srv:
        st = _run(srv.url, sched, model="fake-model")
    assert st.counts() == {"sent": 10, "completed": 10, "failed": 0, "lost": 0}
    for r in st.records.values():
        assert r.output_tokens == 8  # the usage block's count
        assert len(r.gaps_s) == 7
        assert 0.015 < r.ttft_s < 0.2  # 20 ms prefill (+ scheduling noise)
        assert 0.008 < r.tpot_s < 0.05  # 10 ms per step
    s = rp.summarize(st)
    assert s["tpot_ms"]["p50"] == pytest.approx(10.5, rel=0.35)
    assert s["throughput_rps"] > 0


@pytest.mark.parametrize("fault", ["http_500", "cut", "error_event"])
def test_faults_are_failed_never_lost(fault):
    cfg = FakeServerConfig(prefill_base_s=0.002, decode_base_s=0.002, decode_s_per_seq=0.0, fault=fault, fault_every=3,
                           tokenize=None)
    sched = [rp.ReplayRequest(i, 0.01 * i, 10, 6) for i in range(9)]
    with start_fake_server(cfg) as srv:
        st = _run(srv.url, sched, model="fake-model")
    c = st.counts()
    assert c["sent"] == 9 and c["lost"] == 0
    assert c["failed"] == 3 and c["completed"] == 6
    assert all(r.error for r in st.records.values() if not r.ok)


def test_stalled_stream_times_out_as_failed():
    cfg = FakeServerConfig(fault="stall", fault_every=2, tokenize=None, decode_base_s=0.002, decode_s_per_seq=0.0)
    sched = [rp.ReplayRequest(i, 0.0, 10, 6) for i in range(2)]
    with start_fake_server(cfg) as srv:
        st = _run(srv.url, sched, timeout_s=0.5, model="fake-model")
    assert st.counts() == {"sent": 2, "completed": 1, "failed": 1, "lost": 0}
    assert "timeout" in next(r.error for r in st.records.values() if r.error)


def test_unreachable_server_fails_every_request():
    sched = [rp.ReplayRequest(i, 0.0, 5, 3) for i in range(3)]
    st = _run("http://127.0.0.1:9", sched, timeout_s=2.0)
    assert st.counts() == {"sent": 3, "completed": 0, "failed": 3, "lost": 0}


def test_interrupt_records_in_flight_as_failed():
    """Cancelling the replay (what Ctrl-C does) leaves no request unaccounted for."""
    cfg = FakeServerConfig(prefill_base_s=0.002, decode_base_s=0.05, decode_s_per_seq=0.0, tokenize=None)
    sched = [rp.ReplayRequest(i, 0.02 * i, 10, 40) for i in range(50)]
    st = rp.ReplayState()

    async def main():
        task = asyncio.create_task(rp.replay(srv.url, "fake-model", sched, st, timeout_s=10.0))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with start_fake_server(cfg) as srv:
        asyncio.run(main())
    c = st.counts()
    assert st.interrupted and 0 < c["sent"] < 50
    assert c["lost"] == 0 and c["failed"] >= 1
    assert all(r.error == "interrupted" for r in st.records.values() if not r.ok)


def test_warm_up_and_scrape_against_fake_server():
    with start_fake_server(FakeServerConfig(tokenize=None)) as srv:
        extras, err = asyncio.run(rp.warm_up(srv.url, "fake-model", n=1))
        scrape = asyncio.run(rp.scrape_metrics(srv.url))
    assert extras and err is None
    assert scrape is not None and scrape.histogram("vllm:time_to_first_token_seconds").count >= 1
    assert asyncio.run(rp.scrape_metrics("http://127.0.0.1:9", timeout_s=1.0)) is None
