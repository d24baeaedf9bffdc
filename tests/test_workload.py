"""Workload: length distributions against scipy, flag/YAML parsing, traces (incl. the real Azure one)."""

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, stats

from planner.errors import BadInput
from planner.workload.trace import load_trace
from planner.workload.workload import (
    SLO,
    LengthDist,
    Workload,
    load_workload_file,
    parse_length,
    slo_from_flags,
    workload_from_flags,
    workload_from_trace,
)

DATA = Path(__file__).parent / "data"
AZURE = Path("/work/shared/data/azure-llm-inference-2023/AzureLLMInferenceTrace_conv.csv")
SLO90 = SLO(ttft_ms=1000, tpot_ms=50, percentile=90)


# ---- distributions: known answers ------------------------------------------------------------


@pytest.mark.parametrize("mean,sigma", [(1000, 0.8), (250, 0.3), (4000, 1.2)])
def test_lognormal_matches_scipy(mean, sigma):
    d = LengthDist.lognormal(mean=mean, sigma=sigma)
    ref = stats.lognorm(s=sigma, scale=math.exp(math.log(mean) - sigma**2 / 2))
    assert d.mean == pytest.approx(ref.mean(), rel=1e-12)
    assert d.mean == pytest.approx(mean, rel=1e-12)
    assert d.var == pytest.approx(ref.var(), rel=1e-9)
    assert d.mean_square == pytest.approx(ref.moment(2), rel=1e-9)
    for q in (1, 50, 90, 99):
        assert d.percentile(q) == pytest.approx(ref.ppf(q / 100), rel=1e-9)
    assert d.max == math.ceil(ref.ppf(0.999))  # unbounded: the p99.9 bounds memory


def test_lognormal_other_parametrisations_round_trip():
    d = LengthDist.lognormal(median=800, p90=2000)
    assert d.percentile(50) == pytest.approx(800) and d.percentile(90) == pytest.approx(2000)
    d = LengthDist.lognormal(mean=1000, median=800)
    assert d.mean == pytest.approx(1000) and d.percentile(50) == pytest.approx(800)
    d = LengthDist.lognormal(mean=1000, p90=2000)
    assert d.mean == pytest.approx(1000) and d.percentile(90) == pytest.approx(2000)
    assert d.sigma < 1.2816  # the documented root
    d = LengthDist.lognormal(p90=2000, sigma=0.5)
    assert d.percentile(90) == pytest.approx(2000) and d.sigma == 0.5


def test_lognormal_capped_is_truncated_lognormal():
    d = LengthDist.lognormal(mean=1000, sigma=1.0, max=2000)
    ref = stats.lognorm(s=1.0, scale=math.exp(math.log(1000) - 0.5))
    z = ref.cdf(2000)
    m1 = integrate.quad(lambda x: x * ref.pdf(x), 0, 2000)[0] / z
    m2 = integrate.quad(lambda x: x * x * ref.pdf(x), 0, 2000)[0] / z
    assert d.mean == pytest.approx(m1, rel=1e-6)
    assert d.mean_square == pytest.approx(m2, rel=1e-6)
    assert d.percentile(50) == pytest.approx(ref.ppf(0.5 * z), rel=1e-9)
    assert d.percentile(100) == pytest.approx(2000) and d.max == 2000
    s = d.sample(np.random.default_rng(1), 50_000)
    assert s.max() <= 2000 and abs(s.mean() - m1) < 4 * math.sqrt(m2 - m1**2) / math.sqrt(50_000) + 0.5


@pytest.mark.parametrize("mean,std,lo,hi", [(500, 100, 1, 2000), (100, 300, 1, math.inf), (50, 40, 20, 90)])
def test_truncated_normal_matches_scipy(mean, std, lo, hi):
    d = LengthDist.normal(mean, std, lo, hi)
    ref = stats.truncnorm((lo - mean) / std, (hi - mean) / std, loc=mean, scale=std)
    assert d.mean == pytest.approx(ref.mean(), rel=1e-9)
    assert d.var == pytest.approx(ref.var(), rel=1e-7)
    for q in (5, 50, 90, 99):
        assert d.percentile(q) == pytest.approx(ref.ppf(q / 100), rel=1e-7)
    assert d.max == (int(hi) if math.isfinite(hi) else math.ceil(ref.ppf(0.999)))
    s = d.sample(np.random.default_rng(2), 20_000)
    assert s.min() >= max(1, round(lo)) and s.max() <= hi
    assert abs(s.mean() - ref.mean()) < 5 * ref.std() / math.sqrt(20_000) + 0.5


