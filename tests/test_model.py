"""The shared torch decoder: KV bytes, cache-reading paths against a full forward, determinism."""

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from planner.errors import BadInput  # noqa: E402
from planner.runtime.model import (  # noqa: E402
    build_model, decode_step, generate, get_kv, kv_bytes_per_token, prefill, prefill_chunk, sample, set_kv,
)
from planner.specs.models import PRESETS  # noqa: E402

TINY = PRESETS["tiny"]
# A smaller shape of the same family for the slower checks (same code paths, GQA 2:1).
SMALL = dataclasses.replace(TINY, name="small", layers=2, hidden=128, heads=4, kv_heads=2, head_dim=32,
                            intermediate=256, vocab=512, max_position=256)


@pytest.fixture(scope="module")
def tiny():
    return build_model(TINY, seed=0)


def test_kv_bytes_per_token_matches_formula(tiny):
    tiny.setup_cache(3, 128)
    assert kv_bytes_per_token(tiny) == TINY.kv_bytes_per_token("fp32") == 12288
    assert tiny.kv_cache_bytes() == 3 * 128 * 12288
    m = build_model(SMALL, dtype="bf16")
    m.setup_cache(2, 64)
    assert kv_bytes_per_token(m) == SMALL.kv_bytes_per_token("bf16")


def test_same_seed_same_weights_other_seed_differs():
    a, b, c = build_model(SMALL, seed=7), build_model(SMALL, seed=7), build_model(SMALL, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.layers[0].self_attn.q_proj.weight, c.layers[0].self_attn.q_proj.weight)


def test_decode_step_equals_full_forward(tiny):
    tiny.setup_cache(4, 64)
    p = [3, 1, 4, 1, 5, 9, 2, 6]
    with torch.inference_mode():
        first = prefill(tiny, torch.tensor([p]), torch.tensor([1]))
        tok = int(first.argmax())
        step = decode_step(tiny, torch.tensor([tok]), torch.tensor([1]), torch.tensor([len(p)]))
        full = prefill(tiny, torch.tensor([p + [tok]]), torch.tensor([2]))
    assert torch.allclose(step, full, atol=1e-4), (step - full).abs().max()


def test_mixed_length_batch_padding_and_chunking_agree():
    m = build_model(SMALL, seed=1)
    m.setup_cache(4, 64)
    a, b = [5, 6, 7], [30, 31, 32, 33, 34, 35, 36]
    with torch.inference_mode():
        la = prefill(m, torch.tensor([a]), torch.tensor([0]))
        lb = prefill(m, torch.tensor([b]), torch.tensor([3]))
        # one decode step over two sequences of different lengths, each at its own position
        ta, tb = int(la.argmax()), int(lb.argmax())
        both = decode_step(m, torch.tensor([ta, tb]), torch.tensor([0, 3]), torch.tensor([3, 7]))
        ra = prefill(m, torch.tensor([a + [ta]]), torch.tensor([1]))
        rb = prefill(m, torch.tensor([b + [tb]]), torch.tensor([2]))
        assert torch.allclose(both[0], ra[0], atol=1e-4) and torch.allclose(both[1], rb[0], atol=1e-4)
        # right-padded batched prefill returns each row's last real token
        padded = prefill(m, torch.tensor([a + [0] * 4, b]), torch.tensor([0, 1]), torch.tensor([3, 7]))
        assert torch.allclose(padded[0], la[0], atol=1e-4) and torch.allclose(padded[1], lb[0], atol=1e-4)
        # chunked prefill: 4 tokens, then 3 more attending to the cache
        prefill(m, torch.tensor([b[:4]]), torch.tensor([2]))
        chunk = prefill_chunk(m, torch.tensor(b[4:]), 2, 4)
        assert torch.allclose(chunk, lb[0], atol=1e-4)


def test_kv_moves_between_models():
    src, dst = build_model(SMALL, seed=2), build_model(SMALL, seed=2)
    src.setup_cache(2, 32)
    dst.setup_cache(3, 32)
    p = [9, 8, 7, 6, 5]
    with torch.inference_mode():
        tok = int(prefill(src, torch.tensor([p]), torch.tensor([1])).argmax())
        kv = get_kv(src, 1, len(p))
        assert len(kv) == SMALL.layers and kv[0][0].shape == (len(p), SMALL.kv_heads, SMALL.head_dim)
        set_kv(dst, 2, kv)
        got = decode_step(dst, torch.tensor([tok]), torch.tensor([2]), torch.tensor([len(p)]))
        want = decode_step(src, torch.tensor([tok]), torch.tensor([1]), torch.tensor([len(p)]))
    assert torch.allclose(got, want, atol=1e-5)


def test_generate_is_deterministic_and_matches_manual_loop():
    m = build_model(SMALL, seed=3)
    out1 = generate(m, [1, 2, 3, 4], 12)
    out2 = generate(build_model(SMALL, seed=3), [1, 2, 3, 4], 12)
    assert out1 == out2 and len(out1) == 12
    s1 = generate(m, [1, 2, 3, 4], 12, temperature=1.0, seed=5)
    s2 = generate(m, [1, 2, 3, 4], 12, temperature=1.0, seed=5)
    s3 = generate(m, [1, 2, 3, 4], 12, temperature=1.0, seed=6)
    assert s1 == s2 and s1 != s3


def test_sampling_is_keyed_by_seed_and_index():
    logits = torch.zeros(100)
    draws = {sample(logits, 1.0, seed=1, index=i) for i in range(50)}
    assert len(draws) > 20  # uniform over 100 ids: 50 draws hit many of them
    assert sample(logits, 1.0, 4, 9) == sample(logits, 1.0, 4, 9)
    peaked = torch.full((100,), -50.0)
    peaked[42] = 0.0
    assert sample(peaked, 1.0, 0, 0) == 42 and sample(peaked, 0.0) == 42


def test_bf16_logits_finite():
    m = build_model(SMALL, dtype="bf16")
    m.setup_cache(1, 16)
    with torch.inference_mode():
        out = prefill(m, torch.tensor([[1, 2, 3]]), torch.tensor([0]))
    assert torch.isfinite(out).all()


def test_moe_and_oversized_cache_are_bad_input():
    with pytest.raises(BadInput, match="mixture of experts"):
        build_model(PRESETS["mixtral-8x7b"])
    m = build_model(SMALL)
    with pytest.raises(BadInput, match="max_position"):
        m.setup_cache(1, SMALL.max_position + 1)


def test_opt_shape_runs():
    opt = dataclasses.replace(SMALL, name="opt-small", kv_heads=4, gated_mlp=False, learned_positions=True,
                              tied_embeddings=True)
    m = build_model(opt)
    assert sum(p.numel() for p in m.parameters()) == opt.params_total
    assert len(generate(m, [1, 2, 3], 4)) == 4


def test_loads_hf_llama_safetensors(tmp_path):
    from safetensors.torch import save_file

    src = build_model(SMALL, seed=4)
    tensors = {(k if k.startswith("lm_head") else "model." + k): v.contiguous() for k, v in src.state_dict().items()}
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # ignored, as HF files carry it
    save_file(tensors, str(tmp_path / "model.safetensors"))
    loaded = build_model(SMALL, seed=99, weights=str(tmp_path))
    assert generate(loaded, [5, 6, 7], 6) == generate(src, [5, 6, 7], 6)
    del tensors["model.norm.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(BadInput, match="missing weights norm.weight"):
        build_model(SMALL, weights=str(tmp_path))
    with pytest.raises(BadInput, match="no .safetensors"):
        build_model(SMALL, weights=str(tmp_path / "nowhere"))
