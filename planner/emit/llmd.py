"""llm-d: values for the llm-d-modelservice Helm chart (prefill and decode pools of vLLM pods).

Keys read from llm-d-incubation/llm-d-modelservice chart v0.4.12 (commit 3051935e):
charts/llm-d-modelservice/values.yaml, values.schema.json, templates/_helpers.tpl and
examples/values-pd.yaml. With `modelCommand: vllmServe` the chart writes `vllm serve MODEL --port
--served-model-name` and `--tensor-parallel-size` from `parallelism.tensor`; it requests
`parallelism.tensor` accelerators of `accelerator.type` and pins nodes by
`acceleratorTypes.labelKey/labelValues`. One release holds one prefill and one decode pool, so a
pool that mixes GPU types becomes extra releases (`create: false` for the other role) sharing the
model's labels, which the InferencePool selects.
"""

from __future__ import annotations

import math

import yaml

from planner.emit import vllm
from planner.emit.dynamo import dns_name
from planner.emit.header import comment, header_lines
from planner.emit.recipe import Deployment, Recipe

VERSION = ("llm-d-modelservice Helm chart v0.4.12 (llm-d-incubation/llm-d-modelservice @3051935e: values.yaml, "
           "values.schema.json), vLLM 0.32.0 engine args")
IMAGE = "ghcr.io/llm-d/llm-d-cuda:latest"  # examples/values-pd.yaml
ROCM_IMAGE = "REPLACE-ME/rocm-vllm-image"  # the chart's examples name no ROCm image
ACCELERATOR = {"NVIDIA": "nvidia", "AMD": "amd"}
SIDE_CHANNEL_PORT = vllm.NIXL_SIDE_CHANNEL_PORT


def _args(r: Recipe, d: Deployment) -> list[str]:
    """vLLM engine args minus what the chart writes itself (--tensor-parallel-size from parallelism)."""
    a = vllm.engine_args(r, d)
    i = a.index("--tensor-parallel-size")
    return a[:i] + a[i + 2:]


def _pool(r: Recipe, d: Deployment | None, split: bool) -> dict:
    if d is None:
        return {"create": False}
    env = []
    if split:
        env = [{"name": "VLLM_NIXL_SIDE_CHANNEL_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
               {"name": "VLLM_NIXL_SIDE_CHANNEL_PORT", "value": str(SIDE_CHANNEL_PORT)}]
    key, value = d.node_label
    container = {"name": "vllm", "image": ROCM_IMAGE if d.vendor == "AMD" else IMAGE, "modelCommand": "vllmServe",
                 "args": _args(r, d), "env": env, "mountModelVolume": True}
    if split:
        container["ports"] = [{"containerPort": SIDE_CHANNEL_PORT, "protocol": "TCP"}]  # NIXL side channel
    return {"create": True, "replicas": d.replicas, "accelerator": {"type": ACCELERATOR.get(d.vendor, "nvidia")},
            "parallelism": {"tensor": d.tp}, "acceleratorTypes": {"labelKey": key, "labelValues": [value]},
            "containers": [container]}


def releases(r: Recipe) -> list[tuple[str, dict]]:
    """(release name, values) pairs: the first carries the first prefill and decode deployments,
    each further deployment of a mixed pool its own release."""
    split = r.side == "disaggregated"
    pre, dec = (r.of("prefill"), r.of("decode")) if split else ([], r.of("colocated"))
    slug = dns_name(r.model_id.replace("/", "-"))
    base = {
        "modelArtifacts": {"name": r.model_id, "uri": f"hf://{r.model_id}", "size": f"{_checkpoint_gib(r.params_total)}Gi",
                           "labels": {"llm-d.ai/inference-serving": "true", "llm-d.ai/model": slug}},
        "routing": {"servicePort": 8000, "proxy": {"enabled": split, "connector": "nixlv2"}},
    }
    pairs = [(pre[0] if pre else None, dec[0])] + [(p, None) for p in pre[1:]] + [(None, q) for q in dec[1:]]
    out = []
    for i, (p, q) in enumerate(pairs):
        name = dns_name(f"{r.model}-{r.side}" if i == 0 else f"{r.model}-{(p or q).name}")
        out.append((name, {**base, "decode": _pool(r, q, split), "prefill": _pool(r, p, split)}))
    return out


def render(r: Recipe) -> dict[str, str]:
    """{'llm-d-values.yaml': text, ...}: `helm install NAME llm-d-modelservice/llm-d-modelservice -f FILE`."""
    files = {}
    rel = releases(r)
    for i, (name, values) in enumerate(rel):
        head = header_lines(r, f"llm-d-modelservice Helm values, release {name} ({i + 1} of {len(rel)})", VERSION,
                            "http://INFERENCE_GATEWAY")
        head.append(f"install: helm install {name} llm-d-modelservice/llm-d-modelservice -f THIS_FILE "
                    "(chart repo https://llm-d-incubation.github.io/llm-d-modelservice/), behind llm-d's inference gateway")
        head.append("node selection: acceleratorTypes (GPU product labels; check yours with kubectl get nodes -L LABEL)")
        if any(d.vendor == "AMD" for d in r.deployments):
            head.append(f"AMD pools: {ROCM_IMAGE} marks where a ROCm vLLM image goes")
        if len(rel) > 1:
            head.append("mixed GPU types: one release per extra type (create: false for the other role), same llm-d.ai/model label")
        fname = "llm-d-values.yaml" if i == 0 else f"llm-d-values-{i + 1}.yaml"
        files[fname] = comment(head) + yaml.safe_dump(values, sort_keys=False, width=200)
    return files


def _checkpoint_gib(params_total: int) -> int:
    """Model-cache volume (GiB): a bf16 checkpoint (2 B/param) plus 1 GiB of tokenizer and config files."""
    return math.ceil(params_total * 2 / 2**30) + 1
