"""planner emit: the pilot's scaling, the recipe derived from a plan, and each engine's recipe checked
against that engine's own parser or schema where it is installed here (skipped with the reason
otherwise), and against the flags and fields read from its source always.

Parsers and schemas used when present (paths overridable by environment variables):
- vLLM 0.32.0 CPU build: PLANNER_VLLM_PYTHON (default ~/.cache/planner-vllm/venv/bin/python).
- SGLang 0.5.23 ServerArgs + sglang-router 0.3.2 RouterArgs: PLANNER_SGLANG_PATH (default
  ~/.cache/planner-sglang; `src/` = the two wheels unpacked (`pip download sglang==0.5.23
  sglang-router==0.3.2 --no-deps`, unzip), `deps/` = `pip install --no-deps --target deps orjson
  pybase64 requests urllib3 certifi triton starlette msgspec psutil pydantic pydantic-core annotated-types
  typing-inspection`; torch comes from this venv).
- kubernetes-validate 1.37.0 (Kubernetes' published OpenAPI schemas): PLANNER_K8S_VALIDATE_PATH
  (default ~/.cache/planner-k8s-validate: `pip install --no-deps --target ... kubernetes-validate
  importlib_resources`).
- llm-d-modelservice chart v0.4.12 values.schema.json: PLANNER_LLMD_SCHEMA (default
  ~/.cache/planner-llmd/values.schema.json, from llm-d-incubation/llm-d-modelservice @3051935e).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.cli.main import app, main
from planner.emit import ENGINES, emit, parse_engines, render
from planner.emit import llmd, sglang, vllm
from planner.emit.header import validate_command
from planner.emit.pilot import capacity_share, per_replica_loads, role_replicas
from planner.emit.recipe import recipe_from_plan
from planner.errors import BadInput
from planner.queueing.models import DEFAULT_PREFILL_TOKEN_BUDGET, MAX_DECODE_BATCH

HOME = Path.home()
VLLM_PY = Path(os.environ.get("PLANNER_VLLM_PYTHON", HOME / ".cache/planner-vllm/venv/bin/python"))
SGLANG = Path(os.environ.get("PLANNER_SGLANG_PATH", HOME / ".cache/planner-sglang"))
K8S_VALIDATE = Path(os.environ.get("PLANNER_K8S_VALIDATE_PATH", HOME / ".cache/planner-k8s-validate"))
LLMD_SCHEMA = Path(os.environ.get("PLANNER_LLMD_SCHEMA", HOME / ".cache/planner-llmd/values.schema.json"))


# --- the two plans of the README: the blog's scenario (colocated, mixed types) and a long-prompt 70B split ---

def _plan(**kw) -> dict:
    from planner.api import plan
    from planner.measure.files import _jsonable

    return json.loads(json.dumps(plan(pareto=False, **kw).to_dict(), default=_jsonable))


@pytest.fixture(scope="module")
def blog():
    return _plan(model="llama-2-7b", workload=None, rate=100, input_len="100", output_len="500")


@pytest.fixture(scope="module")
def long70():
    return _plan(model="llama-3.1-70b", workload=None, rate=100, input_len="8000", output_len="300", ttft_slo_ms=2000, tpot_slo_ms=30)


def _unchunked(plan: dict) -> dict:
    """The blog plan with its colocated pool switched to unchunked prefill (a mode the optimizer can pick)."""
    p = copy.deepcopy(plan)
    for it in p["colocated"]["pool"]:
        it["mode"] = "unchunked"
    return p


# --- pilot scaling: known answers and properties ---

@pytest.mark.parametrize("counts,f,want", [
    ([11], 0.1, [2]), ([2], 0.1, [1]), ([20], 0.1, [2]), ([1, 2], 0.1, [0, 1]), ([3, 3], 0.5, [2, 1]),
    ([5, 1], 1.0, [5, 1]), ([4, 4], 0.25, [1, 1]),
])
def test_role_replicas_known_answers(counts, f, want):
    assert role_replicas(counts, f) == want


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=4).filter(lambda c: sum(c) > 0), st.floats(0.01, 1.0))
def test_role_replicas_properties(counts, f):
    got = role_replicas(counts, f)
    assert sum(got) == max(1, math.ceil(f * sum(counts) - 1e-9))  # at least the fraction, whole replicas
    assert all(0 <= g <= n for g, n in zip(got, counts))  # never more of a type than the plan buys
    if f == 1.0:
        assert got == counts


def test_capacity_share_and_loads():
    assert capacity_share([2, 1], [1, 1], [10.0, 40.0]) == pytest.approx(50 / 60)
    loads = per_replica_loads(30.0, [2, 1], [10.0, 40.0])
    assert loads == pytest.approx([5.0, 20.0])  # split in proportion to capacity
    assert sum(n * x for n, x in zip([2, 1], loads)) == pytest.approx(30.0)


# --- the recipe: what every engine reads from the plan ---

def test_full_recipe_is_the_plan(long70):
    r = recipe_from_plan(long70, "p.json")
    assert r.side == "disaggregated" == long70["recommendation"]
    for role in ("prefill", "decode"):
        items = long70["disaggregated"][role]
        deps = r.of(role)
        assert [(d.gpu, d.tp, d.replicas) for d in deps] == [(i["gpu"], i["tp"], i["replicas"]) for i in items]
    assert r.pilot_rate_rps == pytest.approx(long70["workload"]["rate_rps"])
    assert r.usd_per_hour == pytest.approx(long70["disaggregated"]["usd_per_hour"], rel=1e-6)
    assert r.max_model_len == 8301  # longest prompt + longest output + BOS
    pre, dec = r.of("prefill")[0], r.of("decode")[0]
    assert (pre.max_num_seqs, pre.max_num_batched_tokens) == (MAX_DECODE_BATCH, DEFAULT_PREFILL_TOKEN_BUDGET)
    assert dec.max_num_batched_tokens is None and dec.chunked_prefill is None


def test_pilot_keeps_per_replica_load(long70):
    r = recipe_from_plan(long70, "p.json", pilot_fraction=0.1)
    pre, dec = r.of("prefill")[0], r.of("decode")[0]
    n_p, n_d = long70["disaggregated"]["prefill"][0]["replicas"], long70["disaggregated"]["decode"][0]["replicas"]
    assert (pre.replicas, dec.replicas) == (math.ceil(0.1 * n_p), math.ceil(0.1 * n_d))
    rate = long70["workload"]["rate_rps"]
    assert r.pilot_rate_rps == pytest.approx(rate * min(pre.replicas / n_p, dec.replicas / n_d))
    assert r.pilot_rate_rps >= 0.1 * rate
    for d in r.deployments:
        assert d.load_rps <= d.plan_load_rps * (1 + 1e-9)
    binding = min(r.deployments, key=lambda d: d.replicas / d.plan_replicas)
    assert binding.load_rps == pytest.approx(binding.plan_load_rps)
    assert r.usd_per_hour < long70["disaggregated"]["usd_per_hour"]


def test_mixed_pool_is_one_deployment_per_type(blog):
    pool = blog["colocated"]["pool"]
    r = recipe_from_plan(blog, "p.json", side="colocated")
    assert len(pool) > 1, "the blog plan's colocated pool mixes GPU types (the case under test)"
    assert [(d.gpu, d.tp, d.replicas) for d in r.deployments] == [(i["gpu"], i["tp"], i["replicas"]) for i in pool]
    assert len({d.name for d in r.deployments}) == len(pool)
    chunk = int(pool[0]["mode"].split()[1])
    assert r.deployments[0].max_num_batched_tokens == chunk and r.deployments[0].chunked_prefill is True


def test_unchunked_budget_holds_the_longest_prompt(blog):
    r = recipe_from_plan(_unchunked(blog), "p.json", side="colocated")
    for d in r.deployments:
        assert d.chunked_prefill is False and d.max_num_batched_tokens >= r.max_model_len


@pytest.mark.parametrize("mutate,msg", [
    (lambda p: p.pop("recommendation"), "missing field 'recommendation'"),
    (lambda p: p["colocated"].update(feasible=False, why_infeasible="x"), "colocated.feasible is false"),
    (lambda p: p["colocated"]["pool"][0].update(mode="chunked many"), "mode 'chunked many'"),
    (lambda p: p["colocated"].update(pool=[]), "colocated.pool is empty"),
])
def test_bad_plans_name_the_field(blog, mutate, msg):
    p = copy.deepcopy(blog)
    mutate(p)
    with pytest.raises(BadInput, match=re.escape(msg)):
        recipe_from_plan(p, "p.json", side="colocated")


def test_limits_follow_the_plans_engine(long70):
    """A plan made with --engine vllm emits vLLM's per-device defaults; the generic one its own."""
    from planner.queueing.engine import vllm_serve_defaults
    from planner.specs.catalog import load_catalog

    gen = recipe_from_plan(long70, "p.json")
    assert {d.max_num_seqs for d in gen.deployments} == {256}
    as_vllm = {**long70, "engine": {"name": "vllm", "limits_by_device": True}}
    for d in recipe_from_plan(as_vllm, "p.json").deployments:
        seqs, tokens = vllm_serve_defaults(load_catalog().resolve(d.gpu), d.tp)
        assert d.max_num_seqs == seqs
        if d.role == "prefill":
            assert d.max_num_batched_tokens == tokens


