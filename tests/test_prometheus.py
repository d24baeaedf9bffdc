"""Prometheus text parsing, deltas and quantiles: known answers."""

import math

import pytest

from planner.measure import prometheus as prom

VLLM_BEFORE = """\
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 2.0
vllm:time_to_first_token_seconds_bucket{le="0.2",model_name="m"} 3.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 4.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 1.0
vllm:time_to_first_token_seconds_count{model_name="m"} 4.0
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name="m"} 100.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
"""

VLLM_AFTER = """\
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 4.0
vllm:time_to_first_token_seconds_bucket{le="0.2",model_name="m"} 9.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 14.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 4.0
vllm:time_to_first_token_seconds_count{model_name="m"} 14.0
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name="m"} 612.0 1712345678901
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",num_gpu_blocks="2000",num_cpu_blocks="None"} 1.0
"""


def test_parse_counters_gauges_and_timestamps():
    s = prom.parse(VLLM_AFTER)
    assert s.value("vllm:prompt_tokens_total") == 612.0  # the timestamp is not the value
    assert s.value("vllm:kv_cache_usage_perc", engine="0") == 0.25
    assert s.types["vllm:time_to_first_token_seconds"] == "histogram"
    assert s.value("vllm:missing") is None


def test_labels_with_escapes_commas_braces_and_special_values():
    text = (
        'weird{path="C:\\\\dir",msg="say \\"hi\\", then go",brace="}{",nl="a\\nb"} NaN\n'
        "up_plus +Inf\nup_minus -Inf\n"
        '{"my.utf8.metric", zone="eu"} 3\n'
        'with_exemplar_total{a="1"} 5 # {trace_id="abc"} 1.0 1700000000\n'
        "this line is garbage\n"
        "# a comment line\n"
    )
    s = prom.parse(text)
    ((labels, v),) = s.series("weird")
    assert labels == {"path": "C:\\dir", "msg": 'say "hi", then go', "brace": "}{", "nl": "a\nb"}
    assert math.isnan(v)
    assert s.value("up_plus") == math.inf and s.value("up_minus") == -math.inf
    assert s.value("my.utf8.metric", zone="eu") == 3.0
    assert s.value("with_exemplar_total") == 5.0
    assert len(s.values) == 5  # garbage skipped


def test_histogram_read_and_mean():
    h = prom.parse(VLLM_AFTER).histogram("vllm:time_to_first_token_seconds")
    assert h.buckets == ((0.1, 4.0), (0.2, 9.0), (math.inf, 14.0))
    assert h.count == 14.0 and h.mean == pytest.approx(4.0 / 14)


def test_histogram_quantile_known_answers():
    # 2 obs <= 0.1, 4 more <= 0.2, 4 above: count 10.
    h = prom.Histogram(buckets=((0.1, 2.0), (0.2, 6.0), (math.inf, 10.0)), sum_s=2.5, count=10.0)
    assert prom.histogram_quantile(0.1, h) == pytest.approx(0.05)  # rank 1 of 2 in [0, 0.1]
    assert prom.histogram_quantile(0.5, h) == pytest.approx(0.175)  # rank 5: 0.1 + 0.1 * 3/4
    assert prom.histogram_quantile(0.6, h) == pytest.approx(0.2)
    assert prom.histogram_quantile(0.95, h) == 0.2  # in the +Inf bucket: highest finite bound
    assert prom.histogram_quantile(1.5, h) == math.inf and prom.histogram_quantile(-1, h) == -math.inf
    empty = prom.Histogram(buckets=((0.1, 0.0), (math.inf, 0.0)), sum_s=0.0, count=0.0)
    assert prom.histogram_quantile(0.5, empty) is None and empty.mean is None
    # A scrape race can make a higher bucket smaller: made monotonic, as PromQL does.
    racy = prom.Histogram(buckets=((1.0, 4.0), (2.0, 3.0), (math.inf, 4.0)), sum_s=3.0, count=4.0)
    assert prom.histogram_quantile(0.5, racy) == pytest.approx(0.5)


def test_delta_of_histograms_counters_and_gauges():
    d = prom.delta(prom.parse(VLLM_BEFORE), prom.parse(VLLM_AFTER))
    h = d.histogram("vllm:time_to_first_token_seconds")
    assert h.buckets == ((0.1, 2.0), (0.2, 6.0), (math.inf, 10.0))
    assert h.count == 10.0 and h.mean == pytest.approx(0.3)  # (4 - 1) / (14 - 4)
    assert h.quantile(0.5) == pytest.approx(0.175)
    assert d.value("vllm:prompt_tokens_total") == 512.0
    assert d.value("vllm:kv_cache_usage_perc") == 0.25  # a gauge: its level after


