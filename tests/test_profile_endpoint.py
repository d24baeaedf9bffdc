"""`planner profile endpoint` against the fake server, whose timings are known by construction."""

import json
import os
import socket
import threading
import time

import numpy as np
import pytest

from planner.errors import BadInput
from planner.measure import endpoint
from planner.measure.endpoint import run_endpoint_profile
from fake_server import FakeServerConfig, start_fake_server
from planner.measure.files import load_profile
from planner.measure.deployment import DeploymentFlags

KEY = "sk-test-7f3c9a1e-SECRET-do-not-save"
# Steps of 12-40 ms, so that a late wake-up on a busy 2-core machine (a few ms) stays small.
CFG = FakeServerConfig(
    model="fake-llama", prefill_base_s=0.004, prefill_s_per_token=0.0004,
    decode_base_s=0.008, decode_s_per_seq=0.004, api_key=KEY,
)
LENS = [16, 128, 512, 1024]
CONC = [1, 4, 8]
OUTPUT_LEN = 24  # long enough that a wave of 8 streams overlaps even when their prefills are serialised on a busy CPU


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("ep") / "endpoint.json"
    with pytest.MonkeyPatch.context() as mp, start_fake_server(CFG) as srv:
        mp.setenv("PLANNER_TEST_KEY", KEY)
        path = run_endpoint_profile(srv.url + "/v1/", out=out, api_key_env="PLANNER_TEST_KEY", prompt_lens=LENS,
                                    concurrency=CONC, input_len=64, output_len=OUTPUT_LEN, requests_per_point=3,
                                    progress=False)
        seen = list(srv.server.auth_headers_seen)
    return path, load_profile(path), seen


def test_profile_file_is_valid_and_complete(profiled):
    path, prof, _ = profiled
    assert prof.kind == "endpoint" and prof.meta["complete"] is True
    assert prof.model == {"name": "fake-llama"}  # discovered via /v1/models
    assert prof.meta["engine"]["name"] == "vllm" and prof.meta["engine"]["version"] == "fake-0.1"
    df = prof.samples
    assert sorted(df[df.phase == "prefill"].prompt_len) == LENS  # exact counts via /tokenize
    assert sorted(df[df.phase == "decode"].batch) == CONC
    assert prof.meta["extra"]["tokenize_dialect"] == "vllm" and prof.meta["extra"]["requests_failed"] == 0


def test_ttft_grows_with_prompt_length_as_configured(profiled):
    _, prof, _ = profiled
    pre = prof.samples[prof.samples.phase == "prefill"].sort_values("prompt_len")
    slope, intercept = np.polyfit(pre.prompt_len, pre.seconds, 1)
    assert slope == pytest.approx(CFG.prefill_s_per_token, rel=0.15)
    for n, s in zip(pre.prompt_len, pre.seconds):
        # Never faster than the configured prefill; slower by network, parsing and, on a busy
        # shared CPU, a late wake-up or two (the fitted slope above is the tight check).
        assert CFG.prefill_s(n) <= s <= CFG.prefill_s(n) * 1.15 + 0.015, (n, s)


