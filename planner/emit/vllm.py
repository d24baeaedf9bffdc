"""vLLM: one `vllm serve` per deployment and, for a split, the proxy that joins prefill and decode.

Flags are vLLM 0.32.0's (vllm/engine/arg_utils.py, vllm/entrypoints/launchers/cli_args.py;
tests/test_emit.py parses them with that parser). A split uses `--kv-transfer-config` with
NixlConnector (kv_role kv_both on both sides, as vLLM's own NIXL integration tests run it) and
vLLM's toy proxy (tests/v1/kv_connector/nixl_integration/toy_proxy_server.py: first the prefill
worker with max_tokens 1, then the decode worker with the returned kv_transfer_params).
"""

from __future__ import annotations

import json
import shlex

from planner.emit.header import comment, header_lines
from planner.emit.recipe import Deployment, Recipe

VERSION = "vLLM 0.32.0 (`vllm serve`: vllm/engine/arg_utils.py EngineArgs + vllm/entrypoints/launchers/cli_args.py)"
PROXY = "tests/v1/kv_connector/nixl_integration/toy_proxy_server.py"
KV_TRANSFER = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
# Other connectors vLLM 0.32 registers (vllm/distributed/kv_transfer/kv_connector/factory.py) that
# move KV between a prefill and a decode instance.
OTHER_CONNECTORS = ("MooncakeConnector (Mooncake transfer engine, RDMA)", "MoRIIOConnector (AMD MoRI-IO, ROCm)",
                    "LMCacheConnectorV1 (LMCache's P/D mode)", "MultiConnector (several at once)")
PORTS = {"colocated": 8000, "prefill": 8100, "decode": 8200}
PROXY_PORT = 8000
NIXL_SIDE_CHANNEL_PORT = 5600  # vLLM's default VLLM_NIXL_SIDE_CHANNEL_PORT, written out so the firewall rule is visible

# planner dtype -> vLLM --dtype / --kv-cache-dtype / --quantization
WEIGHT_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "fp8": "bfloat16"}
KV_DTYPE = {"bf16": "auto", "fp16": "auto", "fp32": "auto", "fp8": "fp8", "int8": "int8_per_token_head"}


def engine_args(r: Recipe, d: Deployment) -> list[str]:
    """vLLM engine arguments for one deployment (also what Dynamo's and llm-d's vLLM workers take)."""
    a = ["--tensor-parallel-size", str(d.tp)]
    if r.weight_dtype in WEIGHT_DTYPE:
        a += ["--dtype", WEIGHT_DTYPE[r.weight_dtype]]
    if r.weight_dtype == "fp8":
        a += ["--quantization", "fp8"]  # online FP8 of a bf16 checkpoint; int8/int4 need a quantized checkpoint
    a += ["--kv-cache-dtype", KV_DTYPE.get(r.kv_dtype, "auto"),
          "--max-model-len", str(r.max_model_len),
          "--max-num-seqs", str(d.max_num_seqs),
          "--gpu-memory-utilization", f"{r.gpu_memory_utilization:g}",
          "--no-enable-prefix-caching"]
    if d.max_num_batched_tokens is not None:
        a += ["--max-num-batched-tokens", str(d.max_num_batched_tokens)]
    if d.chunked_prefill is True:
        a.append("--enable-chunked-prefill")
    elif d.chunked_prefill is False:
        a.append("--no-enable-chunked-prefill")
    if d.role in ("prefill", "decode"):
        a += ["--kv-transfer-config", json.dumps(KV_TRANSFER, separators=(",", ":"))]
    return a


def serve_args(r: Recipe, d: Deployment) -> list[str]:
    """`vllm serve` arguments (after `vllm serve`): the model, where to listen, the engine args."""
    return [r.model_id, "--host", "0.0.0.0", "--port", str(PORTS[d.role])] + engine_args(r, d)


def _hosts(d: Deployment) -> str:
    return " ".join(f"{d.name}-{i}" for i in range(d.replicas))


