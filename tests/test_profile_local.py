"""`planner profile local` and `planner profile show` on CPU: a real (small) sweep of `tiny`, the
bad inputs, partial saves, and the pure arithmetic of show against hand-computed answers."""

import json
import subprocess
import sys

import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from planner.errors import BadInput  # noqa: E402
from planner.measure import local as L  # noqa: E402
from planner.measure import show as S  # noqa: E402
from planner.cli.profile import parse_ints, profile_app  # noqa: E402
from planner.measure.files import REQUIRED_SAMPLE_COLUMNS, load_profile  # noqa: E402
from planner.specs.models import PRESETS, resolve_model  # noqa: E402

# Smaller than --quick: two prompt lengths, one batched prefill, batch 1 and 64 at two contexts.
GRID = dict(prompt_lens=[16, 256], prefill_batches=[1, 4], prefill_batch_len=16, batches=[1, 64],
            contexts=[32, 256], reps=5, warmup=1)


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("prof") / "tiny.json"
    # One torch thread: on a shared 2-core machine, OpenMP barriers between two threads stall
    # whenever a neighbour's process takes a core, inflating small ops 10x and scrambling the
    # ordering the test checks. Single-threaded times scale with the work, as the test expects.
    threads = torch.get_num_threads()
    path = L.run_local_profile("tiny", device="cpu", quick=True, out=out, progress=False, command="test", threads=1, **GRID)
    assert torch.get_num_threads() == threads  # restored
    return path


@pytest.fixture
def micro_config(tmp_path):
    """A 2-layer Llama-style config.json that builds in milliseconds, for the error paths."""
    cfg = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
           "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 256, "max_position_embeddings": 512}
    p = tmp_path / "micro" / "config.json"
    p.parent.mkdir()
    p.write_text(json.dumps(cfg))
    return str(p)


def test_quick_profile_of_tiny_is_a_valid_file(tiny_profile):
    prof = load_profile(tiny_profile)
    df = prof.samples
    for c in (*REQUIRED_SAMPLE_COLUMNS, "p10_s", "p90_s", "reps"):
        assert c in df.columns
    pre, dec = df[df.phase == "prefill"], df[df.phase == "decode"]
    # batch-1 prompts 16 and 256, plus a batch of 4 prompts of 16 (batch 1 x 16 is not repeated)
    assert sorted(zip(pre.batch, pre.prompt_len)) == [(1, 16), (1, 256), (4, 16)]
    assert (pre.context_len == 0).all() and (dec.prompt_len == 0).all()
    assert sorted(zip(dec.batch, dec.context_len)) == [(1, 32), (1, 256), (64, 32), (64, 256)]
    assert (df.reps == 5).all()
    assert ((df.p10_s <= df.seconds) & (df.seconds <= df.p90_s)).all()
    # Decode: a 64-sequence step does 64x the FLOPs of a 1-sequence step (~4.5 GFLOP vs ~0.07, on top
    # of the same 207 MB of weights); it must take longer. p10 (near the fastest rep) because this
    # 2-core machine is shared and a median of 5 can still catch a neighbour's burst.
    d = dec.set_index(["batch", "context_len"]).p10_s
    assert d[(64, 256)] > d[(1, 256)] and d[(64, 32)] > d[(1, 32)]
    # Prefill: 256 tokens (16x the FLOPs) cost more than 16.
    p = pre.set_index(["batch", "prompt_len"]).p10_s
    assert p[(1, 256)] > p[(1, 16)]

    m = prof.meta
    assert m["kind"] == "local" and m["complete"] is True and m["tp"] == 1 and m["dtype"] == "fp32"
    assert m["device"]["type"] == "cpu" and m["device"]["name"] and m["device"]["cores"] >= 1
    assert m["device"]["torch"] == torch.__version__ and m["device"]["torch_threads"] == 1
    assert m["engine"]["name"] == "planner.runtime.model" and m["command"] == "test"
    assert m["model"]["name"] == "tiny" and m["model"]["hidden"] == PRESETS["tiny"].hidden
    # tiny fp32: 2 (K, V) x 6 layers x 4 KV heads x 64 dims x 4 bytes = 12288 B per token
    assert m["kv_bytes_per_token"] == {"measured": 12288.0, "formula": 12288}
    assert m["ceilings"]["matmul_tflops"] > 0 and m["ceilings"]["mem_bw_gbps"] > 0
    assert m["ceilings"]["link_gbps"] is None
    assert m["utilization"]["available"] is False
    assert m["utilization"]["note"] == "utilization: not available (no NVML)"
    assert m["warnings"] == []


