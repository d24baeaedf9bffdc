"""notebooks/walkthrough.ipynb: stored without outputs, and runs top to bottom (nbclient) in a temp dir."""

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # starts servers or kernels: not in the fast set (-m "not e2e and not fuzz")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"


def test_outputs_cleared():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "the walkthrough has code cells"
    for c in code:
        assert c.get("outputs") == [] and c.get("execution_count") is None, "commit the notebook with outputs cleared"


def test_runs_end_to_end(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # The kernel is a child process: it imports planner from this checkout and writes under tmp_path.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("PLANNER_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=170, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    text = "\n".join(o.get("text", "") + json.dumps(o.get("data", {})) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "Traceback" not in text
    # Each step left its mark: a profile, a plan headline, the what-if table, the schedule, the report.
    assert (tmp_path / "tiny-cpu.json").stat().st_size > 0
    assert "fitted efficiencies" in text
    assert any(h in text for h in ("Disaggregate:", "Stay colocated:", "No plan meets"))
    assert "load x2" in text and "autoscaling_saving_pct" in text
    report = (tmp_path / "plan.html").read_text(encoding="utf-8")
    from planner.report.charts import available

    assert report.count("<svg") == (5 if available() else 0)  # cost, latency, roofline, Pareto, daily schedule
    # Step 4 ran the pilot, or said clearly why it was skipped.
    import importlib.util

    if importlib.util.find_spec("planner.pilot.validate") is None:
        assert "skipped: this version of planner has no `planner validate`" in text
    else:
        doc = json.loads((tmp_path / "validate.json").read_text(encoding="utf-8"))
        assert doc["requests"]["sent"] == 20 and doc["requests"]["lost"] == 0
        assert ("<svg" in (tmp_path / "validate.html").read_text(encoding="utf-8")) == available()