def test_parse_engines():
    assert parse_engines(["all"]) == list(ENGINES)
    assert parse_engines(["vllm,sglang", "vllm"]) == ["vllm", "sglang"]
    with pytest.raises(BadInput, match="'trt'"):
        parse_engines(["trt"])


# --- the header and its validate command ---

def test_header_carries_plan_predictions_and_a_real_validate_command(long70):
    r = recipe_from_plan(long70, "p.json", pilot_fraction=0.1)
    text = render(r, "vllm")["vllm.sh"]
    head = [ln for ln in text.splitlines() if ln.startswith("#")]
    p50 = long70["disaggregated"]["predicted"]["ttft_ms"]["p50"]
    assert any(f"TTFT p50 {p50:.4g} ms" in ln for ln in head)
    assert sum("planner.queueing.engine" in ln for ln in head) >= 2  # the batch cap and prefill budget: the plan's engine
    cmd = next(ln.lstrip("# ") for ln in head if "planner validate" in ln)
    assert cmd == validate_command(r, "http://PROXY_HOST:8000")
    # the command parses with planner's own `validate` options (unknown flags would raise)
    import typer.main

    argv = shlex.split(cmd)
    assert argv[:2] == ["planner", "validate"]
    ctx = typer.main.get_command(app).commands["validate"].make_context("validate", argv[2:])
    assert ctx.params["pilot_rate"] == pytest.approx(r.pilot_rate_rps, rel=1e-3)
    assert ctx.params["endpoint"] == "http://PROXY_HOST:8000" and ctx.params["mode"] == "disaggregated"