def test_show_renders_tables_crossovers_and_workload_share(tiny_profile):
    from rich.console import Console

    from planner.workload.workload import workload_from_flags

    con = Console(record=True, width=120)
    a = S.show_profile(tiny_profile, workload=workload_from_flags(rate=1, input_len=40, output_len=20), console=con)
    text = con.export_text()
    for s in ("device ceilings", "prefill (len = prompt tokens)", "decode (len = context tokens)", "ridge point", "compute-bound", "memory-bound",
              "share of device time", "Estimate", "not available (no NVML)"):
        assert s in text, s
    pts = a["points"]
    assert set(pts.bound) <= {"compute", "memory"}
    # decode at batch 1 reads ~207 MB of weights for ~70 MFLOP: far below any ridge point
    b1 = pts[(pts.phase == "decode") & (pts.batch == 1)]
    assert (b1.intensity < 1.0).all() and (b1.bound == "memory").all()
    w = a["workload"]
    assert w["prefill_share"] + w["decode_share"] == pytest.approx(1.0)
    assert 0 < w["prefill_share"] < 1


def test_cli_show_and_bad_flags(tiny_profile):
    r = CliRunner().invoke(profile_app, ["show", str(tiny_profile), "--rate", "2", "--input-len", "64",
                                         "--output-len", "8"])
    assert r.exit_code == 0, r.output
    assert "share of device time" in r.output
    r = CliRunner().invoke(profile_app, ["show", str(tiny_profile), "--input-len", "64"])
    assert isinstance(r.exception, BadInput) and "need a rate" in str(r.exception)
    r = CliRunner().invoke(profile_app, ["local", "tiny", "--batches", "1,x"])
    assert isinstance(r.exception, BadInput) and "--batches: 'x'" in str(r.exception)


def test_memory_refusal_names_the_numbers(tmp_path, monkeypatch):
    out = tmp_path / "p.json"
    with pytest.raises(BadInput, match=r"^llama-3.1-70b fp32 needs 282.2 GB of weights; this machine has .* GB free$"):
        L.run_local_profile("llama-3.1-70b", out=out, progress=False)
    # Weights fit, the KV cache of the grid the user typed does not (1 GB "free").
    monkeypatch.setattr(L, "free_memory_bytes", lambda dev: 1e9)
    with pytest.raises(BadInput, match=r"KV cache for batch 64 x 2048 tokens.*1.0 GB free"):
        L.run_local_profile("tiny", out=out, progress=False, batches=[64], contexts=[2047])
    assert not out.exists()


def test_default_grid_is_trimmed_to_memory(tmp_path, monkeypatch, micro_config):
    spec = resolve_model(micro_config)
    kv = spec.kv_bytes_per_token("fp32")
    # Room for the weights and activations plus a 2 x 257-token cache only.
    need = L.memory_need_bytes(spec, "fp32", 0, 8)  # the largest prefill below: 8 tokens
    free = (need["weights"] + need["activations"] + 2 * 257 * kv) / 0.9 + 1
    monkeypatch.setattr(L, "free_memory_bytes", lambda dev: free)
    p = L.run_local_profile(micro_config, out=tmp_path / "p.json", progress=False, ceilings=False, reps=1, warmup=0,
                            prompt_lens=[8], prefill_batches=[1], prefill_batch_len=8, contexts=[16, 256])
    prof = load_profile(p)
    dec = prof.samples[prof.samples.phase == "decode"]
    assert (dec.batch * (dec.context_len + 1) * kv <= 2 * 257 * kv).all()
    assert len(dec) < 2 * len(L.GRIDS[(False, "cpu")]["batches"])
    assert any("skipped" in w for w in prof.meta["warnings"])


