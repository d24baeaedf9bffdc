"""NVIDIA Dynamo: a DynamoGraphDeployment (apiVersion nvidia.com/v1beta1) with a Frontend and one
worker component per deployment (type prefill / decode, or worker when colocated), each with its
replicas, GPU resources, node selector and the vLLM engine args of the vLLM recipe.

Shape read from ai-dynamo/dynamo examples/backends/vllm/deploy/v1beta1/disagg.yaml (commit 88396aa0)
and agg.yaml (vllm-runtime 1.3.1): spec.components[] of {name, type, replicas, podTemplate} where
podTemplate is a core PodTemplateSpec whose container `main` runs `python3 -m dynamo.vllm`.
v1alpha1 (spec.services) is deprecated in the CRD (deploy/operator/config/crd/bases/
nvidia.com_dynamographdeployments.yaml).
"""

from __future__ import annotations

import re

import yaml

from planner.emit import vllm
from planner.emit.header import comment, header_lines
from planner.emit.recipe import Deployment, Recipe

VERSION = ("Dynamo DynamoGraphDeployment nvidia.com/v1beta1 (ai-dynamo/dynamo examples/backends/vllm/deploy/v1beta1/"
           "disagg.yaml @88396aa0), worker `python3 -m dynamo.vllm` with vLLM 0.32.0 engine args")
IMAGE = "nvcr.io/nvidia/ai-dynamo/vllm-runtime:1.3.1"
ROCM_IMAGE = "REPLACE-ME/rocm-dynamo-vllm-runtime"  # Dynamo publishes CUDA runtime images only
TYPES = {"prefill": "prefill", "decode": "decode", "colocated": "worker"}
FRONTEND_PORT = 8000


def dns_name(text: str) -> str:
    """A Kubernetes object name (RFC 1123 label: lowercase alphanumerics and '-', at most 63)."""
    s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return s[:63].rstrip("-") or "planner"


def component_name(d: Deployment) -> str:
    """VllmPrefillL40sTp1Worker: the examples' CamelCase, one per deployment."""
    parts = re.split(r"[^A-Za-z0-9]+", d.name)
    return "Vllm" + "".join(p[:1].upper() + p[1:] for p in parts if p) + "Worker"


def _worker(r: Recipe, d: Deployment) -> dict:
    amd = d.vendor == "AMD"
    args = ["--model", r.model_id]
    if d.role in ("prefill", "decode"):
        args += ["--disaggregation-mode", d.role]
    args += vllm.engine_args(r, d)
    gpus = {d.gpu_resource: str(d.tp)}
    key, value = d.node_label
    container = {"name": "main", "image": ROCM_IMAGE if amd else IMAGE, "workingDir": "/workspace/examples/backends/vllm",
                 "command": ["python3", "-m", "dynamo.vllm"], "args": args,
                 "envFrom": [{"secretRef": {"name": "hf-token-secret"}}],
                 "resources": {"limits": dict(gpus), "requests": dict(gpus)}}
    return {"name": component_name(d), "type": TYPES[d.role], "replicas": d.replicas,
            "podTemplate": {"spec": {"nodeSelector": {key: value}, "containers": [container]}}}


def manifest(r: Recipe) -> dict:
    """The DynamoGraphDeployment as a dict (what render writes as YAML)."""
    frontend = {"name": "Frontend", "type": "frontend", "replicas": 1,
                "podTemplate": {"spec": {"containers": [{"name": "main", "image": IMAGE}]}}}
    return {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment",
            "metadata": {"name": dns_name(f"planner-{r.model}-{r.side}")},
            "spec": {"components": [frontend] + [_worker(r, d) for d in r.deployments]}}


def render(r: Recipe) -> dict[str, str]:
    """{'dynamo.yaml': text}: `kubectl apply -f dynamo.yaml -n NAMESPACE` (Dynamo platform installed)."""
    head = header_lines(r, "Dynamo DynamoGraphDeployment", VERSION, f"http://FRONTEND:{FRONTEND_PORT}")
    head.append("apply: kubectl create secret generic hf-token-secret --from-literal=HF_TOKEN=... ; kubectl apply -f dynamo.yaml; "
                f"kubectl port-forward svc/{dns_name(f'planner-{r.model}-{r.side}')}-frontend {FRONTEND_PORT}:{FRONTEND_PORT}")
    head.append("node selectors: GPU product labels (nvidia.com/gpu.product from GPU feature discovery, amd.com/gpu.product-name "
                "from AMD's labeller): check yours with kubectl get nodes -L LABEL")
    if any(d.vendor == "AMD" for d in r.deployments):
        head.append(f"AMD deployments: Dynamo's published runtime images are CUDA builds; {ROCM_IMAGE} marks where a ROCm build goes")
    if len([d for d in r.deployments if d.role != "colocated"]) > 2 or len(r.of("colocated")) > 1:
        head.append("mixed GPU types: one component per type, all of the same component type; check that your Dynamo release's "
                    "router spreads requests over several components of one type")
    return {"dynamo.yaml": comment(head) + yaml.safe_dump(manifest(r), sort_keys=False, width=200)}