def test_uniform_is_discrete_uniform():
    d = LengthDist.uniform(100, 2000)
    ref = stats.randint(100, 2001)
    assert d.mean == pytest.approx(ref.mean()) and d.var == pytest.approx(ref.var())
    assert d.mean_square == pytest.approx(ref.moment(2))
    assert d.percentile(0) == 100 and d.percentile(100) == 2000 and d.percentile(50) == 1050
    assert d.max == 2000
    s = d.sample(np.random.default_rng(3), 100_000)
    assert s.min() == 100 and s.max() == 2000 and abs(s.mean() - 1050) < 6


def test_fixed_and_empirical():
    d = LengthDist.fixed(512)
    assert (d.mean, d.var, d.mean_square, d.max, d.percentile(99)) == (512, 0, 512**2, 512, 512)
    assert (d.sample(np.random.default_rng(0), 4) == 512).all()
    v = [0, 10, 20, 30, 1000]
    e = LengthDist.empirical(v)
    assert list(e.values) == [1, 10, 20, 30, 1000]  # zero counts as one token, order kept
    assert e.mean == pytest.approx(1061 / 5) and e.max == 1000
    assert e.mean_square == pytest.approx((1 + 100 + 400 + 900 + 1e6) / 5)
    assert e.percentile(50) == 20 and e.percentile(90) == pytest.approx(np.percentile([1, 10, 20, 30, 1000], 90))
    assert set(e.sample(np.random.default_rng(0), 100)) <= {1, 10, 20, 30, 1000}
    assert LengthDist.empirical(v) == e and LengthDist.empirical([1, 2]) != e
    assert hash(LengthDist.empirical(v)) == hash(e)


def test_samples_are_ints_at_least_one_and_reproducible():
    d = LengthDist.lognormal(mean=3, sigma=1.5)  # much mass below 0.5 tokens
    a = d.sample(np.random.default_rng(7), 10_000)
    assert a.dtype == np.int64 and a.min() >= 1
    assert (a == d.sample(np.random.default_rng(7), 10_000)).all()


def test_describe_has_units():
    assert LengthDist.lognormal(mean=1000, sigma=0.8).describe() == "lognormal mean 1000 tok, p90 2024 tok"
    assert LengthDist.fixed(512).describe() == "fixed 512 tok"
    assert LengthDist.uniform(100, 2000).describe() == "uniform 100-2000 tok"
    assert "tok" in LengthDist.normal(500, 100, 1, 2000).describe()
    assert LengthDist.empirical([5, 15]).describe().startswith("empirical (2 values) mean 10 tok")


# ---- parsing length specs and flags ----------------------------------------------------------


def test_parse_length_specs():
    assert parse_length(512) == LengthDist.fixed(512)
    assert parse_length("512") == parse_length("fixed:512") == LengthDist.fixed(512)
    assert parse_length("lognormal:mean=1000,sigma=0.8") == LengthDist.lognormal(mean=1000, sigma=0.8)
    assert parse_length("uniform:100-2000") == parse_length("uniform:low=100,high=2000") == LengthDist.uniform(100, 2000)
    assert parse_length("normal:mean=500,std=100,min=1,max=2000") == LengthDist.normal(500, 100, 1, 2000)
    assert parse_length({"kind": "lognormal", "median": 800, "p90": 2000}) == LengthDist.lognormal(median=800, p90=2000)
    assert parse_length(" Lognormal : mean=1000, sigma=0.8 ") == LengthDist.lognormal(mean=1000, sigma=0.8)


