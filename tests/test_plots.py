"""Pareto plots write real PNGs atomically; the markdown table marks the front."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from moomtl.pareto import (
    front_table_markdown,
    non_dominated,
    plot_front_2d,
    plot_fronts_overlay,
    plot_parallel_coordinates,
)
from moomtl.pareto.plots import default_panels, metric_value

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sweep_rows() -> list[dict]:
    rows = []
    for i, w in enumerate(np.linspace(0, 1, 5)):
        rows.append(
            {
                "label": f"w=({w:.2f}, {1 - w:.2f})",
                "method": "linear",
                "test/left/loss": 0.2 + 0.5 * (1 - w) ** 2,
                "test/right/loss": 0.25 + 0.5 * w**2,
                "test/left/acc": 0.95 - 0.2 * (1 - w) ** 2,
                "test/right/acc": 0.93 - 0.2 * w**2,
                "epoch": i,
            }
        )
    rows.append({"label": "single_left", "method": "single_task", "test/left/loss": 0.18,
                 "test/right/loss": 2.3, "test/left/acc": 0.96, "test/right/acc": 0.1})
    rows.append({"label": "bad", "method": "single_task", "test/left/loss": 1.0, "test/right/loss": 1.0,
                 "test/left/acc": 0.5, "test/right/acc": 0.5})
    return rows


def assert_png(path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_plot_front_2d_writes_png_with_two_panels(tmp_path):
    rows = sweep_rows()
    assert default_panels(rows) == [
        ("test/left/loss", "test/right/loss"),
        ("test/left/error", "test/right/error"),
    ]
    out = plot_front_2d(rows, tmp_path / "sub" / "pareto.png", title="demo")
    assert out == tmp_path / "sub" / "pareto.png"
    assert_png(out)
    one = plot_front_2d(rows, tmp_path / "one.png", panels=[("test/left/loss", "test/right/loss")])
    import matplotlib.image

    assert matplotlib.image.imread(out).shape[1] > 1.5 * matplotlib.image.imread(one).shape[1]
    # Mapping form {label: metrics}, and a row lacking a metric is just left out of that panel.
    by_label = {r["label"]: {k: v for k, v in r.items() if k != "label"} for r in rows}
    del by_label["bad"]["test/right/loss"]
    assert_png(plot_front_2d(by_label, tmp_path / "map.png"))


def test_plot_front_2d_validation(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plot_front_2d([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="cannot infer"):
        plot_front_2d([{"test/a/loss": 1.0, "test/b/loss": 1.0, "test/c/loss": 1.0}], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_metric_value_derives_error():
    assert metric_value({"test/a/acc": 0.9}, "test/a/error") == pytest.approx(0.1)
    assert metric_value({"test/a/acc": 90.0}, "test/a/error") == pytest.approx(10.0)
    assert metric_value({"test/a/error": 0.3, "test/a/acc": 0.9}, "test/a/error") == 0.3
    assert metric_value({"x": float("nan")}, "x") is None
    assert metric_value({"x": "abc"}, "x") is None
    assert metric_value({}, "x") is None


def test_parallel_coordinates_and_overlay(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.random((12, 4))
    assert_png(plot_parallel_coordinates(pts, tmp_path / "pc.png", [f"p{i}" for i in range(12)],
                                         objective_names=["a", "b", "c", "d"], title="4 tasks"))
    fronts2 = {"linear": rng.random((6, 2)), "tch": rng.random((6, 2)), "empty": np.zeros((0, 2))}
    assert_png(plot_fronts_overlay(fronts2, tmp_path / "ov2.png", hv={"linear": 0.5, "tch": 0.6}))
    fronts3 = {"linear": rng.random((6, 3)), "tch": rng.random((6, 3))}
    assert_png(plot_fronts_overlay(fronts3, tmp_path / "ov3.png", objective_names=["x", "y", "z"]))
    with pytest.raises(ValueError, match="same number of objectives"):
        plot_fronts_overlay({"a": rng.random((3, 2)), "b": rng.random((3, 3))}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="labels"):
        plot_parallel_coordinates(pts, tmp_path / "bad.png", ["only one"])
    with pytest.raises(ValueError, match="objective_names"):
        plot_parallel_coordinates(pts, tmp_path / "bad.png", objective_names=["a"])
    assert not (tmp_path / "bad.png").exists()


def test_failing_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken_savefig(self, fh, **kwargs):
        fh.write(b"partial")
        raise OSError("disk full")

    target = tmp_path / "pareto.png"
    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_front_2d(sweep_rows(), target)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file

    target.write_bytes(b"previous plot")
    with pytest.raises(OSError, match="disk full"):
        plot_fronts_overlay({"a": [[0, 1], [1, 0]]}, target)
    assert target.read_bytes() == b"previous plot"
    assert [p.name for p in tmp_path.iterdir()] == ["pareto.png"]


def test_front_table_markdown_marks_the_front():
    rows = sweep_rows()
    keys = ["test/left/loss", "test/right/loss"]
    md = front_table_markdown(rows, ["label", "method", *keys, "test/left/error"],
                              headers={"test/left/error": "left err"}, floatfmt=".3f",
                              mark_non_dominated=keys)
    lines = md.splitlines()
    assert lines[0] == "| label | method | test/left/loss | test/right/loss | left err | Pareto |"
    assert lines[1] == "|---|---|---|---|---|---|"
    assert len(lines) == 2 + len(rows)
    nd = non_dominated([[r[k] for k in keys] for r in rows])
    marks = [line.rstrip(" |").endswith("✓") for line in lines[2:]]
    assert marks == nd.tolist()
    assert nd.sum() >= 2 and not nd.all()  # the check above can fail either way
    assert "| 0.050 |" in lines[-3]  # left error derived from acc 0.95 for w = 1 (no left penalty)

    md = front_table_markdown([{"name": "a|b", "x": None, "n": 3, "f": float("nan")}], ["name", "x", "n", "f", "y"])
    assert md.splitlines()[2] == "| a\\|b | — | 3 | — | — |"
    with pytest.raises(ValueError, match="columns"):
        front_table_markdown(rows, [])


def test_importing_the_package_does_not_import_matplotlib():
    code = "import sys, moomtl.pareto; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
