"""Fuzzing the CLI's inputs: whatever a user feeds it, one clear line and exit 2, never a traceback.

Every input kind (GPU catalog, workload YAML, length specs, CSV/JSONL traces, config.json,
profiles, output paths, flags) is driven through the real entry point `planner.cli.main.main`,
in process (a subprocess per case would take minutes), by hypothesis (mutations of a valid file:
a leaf replaced by a nasty value, a key dropped or added, the text truncated) and by a corpus of
hand-made nasty inputs (alias bombs, deep nesting, markup, NaN/inf, huge numbers, wrong types,
extra CSV fields). The contract checked for every case:

- no exception escapes main() (a traceback);
- the exit code is 0 (the input was fine), 2 (bad input) or 3 (a real infeasibility);
- on 2 or 3, stderr is ONE line, "error: ...", naming the input (file path or flag) on 2, and
  quoting no more than ~200 characters of any long value.

A few subprocess cases check the same through `python -m planner`. The number of cases run is
printed by test_case_count. FUZZ_COLLECT=1 records contract breaks by class instead of failing at
the first (used to count what the suite finds on an older checkout).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.cli.main import main

pytestmark = pytest.mark.fuzz  # about a minute: not in the fast set (-m "not e2e and not fuzz")

CASES: Counter = Counter()  # cases run per input kind
BROKEN: list = []  # (kind, argv, why) when FUZZ_COLLECT=1
COLLECT = os.environ.get("FUZZ_COLLECT") == "1"
# FUZZ_BASELINE=1 runs the suite against an older checkout without harm: output paths that are
# devices become FIFOs in a temp folder (an old planner renamed over them), alias bombs are small.
BASELINE = os.environ.get("FUZZ_BASELINE") == "1"
if BASELINE:
    import tempfile

    _fake = Path(tempfile.mkdtemp(prefix="fuzz-devices."))
    for _d in ("full", "zero", "null"):
        os.mkfifo(_fake / _d)
    DEV = {d: str(_fake / d) for d in ("full", "zero", "null")}
else:
    DEV = {d: f"/dev/{d}" for d in ("full", "zero", "null")}
FUZZ = settings(derandomize=True, deadline=None, database=None, print_blob=False,
                suppress_health_check=list(HealthCheck))


def fuzz(n: int):
    """Hypothesis settings of this file: reproducible (derandomized), no deadline, n examples."""
    return settings(FUZZ, max_examples=n)


REPO = Path(__file__).resolve().parents[1]
FAST = ["--model", "tiny", "--gpus", "t4", "--no-pareto"]  # a plan in ~0.1 s: the inputs are the test
LONG = "A" * 5000  # a value no message may quote in full

# ---- the harness ---------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of planner.cli.main.main(argv), in process."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue(), err.getvalue()


class _Slow(Exception):
    pass


def _alarm(*_):
    raise _Slow()


def check(kind: str, argv: list[str], names: list[str], allow_ok: bool = True) -> tuple[int, str]:
    """Run one case and assert the contract; `names` are the strings (paths, flags) of which the
    error line must contain at least one. Returns (code, the error line or '')."""
    CASES[kind] += 1
    try:
        if COLLECT:
            signal.signal(signal.SIGALRM, _alarm)
            signal.alarm(20)
        try:
            code, out, err = run_cli(argv)
        finally:
            if COLLECT:
                signal.alarm(0)
    except BaseException as e:  # noqa: BLE001 - the point: nothing may escape main()
        if not COLLECT:
            raise
        why = "took over 20 s" if isinstance(e, _Slow) else f"traceback: {type(e).__name__}: {str(e)[:120]}"
        BROKEN.append((kind, argv, why))
        return -1, ""
    why = _contract(code, err, names, allow_ok)
    if why:
        if not COLLECT:
            pytest.fail(f"{kind}: {why}\nargv: {argv}\nstderr: {err[-3000:]}")
        BROKEN.append((kind, argv, why))
    lines = [x for x in err.splitlines() if x.strip()]
    if os.environ.get("FUZZ_LINES") and code:  # for reading the messages themselves
        with open(os.environ["FUZZ_LINES"], "a") as f:
            f.write(f"{kind}\t{code}\t{lines[-1] if lines else ''}\n")
    return code, lines[-1] if lines and code else ""


def _contract(code: int, err: str, names: list[str], allow_ok: bool) -> str:
    """'' when the run kept the contract, else what broke (the failure class first)."""
    if "Traceback" in err:
        return "traceback on stderr"
    if code not in ((0, 2, 3) if allow_ok else (2, 3)):
        return f"exit code {code}"
    if code == 0:
        return ""
    lines = [x for x in err.splitlines() if x.strip()]
    if len(lines) != 1:
        return f"{len(lines)} lines on stderr"
    line = lines[0]
    if not line.startswith("error: "):
        return "not an 'error: ' line"
    if re.search(r"(.)\1{200}", line) or len(line) > 2500:  # a long value quoted whole
        return f"message length: {len(line)} characters"
    if code == 2 and names and not any(n in line for n in names):
        return "does not name the input"
    return ""


# ---- nasty values -------------------------------------------------------------------------------

NASTY = [None, "", " ", "[/x]", "[b]bold[/b]", "[red", "abc", "1e300", "-1", "nan", "inf", LONG, -1, 0, -0.0,
         1e300, -1e300, 1e-300, 10 ** 30, float("inf"), float("-inf"), float("nan"), True, False, [], {}, [1, 2],
         {"a": 1}, "\x00", "é", "𝟙", "12abc", 3.5, 2 ** 63, -(2 ** 63)]
nasty = st.sampled_from(NASTY)
cell_text = st.sampled_from(["", "abc", "[/x]", "1e300", "-1e20", "nan", "inf", "-5", "0", "7", "12.5", "1e9",
                             "2023-11-16 18:15:46.6805900", "not-a-date", LONG[:300], '"', "x,y"])


def _leaves(doc, path=()):
    """Paths to every leaf (and every container) of a JSON-like document."""
    yield path
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _leaves(v, path + (i,))


def _set(doc, path, value):
    if not path:
        return value
    cur = doc
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return doc


def _drop(doc, path):
    if not path:
        return doc
    cur = doc
    for k in path[:-1]:
        cur = cur[k]
    del cur[path[-1]]
    return doc


@st.composite
def mutated(draw, valid: dict):
    """A deep copy of `valid` with one to three mutations."""
    doc = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_leaves(doc))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["set", "set", "set", "drop", "add"]))
        if op == "set":
            doc = _set(doc, path, draw(nasty))
        elif op == "drop" and path:
            doc = _drop(doc, path)
        elif op == "add" and isinstance(doc, dict):
            doc[draw(st.sampled_from(["bogus", "[/x]", LONG[:250], "1"]))] = draw(nasty)
    return doc


def _dump_yaml(doc) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def _dump_json(doc) -> str:
    return json.dumps(doc)  # NaN and Infinity come out as JSON's non-standard tokens: good cases


@st.composite
def text_of(draw, doc, dump):
    """The serialised document, sometimes truncated at a random point."""
    text = dump(doc)
    if draw(st.integers(0, 4)) == 0 and text:
        text = text[: draw(st.integers(0, len(text) - 1))]
    return text


# ---- valid seeds ---------------------------------------------------------------------------------

GPU = {"key": "x1", "name": "X One", "vendor": "acme", "memory_gb": 80, "mem_bw_gbps": 2000, "bf16_tflops": 300,
       "interconnect_gbps": 64, "gpus_per_node": 8,
       "prices": [{"provider": "P", "instance": "i", "gpus_per_instance": 1, "usd_per_gpu_hour": 1.5,
                   "source_url": "https://example.com", "as_of": "2026-01", "confidence": "confirmed"}]}
CATALOG = {"gpus": [GPU]}
WORKLOAD = {"rate_rps": 2, "input": {"kind": "lognormal", "mean": 300, "sigma": 0.5}, "output": 100,
            "slo": {"ttft_ms": 2000, "tpot_ms": 100, "percentile": 90}, "peak_factor": 1.5}
CONFIG = {"model_type": "llama", "hidden_size": 512, "num_attention_heads": 8, "num_key_value_heads": 4,
          "num_hidden_layers": 6, "intermediate_size": 1536, "vocab_size": 32000, "max_position_embeddings": 2048}
PROFILE = json.loads((REPO / "profiles" / "tiny-cpu.json").read_text())
PROFILE["samples"] = PROFILE["samples"][:3] + PROFILE["samples"][-3:]  # prefill and decode points


def _bomb(levels: int, width: int = 9) -> str:
    """A YAML 'billion laughs': `levels` anchors, each a list of `width` aliases of the one before."""
    lines = ["a0: &a0 [" + ",".join(["lol"] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


# ---- catalogs (planner gpus --catalog FILE) ------------------------------------------------------


@fuzz(200)
@given(st.data())
def test_fuzz_catalog(tmp_path_factory, data):
    doc = data.draw(mutated(CATALOG))
    path = tmp_path_factory.mktemp("cat") / "c[b].yaml"
    path.write_text(data.draw(text_of(doc, _dump_yaml)))
    check("catalog", ["gpus", "--catalog", str(path)], [str(path)])


# ---- workload files, length specs (planner plan --workload FILE / --input-len SPEC) ------------


@fuzz(150)
@given(st.data())
def test_fuzz_workload(tmp_path_factory, data):
    doc = data.draw(mutated(WORKLOAD))
    path = tmp_path_factory.mktemp("wl") / "w[red].yaml"
    path.write_text(data.draw(text_of(doc, _dump_yaml)))
    check("workload", ["plan", "--workload", str(path), *FAST], [str(path)])


length_spec = st.one_of(
    st.builds(lambda k, ps: f"{k}:" + ",".join(f"{a}={b}" for a, b in ps),
              st.sampled_from(["lognormal", "normal", "uniform", "fixed", "bogus", "[/x]", ""]),
              st.lists(st.tuples(st.sampled_from(["mean", "sigma", "median", "p90", "max", "std", "min", "low", "high",
                                                  "value", "x"]), cell_text), max_size=4)),
    st.builds(lambda a, b: f"uniform:{a}-{b}", cell_text, cell_text),
    cell_text, st.text(max_size=40))


@fuzz(150)
@given(length_spec, st.sampled_from(["--input-len", "--output-len"]))
def test_fuzz_length_specs(spec, flag):
    if spec.startswith("-"):
        spec = " " + spec  # '-5' would be read as a flag: that is click's business, tested below
    check("workload", ["plan", *FAST, flag, spec], [flag])


# ---- traces (planner plan --trace FILE) ----------------------------------------------------------

header = st.lists(st.sampled_from(["input_tokens", "output_tokens", "timestamp", "ContextTokens", "GeneratedTokens",
                                   "TIMESTAMP", "prompt_tokens", "[/x]", "junk", ""]), min_size=1, max_size=4)


@st.composite
def trace_file(draw):
    cols = draw(header)
    rows = draw(st.lists(st.lists(cell_text, min_size=max(len(cols) - 1, 1), max_size=len(cols) + 1),
                         min_size=0, max_size=6))
    if draw(st.booleans()):
        return ".csv", "\n".join([",".join(cols)] + [",".join(r) for r in rows]) + "\n"
    recs = [{c: draw(st.sampled_from([v, _num(v)])) for c, v in zip(cols, r)} for r in rows]
    lines = [json.dumps(r) for r in recs]
    if lines and draw(st.integers(0, 4)) == 0:
        lines[-1] = lines[-1][: len(lines[-1]) // 2]  # a truncated last line
    return ".jsonl", "\n".join(lines) + "\n"


def _num(v: str):
    try:
        return float(v)
    except ValueError:
        return v


@fuzz(150)
@given(trace_file(), st.sampled_from([[], ["--rate", "2"]]))
def test_fuzz_trace(tmp_path_factory, f, extra):
    suffix, text = f
    path = tmp_path_factory.mktemp("tr") / f"t[b]{suffix}"
    path.write_text(text)
    check("trace", ["plan", "--trace", str(path), *FAST, *extra], [str(path), "--rate"])


# ---- config.json (planner plan --model FILE) -----------------------------------------------------


@fuzz(150)
@given(st.data())
def test_fuzz_config_json(tmp_path_factory, data):
    doc = data.draw(mutated(CONFIG))
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(data.draw(text_of(doc, _dump_json)))
    check("config.json", ["plan", "--model", str(path), "--gpus", "t4", "--no-pareto", "--input-len", "100",
                          "--output-len", "20"], [str(path)])


# ---- profiles (planner profile show FILE) ------------------------------------------------------


@fuzz(150)
@given(st.data())
def test_fuzz_profile(tmp_path_factory, data):
    doc = data.draw(mutated(PROFILE))
    path = tmp_path_factory.mktemp("prof") / "p[red].json"
    path.write_text(data.draw(text_of(doc, _dump_json)))
    check("profile", ["profile", "show", str(path)], [str(path)])


@fuzz(100)
@given(st.data())
def test_fuzz_profile_in_plan(tmp_path_factory, data):
    doc = data.draw(mutated(PROFILE))
    path = tmp_path_factory.mktemp("prof") / "p[red].json"
    path.write_text(data.draw(text_of(doc, _dump_json)))
    check("profile", ["plan", "--profile", str(path), "--gpus", "local", "--model", "tiny", "--no-pareto", "--input-len", "200",
                      "--output-len", "20", "--rate", "1", "--weight-dtype", "fp32", "--kv-dtype", "fp32"], [str(path), "--profile"])


# ---- flags ---------------------------------------------------------------------------------------

FLAGS = {
    "--rate": ["abc", "0", "-1", "1e-300", "1e300", "nan", "inf", "2", "", LONG],
    "--requests-per-day": ["1e5", "0", "abc", "1e30"],
    "--peak-factor": ["0.5", "1e300", "nan", "2", "abc"],
    "--ttft-slo": ["0", "-5", "1e-9", "abc", "500", "1e300"],
    "--tpot-slo": ["0", "1e-9", "nan", "100", "1e300"],
    "--percentile": ["0", "95", "abc", "90", "-1", "1e9"],
    "--gpus": ["[/x]", "", ",", "nope", LONG, "t4", "t4,l4", "local"],
    "--prefill-gpus": ["local", "nope", "[/x]", "t4"],
    "--decode-gpus": ["local", "", "t4"],
    "--provider": ["", " ", "[/x]", "nope", LONG],
    "--current": ["8xh100:tp0", "0xt4", "x", "8xnope", "99999999999xt4", "2xt4:tp2", "[/x]", "1xt4/tp=-1", LONG],
    "--weight-dtype": ["fp4", "", "[/x]", "fp8"],
    "--kv-dtype": ["fp4", "int8", LONG],
    "--kv-compression": ["zip", "int8"],
    "--input-len": ["1e9", "0", "100000000000", "2000", "[/x]", "lognormal:mean=100,sigma=99"],
    "--output-len": ["1e7", "-1", "abc", "50"],
    "--model": ["gpt-17", "", "[/x]", "/nonexistent/config.json", "/dev/null", "/", LONG, "tiny"],
    "--profile": ["/nonexistent.json", "/dev/null", "/"],
    "--catalog": ["/nonexistent.yaml", "/dev/null", "/", "[b].yaml"],
    "--workload": ["/nonexistent.yaml", "/dev/null", "/"],
    "--trace": ["/nonexistent.csv", "/dev/null", "/"],
    "--json": [DEV["full"], DEV["zero"], "/", "/nonexistent-dir/x.json"],
    "--report": [DEV["full"], "/", "/nonexistent-dir/x.md"],
    "--bogus": ["1"],
}


@fuzz(250)
@given(st.lists(st.sampled_from(sorted(FLAGS)), min_size=1, max_size=3, unique=True), st.data())
def test_fuzz_plan_flags(flags, data):
    argv = ["plan", *FAST]
    for f in flags:
        v = data.draw(st.sampled_from(FLAGS[f]))
        argv += [f"{f}={v}"] if v.startswith("-") else [f, v]  # --rate=-1: a value, not a flag
    devices = _devices()
    paths = [a for a in argv[len(FAST) + 1:] if a.startswith("/") or a.endswith((".yaml", ".json", ".csv"))]
    check("flags", argv, [*flags, *paths])  # a file's error may name the file rather than its flag
    assert devices == _devices(), "a device node was replaced"


USAGE = [["plan", "--rate"], ["plan", "--rate", "abc"], ["plan", "--bogus"], ["nosuch"], ["serve", "--port", "abc"],
         ["serve", "--port", "70000"], ["serve", "--port", "-1"], ["serve", "--router-port", "99999"],
         ["profile", "nosuch"], ["profile", "show"], ["profile", "local", "tiny", "--batches", "0"],
         ["profile", "local", "tiny", "--batches", "x"], ["validate", "--roofline", "[/x]", "--no-probe"],
         ["validate", "--plan", "/nonexistent.json"], ["gpus", "--catalog"], ["models", "extra"],
         ["plan", "--percentile", "9" * 5000], ["plan", "--gpus", "[/x]"], ["plan", "--json", DEV["full"]],
         ["plan", "--json", "/tmp"], ["plan", "--report", DEV["zero"]], ["plan", "--model", "/tmp/[b]/config.json"],
         ["profile", "local", "tiny", "--out", DEV["full"]], ["profile", "local", "tiny", "--out", "/"],
         ["validate", "--json", DEV["full"]]]


if BASELINE:  # an older planner would start measuring or a pilot before looking at its output path
    USAGE = [a for a in USAGE if a[0] != "validate" and a[:2] != ["profile", "local"]]


@pytest.mark.parametrize("argv", USAGE, ids=lambda a: " ".join(a)[:40])
def test_usage_errors_are_one_line(argv):
    code, line = check("CLI usage", argv, [a[:200] for a in argv], allow_ok=False)
    assert code == 2, line


# ---- the hand-made corpus --------------------------------------------------------------------------

NASTY_FILES = {
    "bomb.yaml": _bomb(5 if BASELINE else 9),  # 9^10 = 3.5e9 elements once expanded
    "bomb-small.yaml": _bomb(4),
    "deep.yaml": "gpus: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep-block.yaml": "".join(" " * i + "a:\n" for i in range(200)) + " " * 200 + "a: 1\n",
    "recursive.yaml": "gpus: &a [*a]\n",
    "markup.yaml": "gpus:\n- key: '[/x]'\n  name: '[b]'\n",
    "inf.yaml": _dump_yaml({**WORKLOAD, "output": float("inf")}),
    "nan-rate.yaml": _dump_yaml({**WORKLOAD, "rate_rps": float("nan")}),
    "huge-int.yaml": f"rate_rps: {'9' * 5000}\ninput: 100\noutput: 10\n",
    "1e999.yaml": "rate_rps: 1e999\ninput: 100\noutput: 10\n",
    "binary.yaml": "\xff\xfe\x00",
    "long-key.yaml": f"{LONG}: 1\n",
    "list.yaml": "- 1\n- 2\n",
    "empty.yaml": "",
    "strings-in-empirical.yaml": "rate_rps: 1\ninput: {kind: empirical, values: [1, a, '[/x]']}\noutput: 10\n",
    "inf-length.yaml": "rate_rps: 1\ninput: .inf\noutput: 10\n",
    # found by the hypothesis tests above, kept as regressions:
    "bool-slo.yaml": _dump_yaml({**WORKLOAD, "slo": {"ttft_ms": True}}),  # YAML true was read as 1 ms
    "long-key-nan.yaml": f"rate_rps: 1\ninput: 1\noutput: 1\n{'B' * 300}: .nan\n",  # the field path was quoted whole
    "long-unknown-key.yaml": f"rate_rps: 1\ninput: 1\noutput: 1\n{'C' * 300}: 1\n",
    "hourly-1e300.yaml": _dump_yaml({"hourly_rps": [1e300] + [1] * 23, "input": 100, "output": 10}),  # was exit 3
}
NASTY_JSON = {
    "deep.json": "[" * 100000 + "]" * 100000,
    "nan.json": '{"format": "planner-profile/1", "samples": [{"phase": "decode", "batch": 1, "prompt_len": 0, '
                '"context_len": 64, "seconds": NaN}]}',
    "inf.json": '{"format": "planner-profile/1", "samples": [{"phase": "decode", "batch": 1, "prompt_len": 0, '
                '"context_len": 64, "seconds": Infinity}]}',
    "1e999.json": '{"format": "planner-profile/1", "samples": [{"phase": "decode", "batch": 1, "prompt_len": 0, '
                  '"context_len": 64, "seconds": 1e999}]}',
    "batch-1e9.json": json.dumps({**PROFILE, "samples": [{**PROFILE["samples"][0], "batch": 1000000000}]}),
    "context-beyond.json": json.dumps({**PROFILE, "samples": [{**PROFILE["samples"][-1], "context_len": 10 ** 6}]}),
    "huge-int.json": '{"format": "planner-profile/1", "tp": ' + "9" * 5000 + "}",
    "truncated.json": json.dumps(PROFILE)[:500],
    "markup.json": json.dumps({**PROFILE, "device": {"name": "[/x]"}, "created": "[b]"}),
    # found by test_fuzz_profile_in_plan: a model without 'heads' was a TypeError in plan --profile
    "model-without-heads.json": json.dumps({**PROFILE, "model": {k: v for k, v in PROFILE["model"].items() if k != "heads"}}),
    "long-device-name.json": json.dumps({**PROFILE, "device": {**PROFILE["device"], "name": LONG}}),
}
NASTY_CONFIGS = {
    "heads-5000.json": {**CONFIG, "num_attention_heads": 5000, "hidden_size": 5000 * 16},
    "kv-negative.json": {**CONFIG, "num_key_value_heads": -4},
    "kv-zero.json": {**CONFIG, "num_key_value_heads": 0},
    "kv-not-dividing.json": {**CONFIG, "num_key_value_heads": 3},
    "hidden-not-dividing.json": {**CONFIG, "hidden_size": 500},
    "string-heads.json": {**CONFIG, "num_attention_heads": "8"},
    "float-layers.json": {**CONFIG, "num_hidden_layers": 6.5},
    "bool-layers.json": {**CONFIG, "num_hidden_layers": True},
    "vocab-1e12.json": {**CONFIG, "vocab_size": 10 ** 12},
    "experts.json": {**CONFIG, "num_local_experts": 4, "num_experts_per_tok": 8},
    "markup-[b].json": {**CONFIG, "model_type": "[/x]"},
    "list.json": [1, 2],
}
NASTY_TRACES = {
    "extra-field.csv": "input_tokens,output_tokens\n10,20,30\n40,50,60\n",
    "extra-field-one-row.csv": "input_tokens,output_tokens\n10,20\n40,50,60\n",
    "ts-1e300.csv": "timestamp,input_tokens,output_tokens\n0,10,20\n1e300,10,20\n",
    "ts-negative.csv": "timestamp,input_tokens,output_tokens\n-1e20,10,20\n1,10,20\n",
    "tokens-1e300.csv": "input_tokens,output_tokens\n1e300,20\n",
    "markup-cell.csv": "input_tokens,output_tokens\n[/x],20\n",
    "long-cell.csv": f"input_tokens,output_tokens\n{LONG},20\n",
    "long-header.csv": f"{LONG},b\n1,2\n",
    "nested.jsonl": '{"input_tokens": [[[[1]]]], "output_tokens": 2}\n',
    "deep.jsonl": "[" * 100000 + "]" * 100000 + "\n",
    "nan.jsonl": '{"input_tokens": NaN, "output_tokens": 2}\n',
    "binary.csv": "\xff\xfe\x00,\x01\n",
    "empty.csv": "",
}


def _corpus_cases(tmp: Path) -> list[tuple[str, str, list[str], list[str]]]:
    """(kind, file name, argv, names the error must contain) for every file of the corpus."""
    cases = []
    for name, text in NASTY_FILES.items():
        p = tmp / name
        p.write_bytes(text.encode("latin-1") if name == "binary.yaml" else text.encode())
        cases.append(("catalog", name, ["gpus", "--catalog", str(p)], [str(p)]))
        cases.append(("workload", name, ["plan", "--workload", str(p), *FAST], [str(p)]))
    for name, text in NASTY_JSON.items():
        p = tmp / name
        p.write_text(text)
        cases.append(("profile", name, ["profile", "show", str(p)], [str(p)]))
        cases.append(("profile", name, ["plan", "--profile", str(p), *FAST], [str(p)]))
    for name, doc in NASTY_CONFIGS.items():
        d = tmp / name.removesuffix(".json")
        d.mkdir(parents=True)
        p = d / "config.json"
        p.write_text(json.dumps(doc))
        cases.append(("config.json", name, ["plan", "--model", str(p), "--gpus", "t4", "--no-pareto", "--input-len", "100",
                                      "--output-len", "20"], [str(p)]))
    for name, text in NASTY_TRACES.items():
        p = tmp / name
        p.write_bytes(text.encode("latin-1") if name == "binary.csv" else text.encode())
        cases.append(("trace", name, ["plan", "--trace", str(p), "--rate", "1", *FAST], [str(p)]))
    return cases


def test_corpus_of_nasty_files(tmp_path):
    for kind, name, argv, names in _corpus_cases(tmp_path):
        markup = name.startswith("markup")  # valid apart from the markup: it must print as itself
        code, line = check(kind, argv, names, allow_ok=markup)
        if not COLLECT:
            assert code == 2 or (code in (0, 3) and markup) or (code == 3 and kind == "config.json"), (argv, line)
        if markup and code == 0:
            assert "[/x]" in "".join(run_cli(argv)[1:]) or "[b]" in "".join(run_cli(argv)[1:]), argv


def test_corpus_messages_say_what_is_wrong(tmp_path):
    """Spot checks of the messages themselves: the field, the value, the rule."""
    first = {}
    for kind, name, argv, _ in _corpus_cases(tmp_path):
        if kind != "catalog":  # a YAML file's workload case: the catalog's top-level check comes first
            first.setdefault(name, argv)
    # deep.yaml: PyYAML >= 6.0.4 stops it itself ("nesting depth"); older ones reach our own depth check
    expect = {
        "bomb.yaml": "aliases", "deep.yaml": "nest", "deep-block.yaml": "nest", "recursive.yaml": "refers to itself",
        "inf-length.yaml": "not a finite number", "1e999.yaml": "must be finite", "huge-int.yaml": "more than 4,300 digits",
        "nan.json": "field samples[0].seconds: nan is not a finite number", "inf.json": "samples[0].seconds: inf",
        "1e999.json": "samples[0].seconds: inf", "batch-1e9.json": "samples[0].batch", "context-beyond.json": "max_position",
        "deep.json": "nested deeper", "heads-5000.json": "num_attention_heads", "kv-zero.json": "num_key_value_heads",
        "kv-not-dividing.json": "not a multiple of num_key_value_heads", "hidden-not-dividing.json": "head_dim",
        "string-heads.json": "'8'", "extra-field.csv": "line 2: 3 fields", "extra-field-one-row.csv": "line 3",
        "ts-1e300.csv": "more than a year", "ts-negative.csv": "more than a year", "tokens-1e300.csv": "token count",
        "markup-cell.csv": "'[/x]' is not a number", "strings-in-empirical.yaml": "empirical",
        "bool-slo.yaml": "slo.ttft_ms must be a number, got True", "model-without-heads.json": "lacks heads",
        "long-device-name.json": "device.name", "long-unknown-key.yaml": "unknown key CCC", "hourly-1e300.yaml": "hourly_rps must",
    }
    for name, needle in expect.items():
        code, out, err = run_cli(first[name])
        assert code == 2 and needle in err and err.count("\n") == 1, (name, err)


def test_plain_click_usage_errors_are_one_line_too(monkeypatch):
    """typer 0.28 raises its vendored click's exceptions; a plain click one (another typer, a
    click callback) must end the same way: one line, exit 2."""
    import click

    import planner.cli.main as cli

    for exc in (click.exceptions.NoSuchOption("--x"), click.BadParameter("bad", param_hint="'--rate'"),
                click.UsageError("No such command 'x'.")):
        def boom(*a, exc=exc, **k):
            raise exc
        monkeypatch.setattr(cli, "app", boom)
        code, _, err = run_cli(["plan"])
        CASES["CLI usage"] += 1
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


def test_shown_is_bounded_for_any_value():
    """errors.shown quotes <= 200 characters with bounded work, even for what an alias bomb builds."""
    import time

    from planner.errors import shown

    bomb = ["lol"] * 9
    for _ in range(10):  # 9^11 = 3e10 strings if expanded
        bomb = [bomb] * 9
    t = time.perf_counter()
    for v in (bomb, LONG, {LONG: bomb}, b"x" * 10 ** 6, 10 ** 4000 if sys.version_info < (3, 11) else 10 ** 300):
        assert len(shown(v)) <= 230
    assert time.perf_counter() - t < 1.0
    assert shown("[/x]") == "'[/x]'" and shown(5) == "5"


# ---- output paths ----------------------------------------------------------------------------------


def _devices() -> list[str]:
    """The device nodes to aim outputs at: on a shared machine an older planner (or anything that
    renames over it) may already have turned /dev/null into a regular file; skip what is not a device."""
    if BASELINE:
        return list(DEV.values())
    return [d for d in DEV.values() if os.path.exists(d) and stat.S_ISCHR(os.stat(d).st_mode)]


def test_outputs_never_replace_what_is_not_a_regular_file(tmp_path):
    import socket

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    folder = tmp_path / "d"
    folder.mkdir()
    devices = _devices()
    for target in (*devices, str(fifo), str(sock_path), str(folder), str(tmp_path / "missing" / "x.json")):
        for flag in ("--json", "--report"):
            code, _, err = run_cli(["plan", *FAST, flag, target])
            CASES["output path"] += 1
            assert code == 2 and target in err and err.count("\n") == 1, (flag, target, err)
    sock.close()
    assert all(stat.S_ISCHR(os.stat(d).st_mode) or BASELINE and stat.S_ISFIFO(os.stat(d).st_mode) for d in devices)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISSOCK(os.stat(sock_path).st_mode)
    assert folder.is_dir() and not any(folder.iterdir()) and not (tmp_path / "missing").exists()


def test_outputs_write_regular_files_symlinks_and_stdout(tmp_path, capfd):
    real = tmp_path / "real.json"
    real.write_text("old")
    os.chmod(real, 0o640)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    code, _, err = run_cli(["plan", *FAST, "--json", str(link)])
    assert code == 0, err
    assert link.is_symlink() and json.loads(real.read_text())["model"]["name"] == "tiny"
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o640  # replacing a file keeps its mode
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    code, out, _ = run_cli(["plan", *FAST, "--json", "/dev/stdout"])
    assert code == 0 and json.loads(out)["model"]["name"] == "tiny"
    CASES["output path"] += 2


# ---- real processes: the traceback check end to end --------------------------------------------------


@pytest.mark.parametrize("argv", [["plan", "--rate", "abc"], ["nosuch"], ["serve", "--port", "70000"],
                                  ["plan", "--gpus", "[/x]"], ["plan", "--json", DEV["zero"]],
                                  ["gpus", "--catalog", "BOMB"], ["profile", "show", "DEEP"]],
                         ids=lambda a: " ".join(a))
def test_subprocess_one_line_no_traceback(argv, tmp_path):
    bomb, deep = tmp_path / "bomb.yaml", tmp_path / "deep.json"
    bomb.write_text(_bomb(5 if BASELINE else 9))
    deep.write_text("[" * 100000 + "]" * 100000)
    argv = [str(bomb) if a == "BOMB" else str(deep) if a == "DEEP" else a for a in argv]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "planner", *argv], capture_output=True, text=True, timeout=120, env=env)
    CASES["subprocess"] += 1
    why = _contract(r.returncode, r.stderr, [], allow_ok=False) or ("" if r.returncode == 2 else f"exit code {r.returncode}")
    if COLLECT and why:
        BROKEN.append(("subprocess", argv, why))
        return
    assert not why, r.stderr
    assert BASELINE or stat.S_ISCHR(os.stat("/dev/zero").st_mode)


# ---- the count ---------------------------------------------------------------------------------------


def test_case_count(capsys):
    """Runs last (file order): prints the cases per kind; at least 1,000 generated in a full run."""
    total = sum(CASES.values())
    with capsys.disabled():
        print(f"\nfuzz cases run: {total} ({', '.join(f'{k} {n}' for k, n in sorted(CASES.items()))})")
        if COLLECT:
            by = Counter((k, why.split(":")[0]) for k, _, why in BROKEN)
            print(f"contract breaks: {len(BROKEN)}: " + "; ".join(f"{k}/{w} {n}" for (k, w), n in sorted(by.items())))
            seen = set()
            for k, argv, why in BROKEN:
                if (k, why.split(":")[0]) not in seen:
                    seen.add((k, why.split(":")[0]))
                    print(f"  e.g. {k}: {why[:150]} <- {' '.join(argv)[:200]}")
    if COLLECT and os.environ.get("FUZZ_REPORT"):
        Path(os.environ["FUZZ_REPORT"]).write_text("\n".join(f"{k}\t{why}\t{argv}" for k, argv, why in BROKEN))
    if len({k for k in CASES if k not in ("subprocess", "output path", "CLI usage")}) < 6:
        pytest.skip("run the whole file to count the cases")
    assert total >= 1000