def test_inter_token_gap_grows_with_concurrency_as_configured(profiled):
    _, prof, _ = profiled
    dec = prof.samples[prof.samples.phase == "decode"].sort_values("batch")
    assert list(dec.seconds) == sorted(dec.seconds)
    for c, s in zip(dec.batch, dec.seconds):
        # Loose enough for a saturated shared 2-core CPU (wake-ups late by ~5 ms), tight enough
        # to tell c=4 (24 ms) from c=8 (40 ms).
        assert s == pytest.approx(CFG.decode_step_s(c), rel=0.3, abs=0.006), (c, s)
    assert all(dec.context_len == 64 + OUTPUT_LEN // 2)
    reqs = [r for r in prof.meta["extra"]["requests"] if r["sweep"] == "decode"]
    assert len(reqs) == 3 + 4 + 8  # c=1: 3 sequential; c=4, 8: one wave of c
    assert all(len(r["gaps_s"]) == OUTPUT_LEN - 1 and r["output_tokens"] == OUTPUT_LEN for r in reqs)


def test_server_metric_deltas_are_captured(profiled):
    _, prof, _ = profiled
    pre = prof.samples[prof.samples.phase == "prefill"].sort_values("prompt_len")
    assert list(pre.server_ttft_count) == [3, 3, 3, 3]  # just this point's requests
    reqs = prof.meta["extra"]["requests"]
    for n, s in zip(pre.prompt_len, pre.server_prefill_mean_s):
        # The server's prefill is at least the configured sleep and part of each client TTFT:
        # bounds that hold however busy the CPU is.
        client_mean = np.mean([r["ttft_s"] for r in reqs if r["sweep"] == "prefill" and r["point"] == n])
        assert CFG.prefill_s(n) - 0.0005 <= s <= client_mean, (n, s, client_mean)
        if n >= 512:
            assert s == pytest.approx(CFG.prefill_s(n), rel=0.1)
    dec = prof.samples[prof.samples.phase == "decode"].sort_values("batch")
    # Exactly this point's token gaps: c=1 sent 3 requests, c=4 and c=8 one wave each.
    assert list(dec.server_itl_count) == [n * (OUTPUT_LEN - 1) for n in (3, 4, 8)]
    for c, s in zip(dec.batch, dec.server_itl_mean_s):
        # A mean, so one scheduler stall on a shared CPU moves it: loose, the median test is tight.
        assert s == pytest.approx(CFG.decode_step_s(c), rel=0.5)
    server = prof.meta["extra"]["server"]
    assert server["metrics_available"] and server["kv_capacity_tokens"] == CFG.kv_blocks * CFG.block_size
    assert len(server["points"]) == len(LENS) + len(CONC)


def test_api_key_is_sent_but_never_saved(profiled):
    path, _, seen = profiled
    assert f"Bearer {KEY}" in seen  # the fake refuses /v1 without it, so the run proves it too
    assert KEY not in path.read_text()


def test_key_not_sent_to_another_origin_for_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_TEST_KEY", KEY)
    with start_fake_server(CFG) as srv, start_fake_server(FakeServerConfig(metrics_prefix="sglang:")) as other:
        metrics_url = other.url.replace("127.0.0.1", "localhost") + "/metrics"
        path = run_endpoint_profile(srv.url, out=tmp_path / "p.json", metrics_url=metrics_url, api_key_env="PLANNER_TEST_KEY",
                                    prompt_lens=[16], concurrency=[2], output_len=4, requests_per_point=1, progress=False)
        assert all(KEY not in h for h in other.server.auth_headers_seen) and other.server.auth_headers_seen
    prof = load_profile(path)
    assert prof.meta["engine"]["name"] == "sglang"
    assert prof.meta["extra"]["server"]["kv_capacity_tokens"] == CFG.kv_blocks * CFG.block_size


def test_chat_with_llama_cpp_style_metrics_absent(tmp_path):
    cfg = FakeServerConfig(tokenize="llama.cpp", metrics_prefix=None)
    with start_fake_server(cfg) as srv:
        path = run_endpoint_profile(srv.url, out=tmp_path / "c.json", prompt_lens=[32, 200], concurrency=[1, 2],
                                    input_len=40, output_len=4, requests_per_point=2, chat=True, progress=False)
    prof = load_profile(path)
    pre = prof.samples[prof.samples.phase == "prefill"]
    # llama.cpp's /tokenize ignores the chat template: counts come from the usage block instead.
    assert set(pre.prompt_tokens_source) == {"usage"}
    assert all(pre.seconds > 0) and len(pre) == 2
    assert any("no Prometheus metrics" in n for n in prof.meta["extra"]["notes"])
    assert not prof.meta["extra"]["server"]["metrics_available"]


def test_no_tokenize_falls_back_to_usage_and_converges(tmp_path):
    with start_fake_server(FakeServerConfig(tokenize=None)) as srv:
        path = run_endpoint_profile(srv.url, out=tmp_path / "u.json", prompt_lens=[300], concurrency=[1],
                                    output_len=3, requests_per_point=3, progress=False)
    prof = load_profile(path)
    reqs = [r for r in prof.meta["extra"]["requests"] if r["sweep"] == "prefill"]
    assert all(r["prompt_tokens_source"] == "usage" for r in reqs)
    counts = sorted(r["prompt_tokens"] for r in reqs)
    # The row holds what the server counted, not the target; aiming by usage lands near it.
    (row,) = prof.samples[prof.samples.phase == "prefill"].itertuples()
    assert row.prompt_len == counts[1] and row.target_prompt_len == 300
    assert abs(reqs[-1]["prompt_tokens"] - 300) <= 60  # the first try (a token per word) misses by ~70


def test_lengths_over_max_model_len_are_skipped_with_a_note(tmp_path):
    with start_fake_server(FakeServerConfig(tokenize="llama.cpp", max_model_len=600)) as srv:
        path = run_endpoint_profile(srv.url, out=tmp_path / "m.json", prompt_lens=[100, 1000], concurrency=[1],
                                    input_len=100, output_len=4, requests_per_point=1, progress=False)
    prof = load_profile(path)
    assert list(prof.samples[prof.samples.phase == "prefill"].prompt_len) == [100]  # exact via llama.cpp dialect
    assert prof.meta["extra"]["server"]["max_model_len"] == 600  # from /v1/models
    assert any("[1000] skipped" in n for n in prof.meta["extra"]["notes"])
    assert prof.meta["extra"]["tokenize_dialect"] == "llama.cpp"


@pytest.mark.parametrize("fault", ["cut", "error_event", "http_500"])
def test_faults_are_recorded_and_the_run_goes_on(tmp_path, fault):
    with start_fake_server(FakeServerConfig(fault=fault, fault_every=4)) as srv:
        path = run_endpoint_profile(srv.url, out=tmp_path / "f.json", prompt_lens=[16, 64], concurrency=[1, 4],
                                    output_len=5, requests_per_point=3, progress=False)
    prof = load_profile(path)
    extra = prof.meta["extra"]
    errors = [r["error"] for r in extra["requests"] if r["error"]]
    assert prof.meta["complete"] and extra["requests_failed"] == len(errors) >= 2
    expected = {"cut": "stream cut after 2 tokens", "error_event": "injected engine failure", "http_500": "HTTP 500"}[fault]
    assert all(expected in e for e in errors), errors
    assert set(prof.samples.phase) == {"prefill", "decode"}


def test_stalled_stream_times_out_and_overload_is_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(endpoint, "RETRY_DELAYS_S", (0.01, 0.01))
    with start_fake_server(FakeServerConfig(fault="stall", fault_every=5)) as srv:
        path = run_endpoint_profile(srv.url, out=tmp_path / "t.json", prompt_lens=[16], concurrency=[1, 4],
                                    output_len=5, requests_per_point=4, timeout_s=0.3, progress=False)
    reqs = load_profile(path).meta["extra"]["requests"]
    stalled = [r for r in reqs if r["error"]]
    assert stalled and all(r["error"] == "timeout: no byte for 0.3 s after 2 tokens" for r in stalled)
    assert all(len(r["gaps_s"]) == 1 for r in stalled)  # what came before the stall is kept
    with start_fake_server(FakeServerConfig(fault="http_503", fault_every=3)) as srv:
        path = run_endpoint_profile(srv.url, out=tmp_path / "r.json", prompt_lens=[16], concurrency=[1],
                                    output_len=3, requests_per_point=4, progress=False)
    reqs = load_profile(path).meta["extra"]["requests"]
    assert not any(r["error"] for r in reqs)  # a 503 before any byte is safe to resend
    assert sorted(r["attempts"] for r in reqs)[-1] == 2


def test_server_dying_midway_saves_a_partial_profile(tmp_path, monkeypatch):
    monkeypatch.setattr(endpoint, "RETRY_DELAYS_S", (0.01, 0.01))
    out = tmp_path / "partial.json"
    srv = start_fake_server(FakeServerConfig())

    def kill_after_some_requests():
        deadline = time.time() + 20
        while srv.server.requests < 5 and time.time() < deadline:
            time.sleep(0.002)
        srv.stop()

    killer = threading.Thread(target=kill_after_some_requests)
    killer.start()
    try:
        with pytest.raises(BadInput, match="stopped answering.*partial profile saved"):
            run_endpoint_profile(srv.url, out=out, prompt_lens=[16, 32, 64, 128, 256, 512], concurrency=[1, 2],
                                 output_len=4, requests_per_point=3, progress=False)
    finally:
        killer.join()
        srv.stop()
    prof = load_profile(out)
    assert prof.meta["complete"] is False and "could not connect" in prof.meta["extra"]["stopped"]
    assert len(prof.samples) >= 1  # the points measured before the server went away
    refused = [r for r in prof.meta["extra"]["requests"] if r["error"] and "cannot connect" in r["error"]]
    assert refused and all(r["attempts"] == 3 for r in refused)  # retried twice before giving up


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="cannot connect"):
        run_endpoint_profile(f"http://127.0.0.1:{_free_port()}", out=tmp_path / "x.json", progress=False)
    assert not (tmp_path / "x.json").exists()


