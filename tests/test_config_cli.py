from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from moomtl.cli import app
from moomtl.config import ConfigError, apply_overrides, load_config, parse_config

runner = CliRunner()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"trian": {}}, "unknown config key trian"),
        ({"train": {"epohcs": 3}}, "unknown config key train.epohcs"),
        ({"train": {"epochs": "ten"}}, "train.epochs: expected an integer"),
        ({"train": {"epochs": 0}}, "train.epochs must be ≥ 1"),
        ({"train": {"progress": "yes"}}, "train.progress: expected true/false"),
        ({"method": {"weights": [1, 1]}}, "method.name is required"),
        ({"data": {"n_train": -5}}, "data.n_train must be ≥ 1"),
        ({"data": {"n_val": -5}}, "data.n_val must be ≥ 0"),
        ({"data": "multimnist"}, "data: expected a mapping"),
        ({"data": {"image_size": 32}},
         "data.image_size only applies to datasets celeba, cityscapes, dense_multimnist and dense_multifashion"),
        ({"data": {"dataset": "celeba", "image_size": [64, 64]}}, "data.image_size for celeba is one side"),
        ({"data": {"dataset": "cityscapes", "image_size": [100, 200]}}, "multiples of 8"),
        ({"data": {"dataset": "cityscapes", "image_size": 128}}, r"cityscapes is \[H, W\]"),
        ({"data": {"attributes": ["Smiling"]}}, "data.attributes only applies to dataset celeba"),
    ],
)
def test_config_errors_are_one_clear_line(raw, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse_config(raw)
    assert "\n" not in str(e.value)


def test_overrides_parse_yaml_values():
    raw = apply_overrides({"train": {"epochs": 2}}, ["train.epochs=5", "method.weights=[0.1, 0.9]", "out=x"])
    cfg = parse_config({**raw, "method": {"name": "linear", **raw["method"]}})
    assert cfg.train.epochs == 5 and cfg.method_params == {"weights": [0.1, 0.9]} and cfg.out == "x"


def test_load_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("train:\n  epochs: ten\n", "train.epochs: expected an integer"),
        ("bogus: 1\n", "unknown config key bogus"),
        ("method:\n  name: nosuchmethod\n", "unknown method 'nosuchmethod'"),
        ("method:\n  name: linear\n  weights: [1, 1]\n  bogus: 3\n", "has no hyper-parameter 'bogus'"),
        ("method:\n  name: linear\n  weights: [-1, 1]\n", "non-negative"),
        ("train: [1, 2\n", "not valid YAML"),
        ("optimizer:\n  name: NoSuchOpt\n", "unknown optimizer"),
        ("optimizer:\n  name: SGD\n  lr: 0.1\n  betas: 3\n", "optimizer SGD"),
        ("data:\n  dataset: imagenet\n", "unknown data set 'imagenet'"),
    ],
)
def test_cli_bad_config_exits_2_with_readable_message(tmp_path, yaml_text, message):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml_text)
    result = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "result.json").exists()


def test_cli_help_and_methods_list():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "demo" in result.output and "train" in result.output
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    for name in ("linear", "uniform", "single_task"):
        assert name in result.output


def test_cli_method_flag_replaces_the_method_section(tmp_path, monkeypatch):
    import moomtl.experiments.run as run_mod

    seen = {}

    def fake_run(cfg, resume=False, overwrite=False):
        seen["method"] = cfg.method
        return {"data": "d", "final": {}, "wall_seconds": 0.0}

    monkeypatch.setattr(run_mod, "run_experiment", fake_run)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method:\n  name: linear\n  weights: [1, 1]\n")
    result = runner.invoke(app, ["train", "--config", str(cfg), "--method", "mgda_ub",
                                 "--set", "method.normalization=l2"])
    assert result.exit_code == 0, result.output
    assert seen["method"] == {"name": "mgda_ub", "normalization": "l2"}


def test_cli_missing_data_root_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["train", "--set", "data.source=mnist", "--set", f"data.root={tmp_path / 'none'}",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "data error:" in result.output and str(tmp_path / "none") in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run" / "result.json").exists()


def test_cli_sweep_method_flag_keeps_the_users_method_settings(tmp_path, monkeypatch):
    """`sweep --method X --set method.p=v` must sweep X *with* p=v (it used to drop every --set method.*
    when the config named another method); a config that already names X keeps its settings."""
    import moomtl.experiments.report as report_mod

    seen = []

    class Report:
        markdown = "ok"

    def fake_sweep(cfg, method=None, **kw):
        seen.append((method, cfg.method))
        return Report()

    monkeypatch.setattr(report_mod, "run_preference_sweep", fake_sweep)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method:\n  name: linear\n  weights: [1, 1]\n")
    result = runner.invoke(app, ["sweep", "--config", str(cfg), "--method", "omd_tch",
                                 "--set", "method.archive_on=epoch"])
    assert result.exit_code == 0, result.output
    assert seen[-1] == ("omd_tch", {"name": "omd_tch", "archive_on": "epoch"})
    cfg.write_text("method:\n  name: tch\n  ideal: online\n")
    result = runner.invoke(app, ["sweep", "--config", str(cfg), "--method", "tch", "--set", "method.margin=0.1"])
    assert result.exit_code == 0, result.output
    assert seen[-1] == ("tch", {"name": "tch", "ideal": "online", "margin": 0.1})


def test_methods_markdown_matches_docs():
    """docs/methods.md carries `moomtl methods --markdown`; regenerate it when a method changes."""
    from pathlib import Path

    from moomtl.methods.base import method_catalogue_markdown

    result = runner.invoke(app, ["methods", "--markdown"])
    assert result.exit_code == 0 and result.output == method_catalogue_markdown()
    assert result.output.count("\n") == len(result.output.splitlines()) >= 20  # header + one row per method
    doc = (Path(__file__).parents[1] / "docs" / "methods.md").read_text()
    begin, end = "<!-- begin generated: moomtl methods --markdown -->\n", "<!-- end generated -->"
    assert doc[doc.index(begin) + len(begin):doc.index(end)] == result.output


def test_python_dash_m_moomtl_is_the_cli():
    """``python -m moomtl`` (what ``torchrun -m moomtl`` starts) runs the same command line."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "moomtl", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "train" in out.stdout and "sweep" in out.stdout


def test_optimizer_settings_without_a_name_change_the_default_optimizer():
    from moomtl.config import parse_config

    cfg = parse_config({"optimizer": {"lr": 0.05}})
    assert cfg.optimizer == {"name": "SGD", "lr": 0.05, "momentum": 0.9}
    assert parse_config({"optimizer": {"name": "Adam", "lr": 1e-3}}).optimizer == {"name": "Adam", "lr": 1e-3}


@pytest.mark.parametrize("rank", ["0", "1"])
def test_under_torchrun_a_config_error_is_printed_once_and_other_errors_name_their_rank(tmp_path, monkeypatch,
                                                                                       capsys, rank):
    """Every rank reads the same config, so rank 0 alone prints a config error (exit 2 on every rank); a
    data or output error can be one rank's own and is prefixed with that rank."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data:\n  dataset: imagenet\n")
    result = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert ("unknown data set 'imagenet'" in result.output) == (rank == "0")
    assert "Traceback" not in result.output
    from moomtl.cli import _fail

    with pytest.raises(typer.Exit) as exit_info:  # a data error (the CLI would first join the process group)
        raise _fail("data error", "MNIST root /x does not exist", 1)
    assert exit_info.value.exit_code == 1
    assert f"data error: rank {rank}: MNIST root /x does not exist" in " ".join(capsys.readouterr().err.split())
