"""The main job end to end through the CLI (slow: trains 5 models on 20k real pairs)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from moomtl.cli import app


@pytest.mark.slow
def test_demo_writes_front_table_and_plot(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--epochs", "2", "--preferences", "3",
                                      "--dataset", "multimnist"])
    assert result.exit_code == 0, result.output
    assert "MultiMNIST" in result.output and "best test accuracy per task" in result.output
    for name in ("pareto.png", "results.md", "results.json"):
        assert (out / name).stat().st_size > 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["rows"]) == 5 and res["hypervolume"] > 0
    best = {t: max(r[f"{t}/acc"] for r in res["rows"]) for t in res["task_names"]}
    assert all(acc > 0.5 for acc in best.values()), best  # chance is 0.1
