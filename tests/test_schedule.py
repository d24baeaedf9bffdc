"""planner.sizing.schedule: hourly sizing with autoscaling against a pool fixed for the peak."""

from dataclasses import replace

import pytest

from planner.api import plan, solve
from planner.errors import BadInput
from planner.queueing.samples import Demand
from planner.sizing.schedule import RateSolver, headroom, hourly_schedule, restrict, schedule_for_plan

GPUS = "l4,l40s,a10g"
# Quiet night, busy afternoon; the busiest hour (60 req/s) is the plan's sizing rate.
DAY = (12, 10, 8, 6, 6, 8, 12, 20, 30, 40, 50, 55, 60, 60, 58, 55, 50, 45, 40, 35, 30, 24, 18, 14)


@pytest.fixture(scope="module")
def result():
    r = plan("llama-2-7b", rate=60, input_len="1000", output_len="200", gpus=GPUS, pareto=False)
    r.workload = replace(r.workload, hourly_rps=DAY)
    return r


@pytest.fixture(scope="module")
def sched(result):
    return schedule_for_plan(result)


def test_rate_solver_agrees_with_api_solve(result):
    """The shared-candidates solver is an optimisation of api.solve, not another model."""
    sub = restrict(result.space, {g.key for g in result.space.gpus})
    d = Demand.from_workload(result.workload)
    fast = RateSolver(result.model, sub, d)
    for rate in (5.0, 23.0, 60.0):
        dis, col, _ = solve(result.model, result.workload.with_rate(rate), sub, d)
        fdis, fcol = fast(rate)
        for a, b in ((dis, fdis), (col, fcol)):
            assert a.feasible == b.feasible
            assert a.usd_per_hour == pytest.approx(b.usd_per_hour)
            assert sum(p.gpus for p in a.pools.values()) == sum(p.gpus for p in b.pools.values())


def test_peak_hour_costs_what_the_plan_costs(result, sched):
    assert headroom(result.workload) == pytest.approx(1.0)
    peak = sched["totals"]["colocated"]["peak_hour"]
    assert DAY[peak] == 60
    assert sched["hours"][peak]["sizing_rate_rps"] == pytest.approx(60.0)
    assert sched["hours"][peak]["colocated"]["usd_per_hour"] == pytest.approx(result.colocated.usd_per_hour)
    assert sched["hours"][peak]["disaggregated"]["usd_per_hour"] == pytest.approx(result.disaggregated.usd_per_hour)


def test_totals_are_sums_of_the_hours(sched):
    assert len(sched["hours"]) == 24 and [h["hour"] for h in sched["hours"]] == list(range(24))
    for kind in ("disaggregated", "colocated"):
        t = sched["totals"][kind]
        costs = [h[kind]["usd_per_hour"] for h in sched["hours"]]
        assert t["usd_per_day_autoscaled"] == pytest.approx(sum(costs), abs=1e-3)
        assert t["usd_per_day_fixed_peak"] == pytest.approx(24 * max(costs), abs=1e-3)
        assert t["gpu_hours_per_day_autoscaled"] == sum(h[kind]["gpus"] for h in sched["hours"])
        saving = (t["usd_per_day_fixed_peak"] - t["usd_per_day_autoscaled"]) / t["usd_per_day_fixed_peak"] * 100
        assert t["autoscaling_saving_pct"] == pytest.approx(saving, abs=1e-3)
        assert t["usd_per_month_autoscaled"] == pytest.approx(t["usd_per_day_autoscaled"] * 730 / 24, rel=1e-6)
        # A day that idles at night must be cheaper autoscaled than sized for the peak all day.
        assert t["autoscaling_saving_pct"] > 20
    day = {k: sched["totals"][k]["usd_per_day_autoscaled"] for k in ("disaggregated", "colocated")}
    assert sched["recommended"] == min(day, key=day.get)


def test_cost_grows_with_load(sched):
    """The colocated pool's feasible set only shrinks as the rate grows: its cost is monotone."""
    pts = sorted((h["sizing_rate_rps"], h["colocated"]["usd_per_hour"]) for h in sched["hours"])
    assert all(c2 >= c1 - 1e-9 for (_, c1), (_, c2) in zip(pts, pts[1:]))
    assert pts[0][1] < pts[-1][1]


def test_same_rates_share_one_solve(sched):
    assert sched["distinct_rates"] == len(set(DAY))


def test_flat_day_saves_nothing(result):
    flat = (30.0,) * 24
    s = hourly_schedule(result.model, result.workload, result.space, gpu_keys=["l40s"], hourly_rps=flat)
    assert s["distinct_rates"] == 1
    assert s["headroom"] == pytest.approx(2.0)  # plan sized at 60 req/s, the profile peaks at 30
    for kind in ("disaggregated", "colocated"):
        t = s["totals"][kind]
        assert t["usd_per_day_autoscaled"] == pytest.approx(t["usd_per_day_fixed_peak"])
        assert t["autoscaling_saving_pct"] == pytest.approx(0.0)
    assert s["gpus_considered"] == ["l40s"]
    assert {x["gpu"] for h in s["hours"] for items in h["colocated"]["pools"].values() for x in items} == {"l40s"}


def test_idle_hour_scales_to_zero(result):
    day = (0.0,) * 12 + (60.0,) * 12
    s = hourly_schedule(result.model, result.workload, result.space, gpu_keys=["l40s"], hourly_rps=day)
    assert s["hours"][0]["colocated"] == {"feasible": True, "usd_per_hour": 0.0, "gpus": 0, "pools": {}, "usd_per_hour_by_role": {}}
    t = s["totals"]["colocated"]
    assert t["usd_per_day_autoscaled"] == pytest.approx(t["usd_per_day_fixed_peak"] / 2)


def test_bad_profiles(result):
    for bad in ((1.0,) * 23, (0.0,) * 24, (1.0,) * 23 + (float("nan"),), (-1.0,) + (1.0,) * 23):
        with pytest.raises(BadInput, match="hourly_rps"):
            hourly_schedule(result.model, result.workload, result.space, gpu_keys=["l40s"], hourly_rps=bad)
    with pytest.raises(BadInput, match="no hourly profile"):
        hourly_schedule(result.model, replace(result.workload, hourly_rps=None), result.space)
    with pytest.raises(BadInput, match="search space"):
        restrict(result.space, ["h100-sxm"])


def test_no_profile_no_schedule(result):
    r = replace(result, workload=replace(result.workload, hourly_rps=None))
    assert schedule_for_plan(r) is None
