"""SGLang: one `python -m sglang.launch_server` per deployment and, for a split, `sglang_router`
in PD mode in front.

Flags are SGLang 0.5.23's ServerArgs (python/sglang/srt/server_args.py and its
srt/arg_groups/fields/*.py) and sglang-router 0.3.2's RouterArgs (sglang_router/router_args.py);
tests/test_emit.py parses them with those parsers when the packages are unpacked locally, and
against the flag list read from that source otherwise.
"""

from __future__ import annotations

import shlex

from planner.emit.header import comment, header_lines
from planner.emit.recipe import Deployment, Recipe

VERSION = ("SGLang 0.5.23 (`python -m sglang.launch_server`: sglang/srt/server_args.py ServerArgs) and "
           "sglang-router 0.3.2 (`python -m sglang_router.launch_router`: sglang_router/router_args.py)")
# nixl: the same transfer library as the vLLM recipe. SGLang's default is mooncake (RDMA; give
# --disaggregation-ib-device); mori is AMD's.
TRANSFER_BACKEND = "nixl"
OTHER_BACKENDS = ("mooncake (SGLang's default; RDMA, --disaggregation-ib-device)", "mori (AMD)", "mooncake_tcp")
PORTS = {"colocated": 30000, "prefill": 30000, "decode": 30001}
BOOTSTRAP_PORT = 8998  # SGLang's default --disaggregation-bootstrap-port, written out for the router's --prefill URL PORT
ROUTER_PORT = 8000

WEIGHT_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "fp8": "bfloat16"}
KV_DTYPE = {"bf16": "auto", "fp16": "auto", "fp32": "auto", "fp8": "fp8_e4m3"}  # no int8 KV cache in 0.5.23: auto, noted


def server_args(r: Recipe, d: Deployment) -> list[str]:
    """`python -m sglang.launch_server` arguments for one deployment."""
    a = ["--model-path", r.model_id, "--host", "0.0.0.0", "--port", str(PORTS[d.role]), "--tp-size", str(d.tp)]
    if r.weight_dtype in WEIGHT_DTYPE:
        a += ["--dtype", WEIGHT_DTYPE[r.weight_dtype]]
    if r.weight_dtype == "fp8":
        a += ["--quantization", "fp8"]
    a += ["--kv-cache-dtype", KV_DTYPE.get(r.kv_dtype, "auto"),
          "--context-length", str(r.max_model_len),
          "--max-running-requests", str(d.max_num_seqs),
          "--mem-fraction-static", f"{r.gpu_memory_utilization:g}",
          "--disable-radix-cache"]
    if d.max_num_batched_tokens is not None:
        a += ["--max-prefill-tokens", str(d.max_num_batched_tokens)]
    if d.chunked_prefill is False:
        a += ["--chunked-prefill-size", "-1"]  # -1 disables chunked prefill (ServerArgs help)
    elif d.max_num_batched_tokens is not None:
        a += ["--chunked-prefill-size", str(d.max_num_batched_tokens)]
    if d.role in ("prefill", "decode"):
        a += ["--disaggregation-mode", d.role, "--disaggregation-transfer-backend", TRANSFER_BACKEND]
        if d.role == "prefill":
            a += ["--disaggregation-bootstrap-port", str(BOOTSTRAP_PORT)]
    return a


def router_args(r: Recipe) -> list[str]:
    """`python -m sglang_router.launch_router` arguments: PD mode over every replica's URL."""
    a = ["--pd-disaggregation"]
    for d in r.of("prefill"):
        for i in range(d.replicas):
            a += ["--prefill", f"http://{d.name}-{i}:{PORTS['prefill']}", str(BOOTSTRAP_PORT)]
    for d in r.of("decode"):
        for i in range(d.replicas):
            a += ["--decode", f"http://{d.name}-{i}:{PORTS['decode']}"]
    return a + ["--host", "0.0.0.0", "--port", str(ROUTER_PORT)]


def render(r: Recipe) -> dict[str, str]:
    """{'sglang.sh': text}: `bash sglang.sh DEPLOYMENT` on each host, `bash sglang.sh router`."""
    split = r.side == "disaggregated"
    many = len(r.deployments) > 1 or r.deployments[0].replicas > 1
    endpoint = f"http://ROUTER_HOST:{ROUTER_PORT}" if split or many else f"http://{r.deployments[0].name}-0:{PORTS['colocated']}"
    head = header_lines(r, "SGLang launch recipe", VERSION, endpoint)
    if split:
        head.append(f"split: --disaggregation-transfer-backend {TRANSFER_BACKEND}; others SGLang 0.5.23 accepts: {', '.join(OTHER_BACKENDS)}")
    if r.kv_dtype not in KV_DTYPE:
        head.append(f"note: SGLang 0.5.23 has no {r.kv_dtype} KV cache: --kv-cache-dtype auto (the plan's KV sizes assume {r.kv_dtype})")
    if many and not split:
        head.append("several replicas: `python -m sglang_router.launch_router --worker-urls URL ...` (or any load balancer) in front")
    lines = ["#!/usr/bin/env bash", comment(head).rstrip("\n"), "#",
             "# usage: bash sglang.sh DEPLOYMENT   on each host of that deployment (one replica per host)",
             "#        bash sglang.sh router       on the router host (split only)" if split else "#",
             "set -euo pipefail", 'case "${1:-}" in']
    for d in r.deployments:
        hosts = " ".join(f"{d.name}-{i}" for i in range(d.replicas))
        lines += [f"  {d.name})  # {d.replicas} host(s) with {d.tp} x {d.gpu_name} each: {hosts}",
                  "    exec python3 -m sglang.launch_server " + " ".join(shlex.quote(x) for x in server_args(r, d)), "    ;;"]
    if split:
        lines += ["  router)  # the URLs name each replica's host: edit them to yours",
                  "    exec python3 -m sglang_router.launch_router " + " ".join(shlex.quote(x) for x in router_args(r)), "    ;;"]
    names = " | ".join([d.name for d in r.deployments] + (["router"] if split else []))
    lines += [f'  *) echo "usage: bash sglang.sh {names}" >&2; exit 2 ;;', "esac", ""]
    return {"sglang.sh": "\n".join(lines)}


def read_commands(text: str) -> dict[str, list[str]]:
    """Each case's arguments (after `-m MODULE`) in an emitted sglang.sh: name -> argv."""
    out, name = {}, None
    for ln in text.splitlines():
        s = ln.strip()
        if ")  #" in s:
            name = s.split(")", 1)[0]
        elif s.startswith("exec python3 -m ") and name:
            out[name] = shlex.split(s)[4:]
    return out
