"""notebooks/compare_runs.ipynb executes headless (nbclient) on the report of the tiny sweep of test_sweep.py."""
from __future__ import annotations

import json
import re
import sys

import pytest

from sr_lightning.sweep_report import build_report

from helpers import FAILED_JOB, REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "compare_runs.ipynb"


@pytest.fixture
def kernel_name(tmp_path, monkeypatch) -> str:
    """A kernel spec for this very interpreter (the venv), whatever kernels the machine has installed."""
    pytest.importorskip("ipykernel")
    spec_dir = tmp_path / "jupyter" / "kernels" / "sr-lightning-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "sr-lightning (test)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return "sr-lightning-test"


def test_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)


@pytest.mark.slow
def test_notebook_runs_headless_on_a_sweep_report(tiny_sweep, tmp_path, kernel_name, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    files = build_report([tiny_sweep.dir], tmp_path / "report")
    monkeypatch.setenv("SR_REPORT_CSV", str(files.csv))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, kernel_name=kernel_name, timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on a cell error

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"{files.csv}: 4 jobs, 3 completed, 1 failed or incomplete" in text
    (table,) = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    body_rows = re.findall(r"<tr(?: [^>]*)?><td>", table)
    assert len(body_rows) == 4
    assert "not divisible by scale=3" in table and 'style="color:#b00"' in table
    markdown = "".join(o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
    ranking = [line for line in markdown.splitlines() if re.match(r"\| \d+ \| ", line)]
    assert sorted(line.split("|")[2].strip() for line in ranking) == sorted({"0", "1", "2", "3"} - {FAILED_JOB})
    for plot in files.plots:
        assert f"**{plot.name}**" in markdown
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == len(files.plots) + 2  # the plots, the three jobs' grids, the zoomed crops
