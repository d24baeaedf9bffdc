"""Benchmarks of `planner serve`'s runtime, each against its own baseline measured in the same run.

    python benchmarks/runtime_bench.py [--quick] [--only kv,decode,tpot,codec] [--device cpu|cuda]

1. kv:     KV transfer, layer by layer through the runtime's own code (slice+clone, JSON header,
           ZeroMQ PUSH/PULL over TCP, unpack, write into the receiver's cache) against a raw
           ZeroMQ send of one buffer of the same size on the same socket pair. Target >= 80%.
2. decode: tokens/s of a real decode worker process (driven by a stand-in router and prefill:
           KV pushed in, token messages out) at batch 1, 8, 32 against the bare model's
           decode_step loop with the same threads, shapes and contexts. Target overhead < 15%.
3. tpot:   the point of disaggregation, on the runtime itself: a mixed load of long prompts and
           long outputs (Poisson arrivals) against disaggregated (1 prefill + 1 decode) and
           colocated (2 workers, plain and chunked prefill) servers on the same cores: TTFT and
           TPOT percentiles, and p99 inter-token gap.
4. codec:  FP8/INT8 KV compression: bytes saved and greedy token agreement with uncompressed KV.

Prints a table per section for people, then one JSON line for scripts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

MODEL = "tiny"


def table(title: str, header: list[str], rows: list[list]) -> None:
    cols = [header] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cols) for i in range(len(header))]
    print(f"\n{title}")
    for j, r in enumerate(cols):
        print("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if j == 0:
            print("  " + "  ".join("-" * w for w in widths))


# ---- 1. KV transfer -------------------------------------------------------------------------------------
class _Attn:
    """Just the two cache tensors of one layer, as the worker code expects them."""

    def __init__(self, k, v):
        self.k_cache, self.v_cache = k, v


def _kv_receiver(addr_in: str, addr_ack: str, layers: int, kv_heads: int, max_seq: int, head_dim: int):
    import torch
    import zmq

    from planner.runtime.protocol import dumps, loads, unpack
    from planner.runtime.decode import store_layer

    torch.set_num_threads(1)
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 100000)
    pull.bind(addr_in)
    ack = ctx.socket(zmq.PUSH)
    ack.connect(addr_ack)
    attns = [_Attn(torch.zeros(1, max_seq, kv_heads, head_dim), torch.zeros(1, max_seq, kv_heads, head_dim))
             for _ in range(layers)]
    ack.send(dumps({"type": "up"}))
    while True:
        frames = pull.recv_multipart(copy=False)
        head = loads(frames[0].buffer)
        if head["type"] == "raw_end" or head["type"] == "kv_done":
            ack.send(dumps({"type": "ack"}))
        elif head["type"] == "kv":
            msg, tensors = unpack(frames)
            store_layer(attns[msg["layer"]], 0, msg, tensors)
        elif head["type"] == "stop":
            break
    ctx.destroy(linger=0)


def bench_kv(quick: bool) -> list[dict]:
    import torch
    import zmq

    from planner.runtime.model import build_model
    from planner.runtime.engine import Seq
    from planner.runtime.protocol import dumps
    from planner.runtime.prefill import layer_frames
    from planner.specs.models import PRESETS

    # One torch thread, as a prefill worker on this 2-core machine has (cores / workers): more
    # threads than free cores make OpenMP copies spin against the receiver process.
    torch.set_num_threads(1)
    spec = PRESETS[MODEL]
    lengths = [256, 2048] if quick else [128, 512, 2048]
    max_seq = max(lengths)
    model = build_model(spec)
    model.setup_cache(1, max_seq)
    for layer in model.layers:  # realistic values, not zeros
        layer.self_attn.k_cache.normal_()
        layer.self_attn.v_cache.normal_()
    ctx = zmq.Context()
    ack = ctx.socket(zmq.PULL)
    ack.setsockopt(zmq.RCVTIMEO, 30000)  # a dead receiver fails the benchmark instead of hanging it
    ack_port = ack.bind_to_random_port("tcp://127.0.0.1")
    data_port = _free_port()
    addr = f"tcp://127.0.0.1:{data_port}"
    p = multiprocessing.get_context("spawn").Process(
        target=_kv_receiver, args=(addr, f"tcp://127.0.0.1:{ack_port}", spec.layers, spec.kv_heads, max_seq, spec.head_dim))
    p.start()
    ack.recv()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 100000)
    push.connect(addr)
    reps = 5 if quick else 10
    rows = []
    for n in lengths:
        seq = Seq(id="b", prompt=[], prompt_len=n, max_tokens=2)
        seq.slot = 0
        nbytes = 2 * spec.layers * spec.kv_heads * n * spec.head_dim * 4
        blob = torch.randn(nbytes // 4).view(torch.uint8).numpy()
        kv_t, raw_t = [], []
        for r in range(reps + 1):  # first round warms both paths up
            t0 = time.perf_counter()
            for i, layer in enumerate(model.layers):
                push.send_multipart(layer_frames(layer.self_attn, seq, i, spec.layers, "none"), copy=False)
            push.send(dumps({"type": "kv_done", "id": "b"}))
            ack.recv()
            t1 = time.perf_counter()
            push.send_multipart([dumps({"type": "raw"}), memoryview(blob)], copy=False)
            push.send(dumps({"type": "raw_end"}))
            ack.recv()
            t2 = time.perf_counter()
            if r:
                kv_t.append(t1 - t0)
                raw_t.append(t2 - t1)
        kv_s, raw_s = statistics.median(kv_t), statistics.median(raw_t)
        rows.append({"tokens": n, "mbytes": nbytes / 1e6, "kv_ms": kv_s * 1e3, "raw_ms": raw_s * 1e3,
                     "kv_gbps": nbytes / kv_s / 1e9, "raw_gbps": nbytes / raw_s / 1e9, "ratio": raw_s / kv_s})
    push.send(dumps({"type": "stop"}))
    p.join(10)
    ctx.destroy(linger=0)
    table("KV transfer (tiny fp32, layer by layer through the runtime's code vs one raw ZeroMQ send; "
          "median, target ratio >= 0.80)",
          ["prompt tokens", "MB", "runtime ms", "raw ms", "runtime GB/s", "raw GB/s", "ratio"],
          [[r["tokens"], r["mbytes"], r["kv_ms"], r["raw_ms"], r["kv_gbps"], r["raw_gbps"], r["ratio"]] for r in rows])
    return rows


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- 2. decode worker overhead ----------------------------------------------------------------------------
def bench_decode(quick: bool, device: str, threads: int) -> list[dict]:
    import torch
    import zmq

    from planner.runtime.model import build_model, decode_step
    from planner.runtime.config import make_config
    from planner.runtime.protocol import dumps, loads, pack
    from planner.runtime.launch import _spawn_entry
    from planner.specs.models import PRESETS

    spec = PRESETS[MODEL]
    batches = [1, 8, 32]
    prompt, steps = 128, (24 if quick else 64)
    cfg = make_config(model=MODEL, device=device, max_seqs=32, max_model_len=prompt + steps + 8,
                      threads_per_worker=threads)
    rows = []
    # (a) the real decode worker process, fed by a stand-in router and prefill (this process)
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    proc = multiprocessing.get_context("spawn").Process(
        target=_spawn_entry, args=(f"tcp://127.0.0.1:{port}", "decode", "decode-bench", "127.0.0.1", os.getpid()))
    proc.start()

    router.setsockopt(zmq.RCVTIMEO, 60000)  # a dead worker fails the benchmark instead of hanging it

    def recv(kind):
        while True:
            ident, frame = router.recv_multipart()
            msg = loads(frame)
            if os.environ.get("BENCH_DEBUG"):
                print("recv", msg["type"], str(msg)[:120], flush=True)
            if msg["type"] == kind:
                return ident, msg
            if msg["type"] in ("error", "fatal"):
                raise RuntimeError(f"decode worker: {msg}")

    ident, _ = recv("hello")
    router.send_multipart([ident, dumps({"type": "config", "config": cfg.to_json(), "eos_id": None})])
    _, ready = recv("ready")
    push = ctx.socket(zmq.PUSH)
    push.connect(ready["kv_addr"])
    kv = torch.randn(prompt, spec.kv_heads, spec.head_dim) * 0.5  # [T, Hk, D], the wire layout
    # (b) the bare loop in this process: same threads, batch, contexts, and the greedy argmax
    # copied to the host as the worker does. Run while the worker idles, in alternating rounds
    # (this machine is shared, so each side keeps its best round).
    torch.set_num_threads(threads)
    model = build_model(spec, device=device)
    model.setup_cache(32, prompt + steps + 8)
    for layer in model.layers:
        layer.self_attn.k_cache.normal_(0, 0.5)
        layer.self_attn.v_cache.normal_(0, 0.5)
    skip = 2

    def rate(stamps, b):
        assert len(stamps) > skip + 4, f"only {len(stamps)} full-batch steps at batch {b}"
        return b * (len(stamps) - 1 - skip) / (stamps[-1] - stamps[skip])

    def worker_round(b, tag):
        for j in range(b):
            rid = f"{tag}-{j}"
            for i in range(spec.layers):
                push.send_multipart(pack({"type": "kv", "id": rid, "layer": i, "layers": spec.layers, "codec": "none",
                                          "prompt_len": prompt, "max_tokens": steps + 1}, [kv, kv]))
            push.send(dumps({"type": "kv_done", "id": rid, "first_token": 1 + j, "finish": None, "prompt_len": prompt,
                             "max_tokens": steps + 1, "temperature": 0.0, "top_p": 1.0, "seed": 0, "bytes": 0,
                             "t_compute_end": 0.0}))
        # Sequences join a step or two apart (admission happens between steps), so time only
        # the steps where all b of them ran, until every one has finished.
        stamps, finished = [], 0
        while finished < b:
            _, msg = recv("tokens")
            if len(msg["items"]) == b:
                stamps.append(time.perf_counter())
            finished += sum(1 for item in msg["items"] if item[3])
        return rate(stamps, b)

    def bare_round(b):
        slots = torch.arange(b, device=device)
        tok = torch.ones(b, dtype=torch.long, device=device)
        stamps = []
        for s in range(steps):
            pos = torch.full((b,), prompt + s, device=device)
            tok = decode_step(model, tok, slots, pos, prompt + s + 1).argmax(-1)
            tok.tolist()
            stamps.append(time.perf_counter())
        return rate(stamps, b)

    rounds = 2 if quick else 3
    for b in batches:
        w = max(worker_round(b, f"b{b}-r{r}") for r in range(rounds) if not time.sleep(0.1))
        bare = max(bare_round(b) for _ in range(rounds))
        rows.append({"batch": b, "worker_tok_s": w, "bare_tok_s": bare, "overhead_pct": 100.0 * (1.0 - w / bare)})
    router.send_multipart([ident, dumps({"type": "shutdown"})])
    proc.join(10)
    ctx.destroy(linger=0)
    table(f"Decode worker vs bare decode_step loop (tiny fp32, {device}, {threads} thread(s), context {prompt}..{prompt + steps}; "
          "target overhead < 15%)", ["batch", "worker tok/s", "bare tok/s", "overhead %"],
          [[r["batch"], r["worker_tok_s"], r["bare_tok_s"], r["overhead_pct"]] for r in rows])
    return rows


# ---- 3. TPOT under a mixed load ---------------------------------------------------------------------------
def _pct(xs, q):
    return float(np.percentile(xs, q)) if xs else float("nan")


def bench_tpot(quick: bool) -> list[dict]:
    from planner.runtime import start_server
    from planner.measure.client import run_many

    rng = np.random.default_rng(0)
    n = 20 if quick else 40
    rate = 1.0  # requests/s
    long_prompt, long_out = 1024, 128
    payloads = []
    for i in range(n):
        if i % 2 == 0:  # long prompt, short answer
            payloads.append({"prompt": rng.integers(0, 32000, long_prompt).tolist(), "max_tokens": 16, "temperature": 0.0})
        else:  # short prompt, long answer
            payloads.append({"prompt": rng.integers(0, 32000, 32).tolist(), "max_tokens": long_out, "temperature": 0.0})
    arrivals = np.cumsum(rng.exponential(1.0 / rate, n)).tolist()
    setups = [
        ("disaggregated 1P+1D", dict(mode="disaggregated", prefill_workers=1, decode_workers=1)),
        ("colocated x2", dict(mode="colocated", workers=2)),
        ("colocated x2 chunked(128)", dict(mode="colocated", workers=2, chunked_prefill=True, max_batch_tokens=128)),
    ]
    rows = []
    for name, opts in setups:
        with start_server(model=MODEL, max_model_len=1200, max_seqs=32, threads_per_worker=1, **opts) as h:
            t0 = time.perf_counter()
            res = run_many(h.url, payloads, concurrency=n, timeout_s=600, arrivals_s=arrivals)
            wall = time.perf_counter() - t0
        errors = sum(1 for r in res if r.error)
        ok = [r for r in res if not r.error]
        ttft = [r.ttft_s for r in ok]
        tpot = [statistics.mean(r.gaps_s) for r in ok if r.gaps_s]
        gaps = [g for r in ok for g in r.gaps_s]
        toks = sum(len(r.token_ids) for r in ok)
        rows.append({"setup": name, "errors": errors, "ttft_p50_s": _pct(ttft, 50), "ttft_p99_s": _pct(ttft, 99),
                     "tpot_p50_ms": 1e3 * _pct(tpot, 50), "tpot_p99_ms": 1e3 * _pct(tpot, 99),
                     "itl_p50_ms": 1e3 * _pct(gaps, 50), "itl_p99_ms": 1e3 * _pct(gaps, 99),
                     "itl_max_ms": 1e3 * max(gaps, default=float("nan")), "tok_s": toks / wall})
    table(f"Mixed load on the same 2 cores ({n} requests, Poisson {rate}/s: half {long_prompt}-token prompts -> 16 tokens, "
          f"half 32-token prompts -> {long_out} tokens; 1 torch thread per worker)",
          ["setup", "errors", "TTFT p50 s", "TTFT p99 s", "TPOT p50 ms", "TPOT p99 ms", "ITL p50 ms", "ITL p99 ms",
           "ITL max ms", "out tok/s"],
          [[r["setup"], r["errors"], r["ttft_p50_s"], r["ttft_p99_s"], r["tpot_p50_ms"], r["tpot_p99_ms"],
            r["itl_p50_ms"], r["itl_p99_ms"], r["itl_max_ms"], r["tok_s"]] for r in rows])
    print("  TPOT = a request's mean gap between output tokens; ITL = every gap, all requests pooled.")
    return rows


# ---- 4. KV compression accuracy ----------------------------------------------------------------------------
def bench_codec(quick: bool) -> list[dict]:
    import torch

    from planner.runtime.model import build_model, decode_step, get_kv, prefill, set_kv
    from planner.runtime.protocol import compress, decompress
    from planner.specs.models import PRESETS

    spec = PRESETS[MODEL]
    model = build_model(spec)
    n_prompts, plen, steps = (4, 64, 24) if quick else (12, 128, 48)
    model.setup_cache(2, plen + steps + 1)
    rng = np.random.default_rng(1)
    rows = []
    prompts = [rng.integers(0, spec.vocab, plen).tolist() for _ in range(n_prompts)]

    def continue_from(slot, first):
        out = [first]
        for i in range(steps - 1):
            logits = decode_step(model, torch.tensor([out[-1]]), torch.tensor([slot]), torch.tensor([plen + i]), plen + i + 1)
            out.append(int(logits.argmax()))
        return out

    refs, kvs, firsts = [], [], []
    with torch.inference_mode():
        for p in prompts:
            first = int(prefill(model, torch.tensor([p]), torch.tensor([0])).argmax())
            kvs.append(get_kv(model, 0, plen))
            firsts.append(first)
            refs.append(continue_from(0, first))
        raw_bytes = sum(k.numel() * k.element_size() * 2 for k, _ in kvs[0])
        for codec in ("int8", "fp8"):
            agree, exact, sent = [], 0, 0
            for kv, first, ref in zip(kvs, firsts, refs):
                moved = []
                for k, v in kv:
                    pk, pv = compress(k, codec), compress(v, codec)
                    sent += sum(t.numel() * t.element_size() for t in pk + pv)
                    moved.append((decompress(pk, codec, k.dtype), decompress(pv, codec, v.dtype)))
                set_kv(model, 1, moved)
                got = continue_from(1, first)
                agree.append(sum(a == b for a, b in zip(got, ref)) / len(ref))
                exact += got == ref
            rows.append({"codec": codec, "bytes_ratio": raw_bytes * n_prompts / sent, "token_agreement": statistics.mean(agree),
                         "identical_outputs": f"{exact}/{n_prompts}"})
    table(f"KV compression (tiny fp32 KV, {n_prompts} prompts x {plen} tokens, {steps} greedy tokens each)",
          ["codec", "KV bytes / sent bytes", "token agreement", "identical outputs"],
          [[r["codec"], r["bytes_ratio"], r["token_agreement"], r["identical_outputs"]] for r in rows])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and requests")
    ap.add_argument("--only", default="kv,decode,tpot,codec", help="comma-separated sections")
    ap.add_argument("--device", default="cpu", help="device for the decode section")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the decode section")
    a = ap.parse_args(argv)
    sections = set(a.only.split(","))
    print(f"runtime_bench on {os.cpu_count()} CPU core(s), model {MODEL}")
    out = {}
    if "kv" in sections:
        out["kv"] = bench_kv(a.quick)
    if "decode" in sections:
        out["decode"] = bench_decode(a.quick, a.device, a.threads)
    if "codec" in sections:
        out["codec"] = bench_codec(a.quick)
    if "tpot" in sections:
        out["tpot"] = bench_tpot(a.quick)
    print("\n" + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