@pytest.mark.parametrize("spec,needle", [
    ("lognorm:mean=1", "unknown length kind 'lognorm'"),
    ("lognormal:mean=1000", "exactly two of mean, sigma, median, p90"),
    ("lognormal:mean=1000,sigm=0.8", "unknown parameter 'sigm'"),
    ("lognormal:mean=1000,sigma=abc", "lognormal sigma must be a number, got 'abc'"),
    ("lognormal:median=900,p90=800", "must exceed median"),
    ("lognormal:mean=1000,p90=5000", "p90/mean must be in (1, 2.27]"),
    ("uniform:2000-100", "1 <= low <= high"),
    ("normal:mean=500", "normal needs mean and std"),
    ("normal:mean=-5000,std=1", "no mass"),
    ("-5", "fixed length must be between 1 and 16,777,216 tokens, got -5"),
    ("0", "fixed length must be between 1 and"),
    ("1e300", "fixed length must be between 1 and 16,777,216 tokens, got 1e+300"),
    ("lognormal:mean=1000,sigma=40", "lognormal sigma must be in (0, 4]"),
    ("lognormal:mean", "expected key=value"),
])
def test_parse_length_errors_name_the_flag(spec, needle):
    with pytest.raises(BadInput) as e:
        parse_length(spec, "--input-len")
    assert str(e.value).startswith("--input-len: ") and needle in str(e.value)


def test_flags_defaults_and_notes():
    w = workload_from_flags(rate=20)
    assert (w.rate_rps, w.mean_rate_rps, w.peak_factor, w.arrival_cv2) == (20, 20, 1.0, 1.0)
    assert w.input == LengthDist.fixed(1000) and w.output == LengthDist.fixed(250)
    assert w.slo == SLO(1000, 50, 90) and w.source == "flags"
    assert any("Poisson" in n for n in w.notes)
    w = workload_from_flags(requests_per_day=100_000, peak_factor=2.0, input_len="lognormal:mean=1000,sigma=0.8")
    assert w.mean_rate_rps == pytest.approx(100_000 / 86400) and w.rate_rps == pytest.approx(2 * 100_000 / 86400)
    assert "100,000 req/day / 86400 s" in w.notes[0] and "x peak factor 2" in w.notes[0]
    assert w.input.kind == "lognormal"


@pytest.mark.parametrize("kwargs,msg", [
    (dict(rate=-1), "--rate must be > 0, got -1"),
    (dict(rate=0), "--rate must be > 0, got 0"),
    (dict(requests_per_day=-5), "--requests-per-day must be > 0, got -5"),
    (dict(rate=1, requests_per_day=5), "give --rate or --requests-per-day, not both"),
    (dict(), "no request rate"),
    (dict(rate=1, peak_factor=0.5), "--peak-factor must be >= 1, got 0.5"),
    (dict(rate=1, ttft_slo_ms=0), "--ttft-slo-ms must be > 0, got 0"),
    (dict(rate=1, tpot_slo_ms=-3), "--tpot-slo-ms must be > 0, got -3"),
    (dict(rate=1, percentile=95), "--percentile must be one of 50, 90, 99, got 95"),
    (dict(rate=1, output_len=0), "--output-len: fixed length must be between 1 and 16,777,216 tokens"),
    (dict(rate="fast"), "--rate must be a number, got 'fast'"),
    (dict(rate=1, arrival_cv2=-1), "--arrival-cv2 must be >= 0"),
])
def test_flag_errors(kwargs, msg):
    with pytest.raises(BadInput, match=None) as e:
        workload_from_flags(**kwargs)
    assert msg in str(e.value)


def test_slo_validation():
    with pytest.raises(BadInput, match="percentile"):
        SLO(100, 10, 95)
    with pytest.raises(BadInput, match="ttft_ms"):
        SLO(-1, 10, 90)
    assert SLO(np.float64(5), np.int64(3), 99).tpot_ms == 3
    assert SLO(1000, 50, 90).describe() == "p90 TTFT <= 1000 ms, p90 TPOT <= 50 ms"
    with pytest.raises(BadInput, match="--tpot-slo-ms must be > 0, got 0"):
        slo_from_flags(100, 0, 90)
    assert slo_from_flags(100, 10, 99) == SLO(100, 10, 99)


def test_to_dict_is_json_and_helpers():
    w = workload_from_flags(rate=10, peak_factor=1.5, input_len="uniform:100-300")
    d = json.loads(json.dumps(w.to_dict()))
    assert d["rate_rps"] == 15 and d["mean_rate_rps"] == 10 and d["peak_factor"] == 1.5
    assert d["input"]["kind"] == "uniform" and d["input"]["mean"] == 200 and d["input"]["max"] == 300
    assert set(d["output"]) >= {"kind", "mean", "p50", "p90", "p99", "max"}
    assert d["slo"] == {"ttft_ms": 1000, "tpot_ms": 50, "percentile": 90, "itl_ms": None} and d["source"] == "flags"
    w2 = w.with_rate(30)
    assert (w2.rate_rps, w2.mean_rate_rps, w2.peak_factor) == (30, 20, 1.5) and "what-if" in w2.notes[-1]
    w3 = w.with_slo(tpot_ms=20)
    assert w3.slo == SLO(1000, 20, 90) and w3.input == w.input and w.slo.tpot_ms == 50
    assert w.input_tokens_per_s == pytest.approx(15 * 200) and w.output_tokens_per_s == pytest.approx(15 * 250)
    with pytest.raises(BadInput):
        w.with_rate(0)
    assert hash(w) == hash(workload_from_flags(rate=10, peak_factor=1.5, input_len="uniform:100-300"))


