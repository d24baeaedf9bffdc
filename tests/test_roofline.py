import numpy as np
import pytest

from planner.specs.catalog import load_catalog
from planner.steptime.roofline import Efficiency, Replica, kv_transfer_s
from planner.specs.models import PRESETS

CAT = load_catalog()
H100 = CAT.resolve("h100-sxm")
L8B = PRESETS["llama-3.1-8b"]


def test_weight_read_floor_h100():
    # 16.06 GB of bf16 weights at 3.35 TB/s: 4.79 ms, the floor any decode step pays.
    r = Replica(L8B, H100, 1)
    assert r.weight_read_floor_s * 1e3 == pytest.approx(16.06e9 / 3.35e12 * 1e3, rel=1e-3)
    assert r.decode_step_s(1, 100) > r.weight_read_floor_s


def test_defaults_reproduce_public_h100_measurements():
    r = Replica(L8B, H100, 1)
    assert r.decode_step_s(1, 512) * 1e3 == pytest.approx(6.7, rel=0.05)
    assert r.prefill_time_s([4000]) * 1e3 == pytest.approx(95, rel=0.05)


def test_decode_memory_bound_then_grows_with_batch_and_context():
    r = Replica(L8B, H100, 1)
    t1, t8 = r.decode_step_s(1, 1000), r.decode_step_s(8, 1000)
    assert t8 < 1.2 * t1  # weights dominate at small batch
    assert r.decode_step_s(64, 4000) > 2 * t1  # KV reads catch up
    assert r.decode_step_s(8, 8000) > r.decode_step_s(8, 1000)


def test_tp_splits_time_and_costs_comm():
    r1, r2 = Replica(L8B, H100, 1), Replica(L8B, H100, 2)
    assert r2.tp_comm_s(1000) > 0 and r1.tp_comm_s(1000) == 0
    assert r2.decode_step_s(1, 100) < r1.decode_step_s(1, 100)
    assert r2.decode_step_s(1, 100) > r1.decode_step_s(1, 100) / 2  # comm + overhead: not a free 2x


def test_kv_capacity_formula_and_replication():
    r = Replica(L8B, H100, 1)
    expect = (80e9 * 0.9 - L8B.weight_bytes("bf16") - 2e9) // 131072
    assert r.kv_capacity_tokens == expect
    # 8 KV heads: at tp=8 each GPU holds one head; beyond kv_heads the KV would be replicated.
    assert Replica(L8B, H100, 8).kv_bytes_per_token == 131072
    big = PRESETS["llama-3.1-70b"]
    assert not Replica(big, CAT.resolve("l4"), 1).fits
    assert not Replica(big, H100, 2).fits  # 141 GB of weights in 2 x 80 GB x 90%: no room for KV
    assert Replica(big, H100, 4).fits


def test_fp8_weights_halve_weight_reads():
    r16, r8 = Replica(L8B, H100, 1, "bf16"), Replica(L8B, H100, 1, "fp8")
    assert r8.weight_bytes == r16.weight_bytes / 2
    assert r8.decode_step_s(1, 100) < 0.6 * r16.decode_step_s(1, 100)


def test_moe_decode_reads_only_touched_experts():
    mix = PRESETS["mixtral-8x7b"]
    r = Replica(mix, H100, 2)
    assert r.decode_weight_bytes(1) < 0.4 * r.weight_bytes
    assert r.decode_weight_bytes(256) == pytest.approx(r.weight_bytes, rel=1e-6)


def test_kv_transfer_time():
    # 1000 tokens of Llama-3.1-8B KV (131 MB) over 50 GB/s: 2.62 ms + 1 ms latency; fp8 halves the bytes.
    t = kv_transfer_s(1000, 131072, 50e9)
    assert t == pytest.approx(1000 * 131072 / 50e9 + 1e-3)
    assert kv_transfer_s(1000, 131072, 50e9, compression="fp8") == pytest.approx(1000 * 131072 / 2 / 50e9 + 1e-3)


def test_vectorised_prefill_matches_scalar():
    r = Replica(L8B, H100, 2, eff=Efficiency(0.5, 0.6, 1e-3, 1e-3))
    ls = np.array([10, 100, 1000, 5000])
    np.testing.assert_allclose(r.prefill_times_s(ls), [r.prefill_time_s([x]) for x in ls])