# --- vLLM: the emitted `vllm serve` arguments through vLLM's own parser ---

def _vllm_commands(plans) -> dict:
    cmds = {}
    for tag, plan, kw in plans:
        for name, argv in vllm.read_serve_commands(render(recipe_from_plan(plan, "p.json", **kw), "vllm")["vllm.sh"]).items():
            cmds[f"{tag}:{name}"] = argv
    return cmds


@pytest.mark.e2e  # imports the engine in its own interpreter: seconds
def test_vllm_args_parse_with_vllms_parser(blog, long70):
    if not VLLM_PY.exists():
        pytest.skip(f"vLLM is not installed at {VLLM_PY} (set PLANNER_VLLM_PYTHON to a python with vllm 0.32)")
    plans = [("blog", blog, {}), ("unchunked", _unchunked(blog), {"side": "colocated"}), ("long70", long70, {"pilot_fraction": 0.1}),
             ("blog-split", blog, {"side": "disaggregated"})]
    cmds = _vllm_commands(plans)
    cmds["control:typo"] = ["m", "--max-num-seqz", "3"]  # the check can fail: a misspelt flag is refused
    env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "VLLM_CONFIGURE_LOGGING": "0"}
    env.pop("HF_HUB_OFFLINE", None)  # offline mode makes EngineArgs look the model up on disk
    proc = subprocess.run([str(VLLM_PY), str(Path(__file__).with_name("vllm_parse_args.py"))], input=json.dumps(cmds),
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" in got.pop("control:typo")
    for key, parsed in got.items():
        assert "error" not in parsed, (key, parsed)
    for tag, plan, kw in plans:
        r = recipe_from_plan(plan, "p.json", **kw)
        for d in r.deployments:
            a = got[f"{tag}:{d.name}"]
            assert a["model"] == r.model_id and a["tensor_parallel_size"] == d.tp
            assert a["max_num_seqs"] == d.max_num_seqs and a["max_num_batched_tokens"] == d.max_num_batched_tokens
            assert a["enable_chunked_prefill"] == d.chunked_prefill and a["enable_prefix_caching"] is False
            assert a["max_model_len"] == r.max_model_len and a["gpu_memory_utilization"] == pytest.approx(r.gpu_memory_utilization)
            assert a["kv_cache_dtype"] == "auto" and a["dtype"] == "bfloat16"
            want_kv = {"kv_connector": "NixlConnector", "kv_role": "kv_both"} if d.role != "colocated" else None
            assert a["kv_transfer_config"] == want_kv


def test_vllm_proxy_lists_every_replica(long70):
    r = recipe_from_plan(long70, "p.json")
    text = render(r, "vllm")["vllm.sh"]
    proxy = next(ln for ln in text.splitlines() if "toy_proxy_server.py" in ln and "exec" in ln)
    n_p, n_d = sum(d.replicas for d in r.of("prefill")), sum(d.replicas for d in r.of("decode"))
    assert proxy.split("--prefiller-ports ")[1].split(" --")[0].split() == ["8100"] * n_p
    assert proxy.split("--decoder-ports ")[1].split() == ["8200"] * n_d
    hosts = next(ln for ln in text.splitlines() if "PREFILL_HOSTS=" in ln)
    assert len(hosts.split(":-")[1].rstrip('}"').split()) == n_p


# --- SGLang: ServerArgs and RouterArgs when unpacked here, the flags read from their source always ---

# From SGLang 0.5.23 python/sglang/srt/arg_groups/fields/{model,serving,parallel,schedule,memory,disagg}.py
# (ServerArgs fields; dashes for underscores) with the choices the emitter relies on, and sglang-router
# 0.3.2 sglang_router/router_args.py.
SGLANG_FLAGS = {
    "--model-path": None, "--host": None, "--port": None, "--tp-size": None,
    "--dtype": ["auto", "half", "float16", "bfloat16", "float", "float32"],
    "--quantization": None, "--kv-cache-dtype": ["auto", "fp8_e5m2", "fp8_e4m3", "mxfp8", "bf16", "bfloat16", "nvfp4", "fp4_mx_block16"],
    "--context-length": None, "--max-running-requests": None, "--mem-fraction-static": None, "--disable-radix-cache": None,
    "--max-prefill-tokens": None, "--chunked-prefill-size": None,
    "--disaggregation-mode": ["null", "prefill", "decode"],
    "--disaggregation-transfer-backend": ["mooncake", "nixl", "ascend", "fake", "mori", "mooncake_tcp"],
    "--disaggregation-bootstrap-port": None,
}
ROUTER_FLAGS = {"--pd-disaggregation", "--prefill", "--decode", "--host", "--port"}


def _sglang_commands(plans) -> dict:
    out = {}
    for tag, plan, kw in plans:
        for name, argv in sglang.read_commands(render(recipe_from_plan(plan, "p.json", **kw), "sglang")["sglang.sh"]).items():
            out[f"{tag}:{name}"] = argv
    return out


def _flag_values(argv: list) -> dict:
    out, key = {}, None
    for a in argv:
        if a.startswith("--"):
            key = a
            out[key] = []
        elif key:
            out[key].append(a)
    return out


def test_sglang_flags_are_documented_flags(blog, long70):
    cmds = _sglang_commands([("blog", blog, {}), ("long70", long70, {"pilot_fraction": 0.1}), ("unchunked", _unchunked(blog), {"side": "colocated"})])
    assert any(k.endswith(":router") for k in cmds)
    for key, argv in cmds.items():
        allowed = ROUTER_FLAGS if key.endswith(":router") else SGLANG_FLAGS
        for flag, vals in _flag_values(argv).items():
            assert flag in allowed, (key, flag)
            choices = SGLANG_FLAGS.get(flag) if not key.endswith(":router") else None
            if choices:
                assert vals and vals[0] in choices, (key, flag, vals)


SGLANG_CHECK = r"""
import argparse, json, sys
try:
    from sglang.srt.server_args import ServerArgs
    from sglang_router.router_args import RouterArgs
except ModuleNotFoundError as e:  # an incomplete deps/ folder is this machine's set-up, not a recipe fault
    if (e.name or "").split(".")[0] in ("sglang", "sglang_router"):
        raise
    print(json.dumps({"missing": e.name}))
    sys.exit(0)
out = {}
for name, argv in json.load(sys.stdin).items():
    if name.endswith(":router"):
        p = argparse.ArgumentParser(exit_on_error=False); RouterArgs.add_cli_args(p, use_router_prefix=False)
        try:
            a = RouterArgs.from_cli_args(p.parse_args(argv), use_router_prefix=False)
            out[name] = {"pd": a.pd_disaggregation, "prefill": [list(x) for x in a.prefill_urls], "decode": a.decode_urls}
        except (SystemExit, argparse.ArgumentError) as e:
            out[name] = {"error": str(e)}
        continue
    p = argparse.ArgumentParser(exit_on_error=False); ServerArgs.add_cli_args(p)
    try:
        a = p.parse_args(argv)
        out[name] = {k: getattr(a, k) for k in ("model_path", "tp_size", "max_running_requests", "chunked_prefill_size",
                     "max_prefill_tokens", "disaggregation_mode", "disaggregation_transfer_backend", "kv_cache_dtype",
                     "context_length", "mem_fraction_static", "disable_radix_cache")}
    except (SystemExit, argparse.ArgumentError) as e:
        out[name] = {"error": str(e)}
print(json.dumps(out))
"""


@pytest.mark.e2e  # imports the engine in its own interpreter: seconds
def test_sglang_args_parse_with_serverargs(blog, long70):
    src, deps = SGLANG / "src", SGLANG / "deps"
    if not (src / "sglang" / "srt" / "server_args.py").exists():
        pytest.skip(f"SGLang 0.5.23 is not unpacked at {src} (see this module's docstring); the documented-flags test still runs")
    plans = [("blog", blog, {}), ("long70", long70, {"pilot_fraction": 0.1}), ("unchunked", _unchunked(blog), {"side": "colocated"})]
    cmds = _sglang_commands(plans)
    cmds["control:typo"] = ["--model-path", "m", "--tp-sizes", "2"]
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{deps}"}
    proc = subprocess.run([sys.executable, "-c", SGLANG_CHECK], input=json.dumps(cmds), capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    if "missing" in got:
        pytest.skip(f"SGLang is unpacked at {src} but its dependency {got['missing']!r} is not in {deps} or this venv")
    assert "error" in got.pop("control:typo")
    for key, parsed in got.items():
        assert "error" not in parsed, (key, parsed)
    r = recipe_from_plan(long70, "p.json", pilot_fraction=0.1)
    pre = got[f"long70:{r.of('prefill')[0].name}"]
    assert (pre["disaggregation_mode"], pre["disaggregation_transfer_backend"], pre["tp_size"]) == ("prefill", "nixl", r.of("prefill")[0].tp)
    assert pre["max_running_requests"] == MAX_DECODE_BATCH and pre["chunked_prefill_size"] == DEFAULT_PREFILL_TOKEN_BUDGET
    router = got["long70:router"]
    assert router["pd"] is True and len(router["prefill"]) == r.of("prefill")[0].replicas and len(router["decode"]) == r.of("decode")[0].replicas
    assert all(bp == sglang.BOOTSTRAP_PORT for _, bp in router["prefill"])
    unch = recipe_from_plan(_unchunked(blog), "p.json", side="colocated")
    assert got[f"unchunked:{unch.deployments[0].name}"]["chunked_prefill_size"] == -1


# --- Kubernetes YAML: Dynamo's DynamoGraphDeployment and llm-d's Helm values ---

def _docs(text: str) -> list:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def _all_recipes(blog, long70):
    return [recipe_from_plan(blog, "p.json"), recipe_from_plan(long70, "p.json"), recipe_from_plan(long70, "p.json", pilot_fraction=0.1),
            recipe_from_plan(blog, "p.json", side="disaggregated")]


DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_dynamo_manifest_required_fields(blog, long70):
    for r in _all_recipes(blog, long70):
        (doc,) = _docs(render(r, "dynamo")["dynamo.yaml"])
        assert doc["apiVersion"] == "nvidia.com/v1beta1" and doc["kind"] == "DynamoGraphDeployment"
        assert DNS1123.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63
        comps = doc["spec"]["components"]
        assert [c["type"] for c in comps].count("frontend") == 1
        assert len({c["name"] for c in comps}) == len(comps)
        workers = [c for c in comps if c["type"] != "frontend"]
        assert len(workers) == len(r.deployments)
        for c, d in zip(workers, r.deployments):
            assert c["type"] == {"prefill": "prefill", "decode": "decode", "colocated": "worker"}[d.role]
            assert isinstance(c["replicas"], int) and c["replicas"] == d.replicas >= 1
            (main_c,) = c["podTemplate"]["spec"]["containers"]
            assert main_c["name"] == "main" and main_c["image"] and main_c["command"] == ["python3", "-m", "dynamo.vllm"]
            assert all(isinstance(a, str) for a in main_c["args"])
            assert main_c["resources"]["limits"] == {d.gpu_resource: str(d.tp)}
            assert c["podTemplate"]["spec"]["nodeSelector"] == dict([d.node_label])
            args = main_c["args"]
            assert args[args.index("--tensor-parallel-size") + 1] == str(d.tp)
            if d.role != "colocated":
                assert args[args.index("--disaggregation-mode") + 1] == d.role


def _kubernetes_validate():
    if not (K8S_VALIDATE / "kubernetes_validate").exists():
        pytest.skip(f"kubernetes-validate is not at {K8S_VALIDATE} (see this module's docstring); required fields are asserted above")
    sys.path.insert(0, str(K8S_VALIDATE))
    try:
        import kubernetes_validate
    finally:
        sys.path.remove(str(K8S_VALIDATE))
    return kubernetes_validate


def test_dynamo_pod_templates_pass_kubernetes_schema(blog, long70):
    kv = _kubernetes_validate()
    for r in _all_recipes(blog, long70):
        (doc,) = _docs(render(r, "dynamo")["dynamo.yaml"])
        for c in doc["spec"]["components"]:
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": c["podTemplate"]["spec"]}
            kv.validate(pod, kv.latest_version(), strict=True)  # raises on a field Kubernetes does not know
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [{"name": "main", "image": "i", "args": ["--tp", 4]}]}}
    with pytest.raises(Exception):
        kv.validate(bad, kv.latest_version(), strict=True)  # a number where Kubernetes wants a string is refused