def test_not_openai_and_unknown_model_are_bad_input(tmp_path):
    with start_fake_server(FakeServerConfig()) as srv:
        with pytest.raises(BadInput, match="not an OpenAI-compatible server"):
            run_endpoint_profile(srv.url + "/nothing", out=tmp_path / "x.json", progress=False)
        with pytest.raises(BadInput, match="'gpt-9' is not served here; served: fake-model"):
            run_endpoint_profile(srv.url, model="gpt-9", out=tmp_path / "x.json", progress=False)
    with start_fake_server(FakeServerConfig(api_key="right")) as srv:
        with pytest.raises(BadInput, match=r"HTTP 401 unauthorized: put the API key in \$PLANNER_UNSET_VAR_XYZ"):
            run_endpoint_profile(srv.url, out=tmp_path / "x.json", api_key_env="PLANNER_UNSET_VAR_XYZ", progress=False)


@pytest.mark.parametrize("kwargs, match", [
    ({"concurrency": [0]}, "concurrency: 0"),
    ({"concurrency": [1, 5000]}, "concurrency: 5000"),
    ({"prompt_lens": [-3]}, "prompt length: -3"),
    ({"prompt_lens": [2.5]}, "prompt length: 2.5"),
    ({"output_len": 1}, "output_len: 1"),
    ({"requests_per_point": 0}, "requests_per_point: 0"),
    ({"timeout_s": 0}, "timeout"),
])
def test_absurd_sweeps_are_bad_input(tmp_path, kwargs, match):
    with pytest.raises(BadInput, match=match):
        run_endpoint_profile("http://127.0.0.1:9", out=tmp_path / "x.json", progress=False, **kwargs)