def render(r: Recipe) -> dict[str, str]:
    """{'vllm.sh': text}: a script run once per host, `bash vllm.sh DEPLOYMENT` (or `proxy`)."""
    split = r.side == "disaggregated"
    many = len(r.deployments) > 1 or r.deployments[0].replicas > 1
    endpoint = (f"http://PROXY_HOST:{PROXY_PORT}" if split else f"http://LOAD_BALANCER:{PROXY_PORT}" if many
                else f"http://{r.deployments[0].name}-0:{PORTS['colocated']}")
    head = header_lines(r, "vLLM launch recipe", VERSION, endpoint)
    if split:
        head += [f"split: --kv-transfer-config {json.dumps(KV_TRANSFER)} on every worker; other connectors vLLM 0.32 registers "
                 f"for P/D: {', '.join(OTHER_CONNECTORS)}",
                 f"proxy: vLLM's {PROXY} (from the vLLM v0.32.0 source tree; round-robin over prefill, then over decode, "
                 "so mixed GPU types get equal shares rather than the plan's capacity-weighted split); "
                 "llm-d's inference scheduler (llm-d-values.yaml) routes by load instead"]
    elif many:
        head.append("several replicas: put an HTTP load balancer (or llm-d's router) in front; the plan splits load in proportion to capacity")
    lines = ["#!/usr/bin/env bash", comment(head).rstrip("\n"), "#",
             "# usage: bash vllm.sh DEPLOYMENT   on each host of that deployment (one replica per host)",
             "#        bash vllm.sh proxy        on the proxy host (split only)" if split else "#",
             "set -euo pipefail", 'case "${1:-}" in']
    for d in r.deployments:
        lines.append(f"  {d.name})  # {d.replicas} host(s) with {d.tp} x {d.gpu_name} each: {_hosts(d)}")
        if split:
            lines.append(f"    export VLLM_NIXL_SIDE_CHANNEL_PORT={NIXL_SIDE_CHANNEL_PORT}")
            lines.append('    export VLLM_NIXL_SIDE_CHANNEL_HOST="${VLLM_NIXL_SIDE_CHANNEL_HOST:-$(hostname -i)}"')
        lines.append("    exec vllm serve " + " ".join(shlex.quote(x) for x in serve_args(r, d)))
        lines.append("    ;;")
    if split:
        pre = [d for d in r.deployments if d.role == "prefill"]
        dec = [d for d in r.deployments if d.role == "decode"]
        ph = " ".join(_hosts(d) for d in pre)
        dh = " ".join(_hosts(d) for d in dec)
        pp = " ".join(str(PORTS["prefill"]) for d in pre for _ in range(d.replicas))
        dp = " ".join(str(PORTS["decode"]) for d in dec for _ in range(d.replicas))
        lines += ["  proxy)  # prefill and decode host names: edit, or set PREFILL_HOSTS / DECODE_HOSTS",
                  f'    PREFILL_HOSTS="${{PREFILL_HOSTS:-{ph}}}"',
                  f'    DECODE_HOSTS="${{DECODE_HOSTS:-{dh}}}"',
                  f"    exec python3 {PROXY.rsplit('/', 1)[1]} --host 0.0.0.0 --port {PROXY_PORT} "
                  f"--prefiller-hosts $PREFILL_HOSTS --prefiller-ports {pp} --decoder-hosts $DECODE_HOSTS --decoder-ports {dp}",
                  "    ;;"]
    names = " | ".join([d.name for d in r.deployments] + (["proxy"] if split else []))
    lines += [f'  *) echo "usage: bash vllm.sh {names}" >&2; exit 2 ;;', "esac", ""]
    return {"vllm.sh": "\n".join(lines)}


def read_serve_commands(text: str) -> dict[str, list[str]]:
    """The `vllm serve` arguments of each deployment in an emitted vllm.sh (tests and the
    start-up benchmark read the recipe back with this, so they run what was written)."""
    out, name = {}, None
    for ln in text.splitlines():
        s = ln.strip()
        if s.endswith(")") or ")  #" in s:
            name = s.split(")", 1)[0]
        elif s.startswith("exec vllm serve ") and name:
            out[name] = shlex.split(s)[3:]
    return out