def test_unwritable_output_fails_before_measuring(tmp_path, monkeypatch):
    import planner.runtime.model

    def boom(*a, **k):
        raise AssertionError("measured before checking the output")

    monkeypatch.setattr(planner.runtime.model, "build_model", boom)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(BadInput, match="afile"):
        L.run_local_profile("tiny", out=blocker / "p.json", progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu(tmp_path):
    with pytest.raises(BadInput) as e:
        L.run_local_profile("tiny", device="cuda", out=tmp_path / "p.json", progress=False)
    assert str(e.value) == "--device cuda: no CUDA device (torch.cuda.is_available() is False)"


@pytest.mark.parametrize("kw,msg", [
    (dict(contexts=[5000]), "--contexts: 5000 is outside 1..2047 (model tiny has max_position 2048)"),
    (dict(batches=[0]), "--batches: 0 is outside"),
    (dict(prompt_lens=[-3]), "--prompt-lens: -3 is outside"),
    (dict(dtype="int4"), "--dtype 'int4'"),
    (dict(device="tpu"), "--device 'tpu'"),
    (dict(reps=0), "--reps must be >= 1"),
    (dict(threads=0), "--threads: 0 must be between 1 and 1024"),
    (dict(passes=0), "--passes: 0 must be between 1 and 100"),
])
def test_bad_sweeps(tmp_path, kw, msg):
    with pytest.raises(BadInput) as e:
        L.run_local_profile("tiny", out=tmp_path / "p.json", progress=False, **kw)
    assert msg in str(e.value)


def test_passes_repeat_the_sweep_and_pool_every_call(tmp_path, monkeypatch, micro_config):
    """passes=3: the whole sweep runs three times over (prefill, decode, prefill, decode, ...),
    and each point's row is the median of all its calls, not of one pass's."""
    import planner.runtime.model

    order, real = [], planner.runtime.model.decode_step
    real_prefill = planner.runtime.model.prefill

    def dec(*a, **k):
        order.append("d")
        return real(*a, **k)

    def pre(*a, **k):
        order.append("p")
        return real_prefill(*a, **k)

    monkeypatch.setattr(planner.runtime.model, "decode_step", dec)
    monkeypatch.setattr(planner.runtime.model, "prefill", pre)
    out = L.run_local_profile(micro_config, out=tmp_path / "p.json", progress=False, ceilings=False, reps=2, warmup=1,
                              prompt_lens=[8, 16], prefill_batches=[1], prefill_batch_len=8, batches=[1, 2], contexts=[16],
                              passes=3)
    prof = load_profile(out)
    assert prof.meta["sweep"]["passes"] == 3 and prof.meta["complete"] is True
    assert len(prof.samples) == 4 and (prof.samples["reps"] == 6).all()  # 2 calls x 3 passes per point
    # 2 prefill points then 2 decode points, (1 warm-up + 2 timed) calls each, three times over
    assert "".join(order) == ("p" * 6 + "d" * 6) * 3


def test_partial_profile_saved_on_error_and_interrupt(tmp_path, monkeypatch, micro_config):
    import planner.runtime.model

    def fail(*a, **k):
        raise RuntimeError("boom in decode")

    monkeypatch.setattr(planner.runtime.model, "decode_step", fail)
    out = tmp_path / "p.json"
    kw = dict(out=out, progress=False, ceilings=False, reps=1, warmup=0, prompt_lens=[8, 16],
              prefill_batches=[1], prefill_batch_len=8, batches=[1], contexts=[16])
    with pytest.raises(RuntimeError, match="boom"):
        L.run_local_profile(micro_config, **kw)
    prof = load_profile(out)
    assert prof.meta["complete"] is False and "decode batch 1 at context 16" in prof.meta["error"]
    assert list(prof.samples.phase) == ["prefill", "prefill"]

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(planner.runtime.model, "decode_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        L.run_local_profile(micro_config, **kw)
    assert load_profile(out).meta["complete"] is False

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(planner.runtime.model, "decode_step", oom)
    with pytest.raises(BadInput, match=r"out of memory during decode batch 1 at context 16 .* saved to"):
        L.run_local_profile(micro_config, **kw)
    assert len(load_profile(out).samples) == 2


def test_cli_module_does_not_import_torch():
    code = "import sys, planner.cli.profile, planner.measure.show; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_parse_ints():
    assert parse_ints("1, 2,4", "--b") == [1, 2, 4] and parse_ints(None, "--b") is None
    with pytest.raises(BadInput, match="--b: 0 must be >= 1"):
        parse_ints("0", "--b")


def test_default_output_name():
    p = L.default_output("tiny", "cuda:1")
    assert p.parent.name == "profiles" and p.name.startswith("tiny-cuda1-") and p.suffix == ".json"
    assert L.default_output("models/foo/config.json", "cpu").name.startswith("foo-cpu-")


# ---- show's arithmetic, against hand-computed answers ---------------------------------------------
def test_crossovers_match_brute_force():
    spec = PRESETS["llama-3.1-8b"]
    w, kv, ridge = spec.weight_bytes("bf16"), spec.kv_bytes_per_token("bf16"), 989e12 / 3.35e12 * 0.7
    x = S.prefill_crossover_len(spec, w, kv, ridge)
    ai = lambda l: spec.prefill_flops(l) / (w + l * kv)  # noqa: E731
    assert ai(x) >= ridge > ai(x - 1)
    for c in (128, 512):
        b = S.decode_crossover_batch(spec, w, kv, ridge, c)
        f, by = S.decode_cost(spec, w, kv, b, c)
        assert f / by == pytest.approx(ridge, rel=1e-9)
    # At 4096 tokens a sequence's KV reads (4096 x 128 KiB x ridge 207 FLOP/B = 111 GFLOP-equivalent)
    # outweigh its 15.3 GFLOP: decode never turns compute-bound, whatever the batch.
    assert S.decode_crossover_batch(spec, w, kv, ridge, 4096) is None


def test_interp_and_workload_share():
    assert S.interp([1, 2, 4], [10, 20, 40], 3) == 30
    assert S.interp([1, 2, 4], [10, 20, 40], 0.5) == 10  # flat below
    assert S.interp([1, 2, 4], [10, 20, 40], 8) == 80  # linear above
    # prefill 1 ms per token at batch 1; decode steps of 10 ms at any batch 1..32 and context
    rows = [dict(phase="prefill", batch=1, prompt_len=l, context_len=0, seconds=l * 1e-3) for l in (50, 200)]
    rows += [dict(phase="decode", batch=b, prompt_len=0, context_len=c, seconds=0.01)
             for b in (1, 32) for c in (100, 1000)]
    df = pd.DataFrame(rows)
    r = S.workload_share(df, rate_rps=100, input_mean=100, output_mean=10)
    # Little: b = 100 req/s x 10 tokens x 0.01 s = 10; decode = 9 steps x 10 ms / 10 = 9 ms; prefill 100 ms
    assert r["batch"] == pytest.approx(10)
    assert r["decode_s"] == pytest.approx(0.009) and r["prefill_s"] == pytest.approx(0.1)
    assert r["prefill_share"] == pytest.approx(0.1 / 0.109)
    assert r["device_s_per_s"] == pytest.approx(100 * 0.109)


def test_workload_share_batch_capped_by_tpot_slo():
    # decode step = 10 ms + 1 ms per sequence (linear in batch, so interpolation is exact)
    rows = [dict(phase="prefill", batch=1, prompt_len=l, context_len=0, seconds=l * 1e-3) for l in (50, 200)]
    rows += [dict(phase="decode", batch=b, prompt_len=0, context_len=c, seconds=0.01 + 0.001 * b)
             for b in (1, 32) for c in (100, 1000)]
    df = pd.DataFrame(rows)
    # At 1000 req/s the load alone would fill batch 32; a 20 ms TPOT SLO allows batch 10 at most.
    r = S.workload_share(df, rate_rps=1000, input_mean=100, output_mean=10, tpot_s=0.020)
    assert r["tpot_slo_met"] and r["batch"] == pytest.approx(10, abs=0.2)
    assert r["decode_s"] == pytest.approx(9 * (0.01 + 0.001 * r["batch"]) / r["batch"])
    r = S.workload_share(df, rate_rps=1000, input_mean=100, output_mean=10, tpot_s=0.005)
    assert not r["tpot_slo_met"] and r["batch"] == 1