def test_llmd_values_fields(blog, long70):
    for r in _all_recipes(blog, long70):
        files = render(r, "llm-d")
        rel = llmd.releases(r)
        assert len(files) == len(rel) == 1 + max(len(r.of("prefill")) - 1, 0) + max(len(r.of("decode") or r.of("colocated")) - 1, 0)
        seen = []
        for text in files.values():
            (v,) = _docs(text)
            assert v["modelArtifacts"]["name"] == r.model_id and v["modelArtifacts"]["uri"] == f"hf://{r.model_id}"
            assert v["routing"]["proxy"]["enabled"] is (r.side == "disaggregated")
            for role in ("prefill", "decode"):
                pool = v[role]
                if not pool["create"]:
                    continue
                (c,) = pool["containers"]
                assert c["modelCommand"] == "vllmServe" and "--tensor-parallel-size" not in c["args"]  # the chart writes it
                assert pool["accelerator"]["type"] in ("nvidia", "amd") and pool["acceleratorTypes"]["labelKey"]
                seen.append((role, pool["parallelism"]["tensor"], pool["replicas"], pool["acceleratorTypes"]["labelValues"][0]))
        want = [("prefill" if d.role == "prefill" else "decode", d.tp, d.replicas, d.node_label[1]) for d in r.deployments]
        assert sorted(seen) == sorted(want)