@pytest.mark.parametrize("cv2", [0.0, 1.0, 4.0])
def test_arrival_times_have_the_rate_and_cv2(cv2):
    w = Workload(8.0, 8.0, 1.0, LengthDist.fixed(10), LengthDist.fixed(10), SLO90, arrival_cv2=cv2)
    t = w.arrival_times_s(np.random.default_rng(5), 40_000)
    g = np.diff(t)
    assert t[0] == 0 and g.mean() == pytest.approx(1 / 8, rel=0.03)
    assert g.var() / g.mean() ** 2 == pytest.approx(cv2, abs=0.1 * max(cv2, 1))


# ---- traces ----------------------------------------------------------------------------------


def test_small_csv_trace_azure_columns():
    tr = load_trace(DATA / "trace_small.csv")
    assert tr.n_requests == 7 and list(tr.input_tokens[:3]) == [374, 396, 879]
    assert tr.span_s == pytest.approx(60.0, abs=1e-6)
    assert tr.timestamps_s[1] == pytest.approx(4.314579, abs=1e-6)
    assert tr.mean_rate_rps == pytest.approx(7 / 60)
    assert tr.clock_offset_s == pytest.approx(18 * 3600 + 15 * 60 + 46.68059, abs=1e-6)
    gaps = [4.314579, 0.227298, 0.16855, 9.608983, 29.5, 16.18059]
    assert tr.arrival_cv2 == pytest.approx(statistics.pvariance(gaps) / statistics.mean(gaps) ** 2, rel=1e-5)
    assert tr.hourly_rps is None  # under two hours


def test_jsonl_trace_with_aliases_and_blank_line():
    tr = load_trace(DATA / "trace_small.jsonl")
    assert list(tr.input_tokens) == [100, 200, 300, 400] and list(tr.output_tokens) == [10, 20, 30, 40]
    assert list(tr.timestamps_s) == [0, 0.5, 1.5, 4.0] and tr.mean_rate_rps == 1.0
    assert tr.clock_offset_s is None


def test_trace_sorting_peak_minute_and_time_scale(tmp_path):
    # 3 minutes: 10, 40, 20 requests, written out of order; the busiest minute has 40.
    t = np.concatenate([np.linspace(0, 59, 10), np.linspace(60, 119, 40), np.linspace(120, 180, 20)])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(t))
    p = tmp_path / "t.csv"
    p.write_text("Time,Input_Len,Output_Len\n" + "".join(f"{t[i]},{i + 1},{2 * i + 1}\n" for i in order))
    tr = load_trace(p)
    assert (np.diff(tr.timestamps_s) >= 0).all() and "sorted" in tr.notes[0]
    assert list(tr.input_tokens[:3]) == [1, 2, 3] and list(tr.output_tokens[:3]) == [1, 3, 5]  # pairs kept
    assert list(tr.per_minute_counts) == [10, 40, 19]  # the request at t=180 s is in the partial 4th minute
    assert tr.peak_minute_rps == pytest.approx(40 / 60) and tr.mean_rate_rps == pytest.approx(70 / 180)
    assert tr.peak_factor == pytest.approx((40 / 60) / (70 / 180))
    slow = load_trace(p, time_scale=2.0)
    assert slow.span_s == pytest.approx(360) and slow.mean_rate_rps == pytest.approx(70 / 360)
    w = workload_from_trace(p, SLO90)
    assert w.rate_rps == pytest.approx(40 / 60) and w.mean_rate_rps == pytest.approx(70 / 180)
    assert any(n.startswith("sized for the trace's busiest minute: 0.6667 req/s (mean 0.3889 req/s)") for n in w.notes)
    assert w.input.values[1] == 2 and w.output.values[1] == 3 and w.timestamps_s[1] > 0
    w2 = workload_from_trace(p, SLO90, rate=7.0)  # x18
    assert w2.mean_rate_rps == pytest.approx(7.0) and w2.rate_rps == pytest.approx(12.0)
    assert w2.timestamps_s[-1] == pytest.approx(10.0) and any("rescaled" in n for n in w2.notes)
    with pytest.raises(BadInput, match="busiest minute sets the peak"):
        workload_from_trace(p, SLO90, peak_factor=2.0)