def test_bad_url_and_unwritable_output_fail_before_measuring(tmp_path):
    with pytest.raises(BadInput, match="not an http"):
        run_endpoint_profile("localhost:8000", out=tmp_path / "x.json", progress=False)
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(BadInput, match="no write permission"):
            run_endpoint_profile("http://127.0.0.1:9", out=ro / "x.json", progress=False)
    finally:
        ro.chmod(0o700)


def test_request_records_are_json_friendly(profiled):
    path, _, _ = profiled
    doc = json.loads(path.read_text())
    r = doc["extra"]["requests"][1]
    assert {"ttft_s", "gaps_s", "output_tokens", "error", "attempts", "prompt_tokens"} <= set(r)


def test_tokens_read_together_share_the_gap_instead_of_zero():
    def result(times):
        gaps = tuple(b - a for a, b in zip(times, times[1:]))
        return endpoint.RequestResult("decode", 1, 8, "usage", len(times), "usage", times[0], gaps, times[-1],
                                      200, None, 1, 0.0, len(times))

    assert result([0.1, 0.2, 0.3]).step_gaps_s() == pytest.approx([0.1, 0.1])
    # Two tokens in one read at 0.4: 0.2 since the previous read, 0.1 each; no zero gap.
    assert result([0.1, 0.2, 0.4, 0.4, 0.5]).step_gaps_s() == pytest.approx([0.1, 0.1, 0.1, 0.1])
    assert result([0.1, 0.1, 0.3]).step_gaps_s() == pytest.approx([0.2])  # read with the first: dropped


