"""`planner profile endpoint` against a real vLLM (CPU build), when one is installed.

Uses the venv that `python benchmarks/vllm_engine.py` installs (default
~/.cache/planner-vllm/venv, or $PLANNER_VLLM_VENV) and skips when there is none. A small
random-weight Llama (hidden 256, 4 layers; made once, cached) is served on 127.0.0.1; about 1.5
minutes on a 2-core machine once the model exists, most of it vLLM starting.
"""

import importlib.util
import os
import socket
from pathlib import Path

import pytest

from planner.measure.deployment import DeploymentFlags
from planner.measure.endpoint import run_endpoint_profile
from planner.measure.files import load_profile

VENV = Path(os.environ.get("PLANNER_VLLM_VENV", "~/.cache/planner-vllm/venv")).expanduser()
pytestmark = [pytest.mark.e2e,  # starts a real vLLM server: about a minute
              pytest.mark.skipif(not (VENV / "bin" / "python").exists(),
                                 reason=f"no vLLM venv at {VENV} (python benchmarks/vllm_engine.py installs one)")]


def _bench_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "vllm_engine.py"
    spec = importlib.util.spec_from_file_location("vllm_engine", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_profile_a_real_vllm_counts_every_token(tmp_path):
    ve = _bench_module()
    py = VENV / "bin" / "python"
    if ve.sh([str(py), "-c", "import vllm"], check=False, env=ve.OFFLINE).returncode != 0:
        pytest.skip(f"{VENV} has no importable vllm")
    shape = {"hidden": 256, "layers": 4, "heads": 4, "kv_heads": 2, "intermediate": 512, "vocab": 4096, "max_len": 1024}
    model = ve.make_model(py, VENV.parent / "models", shape, tmp_path / "model.log")

    class Args:  # what serve() reads
        port, max_model_len, max_num_seqs, max_num_batched_tokens, kv_gib = _free_port(), 1024, 16, 1024, 1

    proc = ve.serve(py, model, Args, tmp_path / "server.log")
    try:
        url = f"http://127.0.0.1:{Args.port}"
        path = run_endpoint_profile(url, out=tmp_path / "v.json", prompt_lens=[32, 128, 2000], concurrency=[1, 4],
                                    input_len=64, output_len=24, requests_per_point=4, progress=False,
                                    deploy=DeploymentFlags(gpu="local", matmul_tflops=0.2, mem_bw_gbps=20.0,
                                                           scheduler={"max_num_seqs": 16}))
    finally:
        ve.stop(proc)
    prof = load_profile(path)
    ex, d = prof.meta["extra"], prof.meta["deployment"]
    assert ex["requests_failed"] == 0, ex["failed"]
    decode = [r for r in ex["requests"] if r["sweep"] == "decode"]
    # vLLM streams some chunks whose text is "": counted by their token ids, none dropped.
    assert len(decode) == 8 and all(r["output_tokens"] == 24 and r["output_tokens_source"] == "token_ids" for r in decode)
    assert [(x["what"], x["tokens"]) for x in ex["dropped"]] == [("prompt length", 2000)]  # over max_model_len 1024
    assert prof.meta["engine"]["name"] == "vllm" and prof.meta["engine"]["version"].startswith("0.")
    assert prof.model["layers"] == 4 and prof.dtype == "bf16"  # the served folder's config.json
    assert d["scheduler"]["block_size"]["source"].startswith("vllm:cache_config_info")
    assert d["missing_for_plan"] == [] and ex["server"]["kv_capacity_tokens"] > 0
    assert sorted(prof.samples[prof.samples.phase == "prefill"].prompt_len) == [32, 128]  # exact by /tokenize