def test_delta_counter_reset_uses_after():
    before = prom.parse("# TYPE x_total counter\nx_total 500\n# TYPE h histogram\n"
                        'h_bucket{le="1"} 9\nh_bucket{le="+Inf"} 10\nh_sum 5\nh_count 10\n')
    after = prom.parse("# TYPE x_total counter\nx_total 20\n# TYPE h histogram\n"
                       'h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 3\nh_sum 2.5\nh_count 3\n')
    d = prom.delta(before, after)
    assert d.value("x_total") == 20.0
    assert d.histogram("h").count == 3.0 and d.histogram("h").buckets[0] == (1.0, 1.0)


def test_histogram_series_merge_across_labels():
    text = "".join(
        f'vllm:inter_token_latency_seconds_bucket{{engine="{e}",le="{le}"}} {c}\n'
        for e, rows in (("0", ((0.01, 1), ("+Inf", 2))), ("1", ((0.01, 3), ("+Inf", 4))))
        for le, c in rows
    ) + 'vllm:inter_token_latency_seconds_sum{engine="0"} 0.1\nvllm:inter_token_latency_seconds_sum{engine="1"} 0.2\n' \
        'vllm:inter_token_latency_seconds_count{engine="0"} 2\nvllm:inter_token_latency_seconds_count{engine="1"} 4\n'
    s = prom.parse(text)
    h = s.histogram("vllm:inter_token_latency_seconds")
    assert h.buckets == ((0.01, 4.0), (math.inf, 6.0)) and h.mean == pytest.approx(0.05)
    assert s.histogram("vllm:inter_token_latency_seconds", engine="1").count == 4.0


def test_phase_summary_vllm_old_itl_name_and_kv_capacity():
    hist = lambda name, n, total: (  # noqa: E731
        f"# TYPE {name} histogram\n{name}_bucket{{le=\"0.01\"}} {n}\n{name}_bucket{{le=\"+Inf\"}} {n}\n"
        f"{name}_sum {total}\n{name}_count {n}\n"
    )
    before = prom.parse(hist("vllm:time_per_output_token_seconds", 0, 0) + hist("vllm:request_prefill_time_seconds", 0, 0))
    after = prom.parse(hist("vllm:time_per_output_token_seconds", 50, 0.25) + hist("vllm:request_prefill_time_seconds", 5, 0.02)
                       + "vllm:gpu_cache_usage_perc 0.125\n")
    out = prom.phase_summary(before, after)
    assert out["server_itl_mean_s"] == pytest.approx(0.005) and out["server_itl_count"] == 50
    assert out["server_prefill_mean_s"] == pytest.approx(0.004)
    assert out["server_prefill_p50_s"] == pytest.approx(0.005)  # rank 2.5 of 5 in [0, 0.01]
    assert out["server_kv_usage"] == 0.125
    assert "server_decode_mean_s" not in out
    assert prom.kv_capacity_tokens(prom.parse(VLLM_AFTER)) == 32000  # 2000 blocks x 16 tokens


def test_sglang_and_planner_names():
    sg = prom.parse(
        "# TYPE sglang:queue_time_seconds histogram\n"
        'sglang:queue_time_seconds_bucket{le="0.1",model_name="m"} 3\nsglang:queue_time_seconds_bucket{le="+Inf",model_name="m"} 4\n'
        'sglang:queue_time_seconds_sum{model_name="m"} 0.2\nsglang:queue_time_seconds_count{model_name="m"} 4\n'
        'sglang:token_usage{model_name="m"} 0.3\nsglang:max_total_num_tokens{model_name="m"} 161721.0\n'
    )
    assert prom.detect_engine(sg) == "sglang"
    empty = prom.parse("")
    out = prom.phase_summary(empty, sg)
    assert out["server_queue_mean_s"] == pytest.approx(0.05) and out["server_kv_usage"] == 0.3
    assert prom.kv_capacity_tokens(sg) == 161721
    pl = prom.parse('planner:cache_config_info{block_size="1",num_gpu_blocks="4096"} 1\n')
    assert prom.detect_engine(pl) == "planner" and prom.kv_capacity_tokens(pl) == 4096
    assert prom.detect_engine(prom.parse("process_cpu_seconds_total 1\n")) is None
    assert prom.phase_summary(empty, prom.parse("x 1\n")) == {}
    assert prom.kv_capacity_tokens(empty) is None