def test_llmd_values_pass_the_charts_schema(blog, long70):
    if not LLMD_SCHEMA.exists():
        pytest.skip(f"llm-d-modelservice values.schema.json is not at {LLMD_SCHEMA} (see this module's docstring)")
    import jsonschema

    schema = json.loads(LLMD_SCHEMA.read_text())
    for r in _all_recipes(blog, long70):
        for text in render(r, "llm-d").values():
            jsonschema.validate(_docs(text)[0], schema)
    bad = _docs(render(_all_recipes(blog, long70)[0], "llm-d")["llm-d-values.yaml"])[0]
    bad["decode"]["parallelism"]["tensor"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


# --- the command line ---

def test_cli_emit_all(tmp_path, long70, capsys):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(long70))
    main(["emit", str(plan_file), "--engine", "all", "--out", str(tmp_path / "out"), "--pilot-fraction", "0.1"])
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["dynamo.yaml", "llm-d-values.yaml", "sglang.sh", "vllm.sh"]
    for n in names:
        text = (tmp_path / "out" / n).read_text()
        assert text.startswith("#") and str(plan_file) in text  # the header names the plan it came from
    assert "wrote" in capsys.readouterr().err


def test_cli_plan_emit_writes_plan_and_recipes(tmp_path):
    out = tmp_path / "r"
    main(["plan", "--model", "llama-2-7b", "--rate", "100", "--input-len", "100", "--output-len", "500", "--no-pareto",
          "--emit", "vllm", "--emit", "dynamo", "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["dynamo.yaml", "plan.json", "vllm.sh"]
    assert f"--plan {out / 'plan.json'}" in (out / "vllm.sh").read_text()


@pytest.mark.parametrize("argv,msg", [
    (["emit", "{plan}", "--engine", "trt", "--out", "{tmp}"], "'trt'"),
    (["emit", "{tmp}/missing.json", "--engine", "vllm", "--out", "{tmp}"], "file not found"),
    (["emit", "{plan}", "--engine", "vllm", "--out", "{tmp}", "--pilot-fraction", "0"], "--pilot-fraction 0"),
    (["emit", "{plan}", "--engine", "vllm", "--out", "{tmp}", "--side", "both"], "side 'both'"),
    (["plan", "--emit", "vllm"], "--emit needs --out"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, blog, capsys, argv, msg):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(blog))
    args = [a.format(plan=plan_file, tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_out_must_be_a_folder(tmp_path, blog):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(BadInput, match="not a folder"):
        emit(blog, ["vllm"], f, "p.json")
