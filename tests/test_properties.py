"""Property tests: more load or tighter SLOs never make a plan cheaper."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.api import plan
from planner.specs.catalog import load_catalog

CAT = load_catalog()
GPUS = "h100-sxm,l40s"
pytestmark = pytest.mark.fuzz  # 60 generated plans, ~17 s: not in the fast set (-m "not e2e and not fuzz")


def cost(rate, inp, out, ttft, tpot):
    r = plan("llama-3.1-8b", rate=rate, input_len=str(inp), output_len=str(out), ttft_slo_ms=ttft, tpot_slo_ms=tpot, catalog=CAT, gpus=GPUS, pareto=False)
    return r.disaggregated.usd_per_hour if r.disaggregated.feasible else float("inf"), r.colocated.usd_per_hour if r.colocated.feasible else float("inf")


workloads = st.tuples(st.floats(0.5, 40), st.integers(50, 4000), st.integers(10, 800), st.floats(300, 3000), st.floats(20, 100))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads, st.floats(1.1, 3.0))
def test_more_load_never_cheaper(w, factor):
    rate, inp, out, ttft, tpot = w
    base = cost(rate, inp, out, ttft, tpot)
    more = cost(rate * factor, inp, out, ttft, tpot)
    assert more[0] >= base[0] - 1e-9 and more[1] >= base[1] - 1e-9


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads, st.floats(0.3, 0.95))
def test_tighter_slo_never_cheaper(w, factor):
    rate, inp, out, ttft, tpot = w
    base = cost(rate, inp, out, ttft, tpot)
    tight = cost(rate, inp, out, ttft * factor, tpot * factor)
    assert tight[0] >= base[0] - 1e-9 and tight[1] >= base[1] - 1e-9