def test_hourly_profile_epoch_seconds(tmp_path):
    # Clock hours 10, 11, 12 (UTC epoch) at 1, 2 and 3 req/s: 10800 requests over 3 h.
    day = 1_700_006_400  # 2023-11-15 00:00:00 UTC
    t = np.concatenate([day + 10 * 3600 + np.arange(3600), day + 11 * 3600 + np.arange(0, 3600, 0.5),
                        day + 12 * 3600 + np.arange(0, 3600, 1 / 3)])
    p = tmp_path / "h.csv"
    p.write_text("timestamp,prompt_tokens,completion_tokens\n" + "".join(f"{x:.4f},5,6\n" for x in t))
    tr = load_trace(p)
    assert "epoch" in tr.notes[0] and tr.clock_offset_s == pytest.approx(36000)
    h = tr.hourly_rps
    assert len(h) == 24 and h[10] == pytest.approx(1, rel=1e-3) and h[11] == pytest.approx(2, rel=1e-3)
    assert h[12] == pytest.approx(3, rel=2e-3)
    assert tr.hourly_covered[10] and not tr.hourly_covered[3] and h[3] == pytest.approx(tr.mean_rate_rps)
    w = workload_from_trace(p, SLO90)
    assert w.hourly_rps == h and any("hours of day not in the trace" in n for n in w.notes)
    assert w.rate_rps == pytest.approx(3.0, rel=0.02)


def test_trace_without_timestamps_needs_rate(tmp_path):
    p = tmp_path / "lens.csv"
    p.write_text("input_tokens,output_tokens\n100,0\n300,20\n")
    with pytest.raises(BadInput, match="no timestamp column.*--rate"):
        workload_from_trace(p, SLO90)
    w = workload_from_trace(p, SLO90, rate=4.0, peak_factor=1.5)
    assert (w.rate_rps, w.mean_rate_rps, w.arrival_cv2, w.timestamps_s) == (6.0, 4.0, 1.0, None)
    assert w.input.mean == 200 and list(w.output.values) == [1, 20]
    assert any("1 requests with 0 output tokens counted as 1 token" in n for n in w.notes)


