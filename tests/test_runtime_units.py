"""The runtime's parts without a server: tokenizer, wire protocol, KV codecs, metrics, config,
and the engine's KV-budget admission."""

import dataclasses

import pytest

from planner.errors import BadInput
from planner.runtime.config import make_config
from planner.runtime.metrics import Counter, Gauge, Histogram
from planner.runtime.tokenizer import ByteTokenizer, chat_prompt, load_tokenizer, pseudo_word


# ---- tokenizer -------------------------------------------------------------------------------------------
def test_byte_tokenizer_round_trip_and_stream():
    tok = ByteTokenizer(32000)
    text = "héllo, wörld ✓"
    ids = tok.encode(text)
    assert ids == list(text.encode()) and tok.decode(ids) == text
    # streaming never splits a multi-byte character, and adds up to the whole text
    s = tok.stream()
    pieces = [s.push(i) for i in ids] + [s.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_high_ids_render_as_stable_pseudo_words():
    tok = ByteTokenizer(32000)
    assert tok.decode([300]) == pseudo_word(300) == tok.decode([300])
    assert pseudo_word(300) != pseudo_word(301)
    assert pseudo_word(31999).startswith(" ") and pseudo_word(31999)[1:].isalpha()
    with pytest.raises(BadInput, match="256"):
        ByteTokenizer(100)


def test_tokenizer_json_is_used_when_given(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers

    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "</s>": 3}
    t = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(str(tmp_path), 4)
    assert tok.encode("hello world") == [1, 2] and tok.eos_id == 3
    with pytest.raises(BadInput, match="not found"):
        load_tokenizer(str(tmp_path / "missing"), 4)


def test_chat_template():
    assert chat_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]) \
        == "system: Be brief.\nuser: Hi\nassistant:"


# ---- protocol ---------------------------------------------------------------------------------------------
def test_pack_unpack_round_trip_and_rejects_malformed():
    torch = pytest.importorskip("torch")
    from planner.runtime.protocol import pack, unpack

    a, b = torch.randn(3, 4), torch.arange(6, dtype=torch.int64).reshape(2, 3)
    packed = pack({"type": "kv", "id": "x"}, [a, b.to(torch.bfloat16)])
    assert [len(f) for f in packed[1:]] == [3 * 4 * 4, 6 * 2]  # frame length = bytes
    frames = [bytes(f) for f in packed]
    msg, (a2, b2) = unpack(frames)
    assert msg["id"] == "x" and torch.equal(a, a2) and torch.equal(b.to(torch.bfloat16), b2)
    with pytest.raises(ValueError, match="bytes"):
        unpack([frames[0], frames[1][:-4], frames[2]])
    with pytest.raises(ValueError, match="frames"):
        unpack(frames[:2])
    with pytest.raises(ValueError):
        unpack([b'{"type": "kv", "tensors": [{"dtype": "object", "shape": [1]}]}', b"x"])
    with pytest.raises(ValueError):
        unpack([b"[1, 2]"])  # not an object with a type


@pytest.mark.parametrize("codec,rel_err", [("int8", 0.01), ("fp8", 0.07)])
def test_kv_codecs_bound_the_error(codec, rel_err):
    torch = pytest.importorskip("torch")
    from planner.runtime.protocol import compress, decompress

    x = torch.randn(16, 4, 64)
    parts = compress(x, codec)
    assert parts[0].element_size() == 1 and parts[1].shape == (16, 4, 1)
    y = decompress(parts, codec, torch.float32)
    # per-vector scaling: every element within rel_err of its vector's largest magnitude
    assert ((y - x).abs() <= rel_err * x.abs().amax(-1, keepdim=True)).all()
    assert decompress(compress(x, "none"), "none", torch.float32) is not None


# ---- metrics ----------------------------------------------------------------------------------------------
def test_prometheus_text():
    h = Histogram("planner:x_seconds", "x", buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 5.0):
        h.observe(v, model_name="m")
    lines = h.render()
    assert 'planner:x_seconds_bucket{le="0.1",model_name="m"} 1' in lines
    assert 'planner:x_seconds_bucket{le="1",model_name="m"} 2' in lines
    assert 'planner:x_seconds_bucket{le="+Inf",model_name="m"} 3' in lines
    assert 'planner:x_seconds_count{model_name="m"} 3' in lines and 'planner:x_seconds_sum{model_name="m"} 5.55' in lines
    c, g = Counter("planner:c_total", "c"), Gauge("planner:g", "g")
    c.inc(2, reason='a"b')
    g.set(0.25, worker="d-0")
    assert 'planner:c_total{reason="a\\"b"} 2' in c.render() and 'planner:g{worker="d-0"} 0.25' in g.render()
    assert "# TYPE planner:c_total counter" in c.render()


# ---- config -----------------------------------------------------------------------------------------------
def test_config_defaults_and_bad_options():
    cfg = make_config(model="tiny")
    assert cfg.max_model_len == 2048 and cfg.kv_budget_tokens == 32 * 2048 and cfg.host == "127.0.0.1"
    assert [r for _, r in cfg.local_workers] == ["prefill", "decode"]
    assert make_config(mode="colocated", workers=3).local_workers[2] == ("worker-2", "colocated")
    for bad, match in [(dict(mode="split"), "--mode"), (dict(kv_compression="zip"), "kv-compression"),
                       (dict(dtype="int4"), "--dtype"), (dict(max_model_len=10**6), "max_position"),
                       (dict(prefill_workers=0), "prefill-workers"), (dict(model="mixtral-8x7b"), "mixture"),
                       (dict(max_seqs=0), "max-seqs"), (dict(device="tpu"), "device"), (dict(bogus=1), "unknown")]:
        with pytest.raises(BadInput, match=match):
            make_config(**bad)


# ---- engine admission -------------------------------------------------------------------------------------
def test_engine_admission_respects_kv_budget_and_frees_on_finish():
    torch = pytest.importorskip("torch")
    from planner.runtime.model import build_model
    from planner.runtime.engine import Engine, Seq
    from planner.specs.models import PRESETS

    spec = dataclasses.replace(PRESETS["tiny"], layers=1, hidden=64, heads=2, kv_heads=1, head_dim=32,
                               intermediate=128, vocab=300, max_position=64)
    eng = Engine(build_model(spec), max_seqs=4, max_len=32, kv_budget_tokens=40)
    a, b, c = (Seq(id=x, prompt=[1] * 10, max_tokens=10) for x in "abc")  # 20 tokens reserved each
    eng.take_slot(a)
    assert eng.fits(b)
    eng.take_slot(b)
    assert not eng.fits(c) and eng.reserved == 40  # budget full: c waits
    with torch.inference_mode():
        for s, tok, _ in eng.sample([a, b], eng.prefill([a, b])):
            eng.running[s.id] = s
        finished = []
        while eng.running:
            finished += [s.id for s, _, f in eng.step() if f]
    assert sorted(finished) == ["a", "b"] and len(a.out) == 10
    assert eng.reserved == 0 and eng.fits(c) and len(eng.free) == 4
    # Each step is recorded at its batch: 9 steps of 2 (outputs 2..10), reading 11..19 keys.
    assert set(eng.step_stats) == {2} and eng.step_stats[2][0] == 9 and eng.step_stats[2][2] == sum(range(11, 20))
    assert eng.step_stats[2][1] > 0
    eng.warm_up()
    assert eng.step_stats == {}  # the warm-up's steps are not the workload's