@pytest.mark.e2e
def test_against_this_projects_runtime(tmp_path):
    """The real thing: `planner serve` (tiny model, CPU) profiled end to end."""
    pytest.importorskip("torch")
    from planner.runtime import start_server

    handle = start_server(mode="colocated", workers=1, model="tiny", timeout_s=240)
    try:
        path = run_endpoint_profile(handle.url, out=tmp_path / "rt.json", prompt_lens=[16, 64], concurrency=[1, 2],
                                    input_len=32, output_len=4, requests_per_point=1, progress=False)
    finally:
        handle.stop()
    prof = load_profile(path)
    extra = prof.meta["extra"]
    assert prof.meta["engine"]["name"] == "planner" and extra["requests_failed"] == 0
    pre = prof.samples[prof.samples.phase == "prefill"]
    assert list(pre.prompt_len) == [16, 64]  # exact, by the runtime's own /tokenize and usage
    assert all(pre.server_prefill_mean_s <= pre.seconds)  # server prefill is inside client TTFT
    assert extra["server"]["kv_capacity_tokens"] > 0
    assert sorted(prof.samples[prof.samples.phase == "decode"].batch) == [1, 2]


# ---- deployment facts and planning from an endpoint profile ----------------------------------
def _plan(args, capsys):
    from planner.cli.main import main

    code = 0
    try:
        main(args)
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_empty_text_chunks_are_counted_by_token_ids(profiled):
    """The fake streams every third token as text "" (as vLLM does): none may be dropped."""
    _, prof, _ = profiled
    reqs = [r for r in prof.meta["extra"]["requests"] if r["sweep"] == "decode"]
    assert CFG.empty_text_every == 3
    assert all(r["output_tokens_source"] == "token_ids" and r["output_tokens"] == OUTPUT_LEN for r in reqs)
    assert all(r["token_events"] == OUTPUT_LEN for r in reqs)  # the "" chunks are token events too
    assert prof.meta["extra"]["failed"] == [] and prof.meta["extra"]["dropped"] == []


def test_deployment_detected_and_missing_facts_named(profiled, tmp_path, capsys):
    path, prof, _ = profiled
    d = prof.meta["deployment"]
    assert d["engine"] == "vllm" and d["engine_source"] == "/metrics prefix"
    assert d["scheduler"]["block_size"] == {"value": CFG.block_size, "source": "vllm:cache_config_info block_size"}
    assert d["scheduler"]["prefix_caching"]["value"] is True
    assert d["scheduler"]["chunked_prefill"]["value"] is True  # vLLM V1
    assert d["scheduler"]["max_num_seqs"] == {"value": None, "source": "not given (--max-num-seqs)"}
    assert "--gpu KEY|local" in d["missing_for_plan"] and "--model-shape PRESET|config.json" in d["missing_for_plan"]
    code, _, err = _plan(["plan", "--profile", str(path), "--gpus", "h100-sxm", "--no-pareto"], capsys)
    assert code == 2 and "--gpu KEY|local" in err and "re-run `planner profile endpoint`" in err


def test_server_percentiles_keep_their_bucket(profiled):
    _, prof, _ = profiled
    row = prof.samples[prof.samples.phase == "decode"].iloc[0]
    lo, hi = row.server_itl_p50_bucket_s
    assert lo <= row.server_itl_p50_s <= hi  # the interpolated value lies in its bucket
    edges = prof.meta["extra"]["server"]["bucket_edges_s"]["vllm:inter_token_latency_seconds"]
    assert hi in edges and lo in [0.0] + edges
    assert "bucket-bounded" in prof.meta["extra"]["server"]["quantiles"]