def _bad(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(BadInput) as e:
        load_trace(p)
    return str(e.value)


def test_bad_traces_name_file_line_and_column(tmp_path):
    m = _bad(tmp_path, "a.csv", "input_tokens,output_tokens\n1,2\n3,x\n")
    assert "a.csv: line 3, column output_tokens: 'x' is not a number" in m
    m = _bad(tmp_path, "b.csv", "input_tokens,output_tokens\n1,2\n\n-3,4\n")
    assert "b.csv: line 4, column input_tokens: token count must be in 0..16,777,216, got -3" in m
    m = _bad(tmp_path, "c.csv", "input_tokens,foo\n1,2\n")
    assert "c.csv: no output-length column (have input_tokens, foo" in m
    assert "trace file is empty" in _bad(tmp_path, "d.csv", "")
    assert "trace has no requests" in _bad(tmp_path, "e.csv", "input_tokens,output_tokens\n")
    m = _bad(tmp_path, "f.csv", "input_tokens,output_tokens\n1,\n")
    assert "line 2, column output_tokens: missing value" in m
    m = _bad(tmp_path, "g.csv", "timestamp,input_tokens,output_tokens\n2023-11-16 18:00:00,1,2\nyesterday,1,2\n")
    assert "g.csv: line 3, column timestamp: 'yesterday' is neither seconds nor an ISO 8601 datetime" in m
    m = _bad(tmp_path, "h.jsonl", '{"input_tokens": 1, "output_tokens": 2}\n{"input_tokens": 1, "output_tokens": \n')
    assert "h.jsonl: line 2: not valid JSON" in m
    m = _bad(tmp_path, "i.jsonl", '{"input_tokens": 1, "output_tokens": 2}\n[1, 2]\n')
    assert "i.jsonl: line 2: expected a JSON object per line, got list" in m
    m = _bad(tmp_path, "j.jsonl", '{"input_tokens": 1, "output_tokens": 2}\n\n{"input_tokens": 1}\n')
    assert "j.jsonl: line 3, column output_tokens: missing value" in m
    assert "trace file is empty" in _bad(tmp_path, "k.jsonl", "")
    m = _bad(tmp_path, "l.csv", "input_tokens,output_tokens\n1,2\n1,2,3\n")
    assert "l.csv: not a valid CSV" in m and "line 3" in m
    with pytest.raises(BadInput, match="trace file not found"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(BadInput, match="time_scale must be > 0"):
        load_trace(DATA / "trace_small.csv", time_scale=0)


def test_big_csv_loads_every_row(tmp_path):
    """Azure-style timestamps over many rows (timing of a million rows: benchmarks/scale.py)."""
    n = 100_000
    rng = np.random.default_rng(0)
    t = np.datetime64("2023-11-16T18:00:00", "us") + np.cumsum(rng.integers(1, 20_000, n)).astype("timedelta64[us]")
    ts = np.char.add(np.char.replace(np.datetime_as_string(t, unit="us"), "T", " "), "0")  # Azure's 7 digits
    p = tmp_path / "big.csv"
    body = np.char.add(np.char.add(ts, ","), rng.integers(1, 4000, n).astype(str))
    body = np.char.add(np.char.add(body, ","), rng.integers(1, 600, n).astype(str))
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(body.tolist()) + "\n")
    tr = load_trace(p)
    assert tr.n_requests == n
    assert tr.span_s == pytest.approx((t[-1] - t[0]) / np.timedelta64(1, "s"), abs=1e-6)


# ---- the real Azure trace: known answers from its README ---------------------------------------


@pytest.mark.skipif(not AZURE.exists(), reason="Azure trace not present")
def test_azure_conversation_trace_known_answers():
    tr = load_trace(AZURE)
    assert tr.n_requests == 19_366
    assert tr.span_s / 60 == pytest.approx(58.4, abs=0.05)
    assert tr.mean_rate_rps == pytest.approx(5.5, abs=0.05)
    assert abs(tr.input_tokens.mean() - 1154) < 1 and np.median(tr.input_tokens) == 1020
    assert abs(tr.output_tokens.mean() - 211) < 1 and np.median(tr.output_tokens) == 129
    assert abs(np.percentile(tr.input_tokens, 90) - 2734) <= 1 and np.percentile(tr.input_tokens, 99) == 4142
    assert np.percentile(tr.output_tokens, 90) == 424 and np.percentile(tr.output_tokens, 99) == 601
    assert 8.3 <= tr.peak_minute_rps <= 8.5  # README: per-minute rate up to 8.4 req/s
    assert tr.hourly_rps is None
    w = workload_from_trace(AZURE, SLO90)
    assert w.input.percentile(50) == 1020 and abs(w.output.mean - 211) < 1
    assert w.rate_rps == pytest.approx(tr.peak_minute_rps) and w.peak_factor == pytest.approx(w.rate_rps / w.mean_rate_rps)
    assert 1.0 < w.arrival_cv2 < 1.5  # a little burstier than Poisson
    assert json.loads(json.dumps(w.to_dict()))["trace_requests"] == 19_366


# ---- YAML workload files ---------------------------------------------------------------------


def test_yaml_with_parametric_lengths(tmp_path):
    p = tmp_path / "w.yaml"
    p.write_text("requests_per_day: 1.7e6\npeak_factor: 2.5\n"
                 "input: {kind: lognormal, mean: 1000, sigma: 0.8}\noutput: 250\n"
                 "slo: {ttft_ms: 800, tpot_ms: 40}\n")
    w = load_workload_file(p)
    assert w.mean_rate_rps == pytest.approx(1.7e6 / 86400) and w.rate_rps == pytest.approx(2.5 * 1.7e6 / 86400)
    assert w.input == LengthDist.lognormal(mean=1000, sigma=0.8) and w.output == LengthDist.fixed(250)
    assert w.slo == SLO(800, 40, 90) and w.source == str(p)
    assert any("SLO defaults used for percentile = 90" in n for n in w.notes)


def test_yaml_trace_paths_resolve_against_the_file(tmp_path, monkeypatch):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "t.csv").write_text((DATA / "trace_small.csv").read_text())
    (tmp_path / "cfg").mkdir()
    p = tmp_path / "cfg" / "w.yaml"
    p.write_text("rate_rps: 3\ninput: {kind: trace, path: ../traces/t.csv}\noutput: 'uniform:10-20'\n")
    monkeypatch.chdir(DATA)  # the working directory must not matter
    w = load_workload_file(p)
    assert w.input.kind == "empirical" and w.input.values[0] == 374 and w.output == LengthDist.uniform(10, 20)
    assert w.rate_rps == 3 and w.timestamps_s is None
    w = load_workload_file(DATA / "workload_trace.yaml")  # trace: lengths and arrivals
    assert w.slo == SLO(500, 40, 99) and w.input.values[0] == 374 and len(w.timestamps_s) == 7
    assert w.mean_rate_rps == pytest.approx(7 / 60)
    w2 = w.with_rate(w.rate_rps * 10)  # what-if: ten times the traffic replays ten times faster
    assert w2.timestamps_s[-1] == pytest.approx(6.0) and w2.mean_rate_rps == pytest.approx(7 / 6)


