import json

import pytest

from planner.errors import BadInput
from planner.specs.models import PRESETS, load_config_json, resolve_model


@pytest.mark.parametrize("name,kv", [("llama-2-7b", 524288), ("llama-3.1-8b", 131072), ("llama-3.1-70b", 327680), ("qwen2.5-7b", 57344)])
def test_kv_bytes_per_token_known_answers(name, kv):
    assert PRESETS[name].kv_bytes_per_token("bf16") == kv
    assert PRESETS[name].kv_bytes_per_token("fp8") == kv // 2


def test_param_counts_match_published_sizes():
    assert PRESETS["llama-3.1-8b"].params_total == pytest.approx(8.03e9, rel=0.005)
    assert PRESETS["llama-2-7b"].params_total == pytest.approx(6.74e9, rel=0.005)
    assert PRESETS["llama-3.1-70b"].params_total == pytest.approx(70.55e9, rel=0.005)
    mix = PRESETS["mixtral-8x7b"]
    assert mix.params_total == pytest.approx(46.7e9, rel=0.01)
    assert mix.params_active == pytest.approx(12.9e9, rel=0.01)
    assert 20e6 <= PRESETS["tiny"].params_total <= 60e6


def test_weight_bytes_per_dtype():
    s = PRESETS["llama-3.1-8b"]
    assert s.weight_bytes("bf16") == 2 * s.params_total
    assert s.weight_bytes("fp8") == s.params_total
    assert s.weight_bytes("int4") == s.params_total / 2


def test_prefill_flops_includes_causal_attention():
    s = PRESETS["llama-3.1-8b"]
    l = 4000
    head = s.vocab * s.hidden
    dense = 2 * (s.matmul_params_active - head) * l + 2 * head  # logits for the last token only
    attn = 2 * s.layers * s.heads * s.head_dim * l * l
    assert s.prefill_flops(l) == pytest.approx(dense + attn)
    # ~60 TFLOP for a 4000-token prompt: 61 ms at the H100's 989 TFLOP/s (the public 65 ms floor
    # also counts the LM head on every prompt token).
    assert s.prefill_flops(l) / 989e12 * 1e3 == pytest.approx(60.7, rel=0.01)


def _write(tmp_path, cfg, name="config.json"):
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return p


LLAMA_CFG = {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8, "num_hidden_layers": 32,
             "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0, "tie_word_embeddings": False}


def test_config_json_llama_equals_preset(tmp_path):
    s = load_config_json(_write(tmp_path, LLAMA_CFG))
    p = PRESETS["llama-3.1-8b"]
    assert s.params_total == p.params_total and s.kv_bytes_per_token() == p.kv_bytes_per_token()


def test_config_json_families(tmp_path):
    qwen = {**LLAMA_CFG, "model_type": "qwen2", "hidden_size": 3584, "num_attention_heads": 28, "num_key_value_heads": 4, "num_hidden_layers": 28,
            "intermediate_size": 18944, "vocab_size": 152064}
    assert load_config_json(_write(tmp_path, qwen, "q.json")).kv_bytes_per_token() == 57344
    mix = {**LLAMA_CFG, "model_type": "mixtral", "vocab_size": 32000, "num_local_experts": 8, "num_experts_per_tok": 2}
    m = load_config_json(_write(tmp_path, mix, "m.json"))
    assert m.experts == 8 and m.params_active < m.params_total
    opt = {"model_type": "opt", "hidden_size": 5120, "num_attention_heads": 40, "num_hidden_layers": 40, "ffn_dim": 20480, "vocab_size": 50272,
           "max_position_embeddings": 2048}
    o = load_config_json(_write(tmp_path, opt, "o.json"))
    assert not o.gated_mlp and o.kv_bytes_per_token() == PRESETS["opt-13b"].kv_bytes_per_token()
    mistral = {**LLAMA_CFG, "model_type": "mistral", "vocab_size": 32000}
    assert load_config_json(_write(tmp_path, mistral, "mi.json")).params_total == PRESETS["mistral-7b"].params_total


def test_config_json_errors_name_file_and_field(tmp_path):
    bad = dict(LLAMA_CFG)
    del bad["hidden_size"]
    with pytest.raises(BadInput, match=r"config.json: missing field 'hidden_size'"):
        load_config_json(_write(tmp_path, bad))
    with pytest.raises(BadInput, match="num_hidden_layers.*positive"):
        load_config_json(_write(tmp_path, {**LLAMA_CFG, "num_hidden_layers": -1}, "x.json"))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(BadInput, match="broken.json: not valid JSON"):
        load_config_json(tmp_path / "broken.json")
    with pytest.raises(BadInput, match="unknown model 'gpt-17'"):
        resolve_model("gpt-17")