def test_lengths_over_max_model_len_are_listed_as_dropped(tmp_path, capsys):
    from planner.measure.show import print_endpoint_summary

    with start_fake_server(FakeServerConfig(max_model_len=300)) as srv:
        path = run_endpoint_profile(srv.url, out=tmp_path / "d.json", prompt_lens=[64, 1000], concurrency=[1],
                                    input_len=32, output_len=4, requests_per_point=1, progress=False)
    dropped = load_profile(path).meta["extra"]["dropped"]
    assert [(x["what"], x["tokens"]) for x in dropped] == [("prompt length", 1000)]
    print_endpoint_summary(path)
    out = capsys.readouterr().out
    assert "dropped: prompt length 1000" in out and "0 failed" in out


@pytest.mark.e2e  # profiles a server, then plans from the file twice: ~7 s
def test_plan_from_an_endpoint_profile_uses_its_measurements(tmp_path, capsys):
    from planner.measure.deployment import DeploymentFlags

    deploy = DeploymentFlags(model_shape="tiny", gpu="local", dtype="fp32", matmul_tflops=0.2, mem_bw_gbps=40.0,
                             memory_gb=8.0, scheduler={"max_num_seqs": 64})
    with start_fake_server(FakeServerConfig(model="tiny-served")) as srv:
        path = run_endpoint_profile(srv.url, out=tmp_path / "p.json", prompt_lens=[32, 128, 256], concurrency=[1, 2, 4],
                                    input_len=64, output_len=8, requests_per_point=2, progress=False, deploy=deploy)
    prof = load_profile(path)
    assert prof.meta["deployment"]["missing_for_plan"] == [] and prof.tp == 1  # tp 1 on one local device
    assert prof.meta["device"]["type"] == "local" and prof.model["layers"] == 6
    assert prof.meta["deployment"]["scheduler"]["max_num_seqs"] == {"value": 64, "source": "--max-num-seqs"}
    pre = prof.samples[prof.samples.phase == "prefill"]
    assert all(pre.seconds <= pre.client_ttft_s)  # the server's queue time is taken out
    code, out, err = _plan(["plan", "--profile", str(path), "--gpus", "local", "--model", "tiny", "--rate", "1",
                            "--input-len", "128", "--output-len", "16", "--weight-dtype", "fp32", "--kv-dtype", "fp32",
                            "--ttft-slo", "2000", "--tpot-slo", "200", "--no-pareto"], capsys)
    assert code in (0, 3), err
    flat = " ".join(out.split())  # the terminal wraps long lines
    assert "calibrated by the endpoint's measurements (vllm fake-0.1)" in flat
    assert "step times on local: measured points" in flat
    # a vLLM endpoint's profile plans vLLM (with the limits it ran with) unless --engine says otherwise
    assert "serving engine vllm: at most 64 running sequences" in flat and "the engine the endpoint profile measured" in flat
    code, out, err = _plan(["plan", "--profile", str(path), "--gpus", "local", "--model", "tiny", "--rate", "1", "--engine", "generic",
                            "--input-len", "128", "--output-len", "16", "--weight-dtype", "fp32", "--kv-dtype", "fp32",
                            "--ttft-slo", "2000", "--tpot-slo", "200", "--no-pareto"], capsys)
    flat = " ".join(out.split())
    assert code in (0, 3), err
    assert "serving engine generic" in flat and "the engine the endpoint profile measured" not in flat


def test_bad_deployment_flags_fail_before_measuring(tmp_path):
    from planner.measure.deployment import DeploymentFlags

    for deploy, match in [(DeploymentFlags(gpu="h900"), "--gpu 'h900'"), (DeploymentFlags(engine="trt"), "--engine 'trt'"),
                          (DeploymentFlags(dtype="int3"), "--dtype 'int3'"),
                          (DeploymentFlags(measure_ceilings=True), "add --gpu local"),
                          (DeploymentFlags(model_shape="no-such-model"), "unknown model")]:
        with pytest.raises(BadInput, match=match):
            run_endpoint_profile("http://127.0.0.1:9", out=tmp_path / "x.json", progress=False, deploy=deploy)


def test_served_ids_map_to_presets():
    from planner.measure.deployment import preset_for

    assert preset_for("meta-llama/Meta-Llama-3.1-8B-Instruct") == "llama-3.1-8b"
    assert preset_for("meta-llama/Llama-3.1-70B") == "llama-3.1-70b"
    assert preset_for("mistralai/Mistral-7B-Instruct-v0.3") == "mistral-7b"
    assert preset_for("Qwen/Qwen2.5-7B-Instruct") == "qwen2.5-7b"
    assert preset_for("my-finetune") is None