def test_yaml_hourly_profile_sets_the_rate(tmp_path):
    p = tmp_path / "w.yaml"
    hourly = [1.0] * 12 + [4.0] * 12
    p.write_text(f"hourly_rps: {hourly}\ninput: 100\noutput: 10\narrival_cv2: 2.0\n")
    w = load_workload_file(p)
    assert (w.mean_rate_rps, w.rate_rps, w.arrival_cv2) == (2.5, 4.0, 2.0) and w.hourly_rps == tuple(hourly)
    assert any("cv^2 = 2 (given" in n for n in w.notes) and not any("Poisson" in n for n in w.notes)


@pytest.mark.parametrize("text,needle", [
    ("rate_rsp: 5\ninput: 1\noutput: 1\n", "unknown key rate_rsp; did you mean rate_rps?"),
    ("rate_rps: 5\ninput: 1\noutput: 1\nslo: {ttft: 5}\n", "unknown key slo.ttft; did you mean slo.ttft_ms?"),
    ("rate_rps: 5\ninput: 1\noutput: 1\nbanana: 1\n", "unknown key banana (known:"),
    ("rate_rps: 5\ninput: [1\noutput: 1\n", "line 3"),
    ("rate_rps: -5\ninput: 1\noutput: 1\n", "w.yaml: rate_rps must be > 0, got -5"),
    ("rate_rps: 5\ninput: 'lognormal:mean=5'\noutput: 1\n", "w.yaml: input: lognormal needs exactly two"),
    ("rate_rps: 5\noutput: 1\n", "w.yaml: input is required"),
    ("rate_rps: 5\ninput: 1\noutput: 1\nslo: {percentile: 95}\n", "w.yaml: slo.percentile must be one of 50, 90, 99"),
    ("rate_rps: 5\ninput: 1\noutput: 1\nhourly_rps: [1, 2]\n", "hourly_rps must be a list of 24 rates"),
    ("- 1\n- 2\n", "must be a mapping"),
    ("input: 1\noutput: 1\n", "no request rate"),
    ("trace: t.csv\nrate_rps: 1\nrequests_per_day: 5\n", "give rate_rps or requests_per_day, not both"),
    ("trace: t.csv\nrate_rps: 0\n", "w.yaml: rate_rps must be > 0, got 0"),
    ("trace: missing.csv\n", "missing.csv: trace file not found"),
    ("trace: t.csv\npeak_factor: 2\n", "cannot be combined with a timed trace"),
    ("rate_rps: 5\ninput: {kind: trace, path: t.csv, col: 1}\noutput: 1\n", "unknown key input.col"),
])
def test_yaml_errors(tmp_path, text, needle):
    (tmp_path / "t.csv").write_text((DATA / "trace_small.csv").read_text())
    p = tmp_path / "w.yaml"
    p.write_text(text)
    with pytest.raises(BadInput) as e:
        load_workload_file(p)
    assert needle in str(e.value) and "w.yaml" in str(e.value)


def test_yaml_missing_file(tmp_path):
    with pytest.raises(BadInput, match="workload file not found"):
        load_workload_file(tmp_path / "none.yaml")