def test_without_token_ids_the_usage_block_gives_the_count(tmp_path):
    """A server that ignores return_token_ids: chunks with text "" carry no visible token, so
    totals come from usage and decode steps from each request's TPOT, with a note."""
    with start_fake_server(FakeServerConfig(token_ids=False)) as srv:
        path = run_endpoint_profile(srv.url, out=tmp_path / "n.json", prompt_lens=[32], concurrency=[1, 2],
                                    input_len=32, output_len=12, requests_per_point=2, progress=False)
    prof = load_profile(path)
    reqs = [r for r in prof.meta["extra"]["requests"] if r["sweep"] == "decode"]
    assert all(r["output_tokens"] == 12 and r["output_tokens_source"] == "usage" for r in reqs)
    assert all(r["token_events"] < 12 for r in reqs)  # the "" chunks were not seen as tokens
    assert set(prof.samples[prof.samples.phase == "decode"].estimator) == {"median time per output token"}
    assert any("no token ids per chunk" in n for n in prof.meta["extra"]["notes"])


def test_a_connection_closed_while_idle_is_reopened(tmp_path, monkeypatch):
    """The server closes idle keep-alive connections (uvicorn after 5 s) while the profiler is
    busy elsewhere (measuring ceilings blocks the loop): the next request must not fail on the
    stale connection (it used to cost the /tokenize dialect against vLLM)."""
    from planner.measure import endpoint_file

    monkeypatch.setattr(endpoint_file, "ceilings", lambda run: time.sleep(0.4))
    with start_fake_server(FakeServerConfig(), keepalive_s=0.1) as srv:
        path = run_endpoint_profile(srv.url, out=tmp_path / "k.json", prompt_lens=[32], concurrency=[1],
                                    input_len=16, output_len=4, requests_per_point=1, progress=False)
    extra = load_profile(path).meta["extra"]
    assert extra["tokenize_dialect"] == "vllm" and extra["requests_failed"] == 0
    assert extra["server"]["metrics_available"]


def test_cache_config_read_from_a_later_scrape(tmp_path):
    """vLLM sets its cache_config_info gauge a little after it starts answering: the first scrape
    may lack it, a later one has it."""
    with start_fake_server(FakeServerConfig(info_after=3)) as srv:
        path = run_endpoint_profile(srv.url, out=tmp_path / "i.json", prompt_lens=[32], concurrency=[1, 2],
                                    input_len=16, output_len=4, requests_per_point=2, progress=False)
    prof = load_profile(path)
    assert prof.meta["extra"]["server"]["kv_capacity_tokens"] == CFG.kv_blocks * CFG.block_size
    assert prof.meta["deployment"]["scheduler"]["block_size"]["value"] == CFG.block_size


def test_sglang_server_arguments_are_read(tmp_path):
    with start_fake_server(FakeServerConfig(metrics_prefix="sglang:", model="Qwen/Qwen2.5-7B-Instruct")) as srv:
        path = run_endpoint_profile(srv.url, out=tmp_path / "s.json", prompt_lens=[32], concurrency=[1],
                                    input_len=16, output_len=4, requests_per_point=1, progress=False,
                                    deploy=DeploymentFlags(gpu="h100-sxm", dtype="bf16"))
    prof = load_profile(path)
    d = prof.meta["deployment"]
    assert d["engine"] == "sglang" and d["tp"] == 2 and d["tp_source"] == "sglang server info tp_size"
    sched = {k: v["value"] for k, v in d["scheduler"].items()}
    assert sched == {"max_num_seqs": 128, "max_num_batched_tokens": 8192, "chunked_prefill": None, "block_size": 1,
                     "prefix_caching": True}
    assert prof.model["layers"] == 28 and "mapped to preset qwen2.5-7b" in d["model_source"]
    assert d["missing_for_plan"] == [] and prof.meta["device"]["catalog_key"] == "h100-sxm"
