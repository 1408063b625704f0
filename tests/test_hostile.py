"""Hostile and careless inputs, each answered with one line and the right exit code (2: configuration,
1: data, I/O, training), nothing half-written, nothing executed from a run folder.

Every case here was a traceback, a silent mix of settings, a silent overwrite or code execution on an
earlier main (issue "Trustworthy runs"); they stay fixed by being listed here.
"""

from __future__ import annotations

import gzip
import inspect
import json
import os
import pickle
import struct
import threading
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from moomtl.cli import app

runner = CliRunner()
TINY = {
    "data": {"dataset": "multimnist", "source": "mnist5k", "n_train": 64, "n_val": 16, "n_test": 32},
    "model": {"name": "hps_lenet"},
    "method": {"name": "linear", "weights": [0.5, 0.5]},
    "optimizer": {"name": "SGD", "lr": 0.01},
    "train": {"epochs": 1, "batch_size": 32, "progress": False},
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def config(tmp_path: Path, cache_dir: Path):
    """``config(**section_updates) -> path`` of a tiny real-data config writing to ``tmp_path/run``."""

    def make(**updates: dict) -> Path:
        raw = json.loads(json.dumps(TINY))
        raw["data"]["cache_dir"] = str(cache_dir)
        raw["out"] = str(tmp_path / "run")
        for section, values in updates.items():
            merge = isinstance(values, dict) and section not in ("method", "optimizer")
            raw[section] = {**raw.get(section, {}), **values} if merge else values
        path = tmp_path / f"cfg{len(list(tmp_path.glob('cfg*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return make


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback instead of a message: {result.exception!r}") from result.exception
    return result


def assert_one_line_error(result, code: int, *fragments: str) -> str:
    """Exit ``code``; the error is one line naming each of ``fragments``; no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    err = result.stderr.strip() if result.stderr_bytes is not None else result.output.strip()
    assert "Traceback" not in result.output
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != ".moomtl.lock"}


@pytest.fixture
def finished_run(config, tmp_path: Path) -> tuple[Path, Path]:
    cfg = config()
    assert invoke("train", "-c", cfg).exit_code == 0
    return cfg, tmp_path / "run"


# --- bad configuration: exit 2 ---------------------------------------------------------------------------
BAD_SETTINGS = [
    (["--set", "data.source=foo"], "source"),
    (["--set", "data.dataset=multifashion", "--set", "data.source=foo"], "source"),
    (["--set", "data.dataset=dense_multimnist", "--set", "data.source=foo"], "source"),
    (["--set", "data.dataset=foo"], "data.dataset"),
    (["--device", "foo"], "train.device"),
    (["--set", f"train.seed={2**64 + 1}"], "train.seed"),
    (["--set", "data.seed=-1"], "data.seed"),
    (["--set", "data.n_train=0"], "data.n_train"),
    (["--set", "data.n_train=100000000000"], "pairs"),
    (["--set", "model.name=mdmtn_cifar10mnist"], "does not fit"),
    (["--set", "data.interpolation=cubic"], "data.interpolation"),
    (["--set", "optimizer.lr=fast"], "lr"),
    (["--set", "train.epochs=1e4"], "train.epochs"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_SETTINGS, ids=[" ".join(a) for a, _ in BAD_SETTINGS])
def test_bad_settings_are_one_config_line(config, tmp_path: Path, args: list[str], fragment: str) -> None:
    result = invoke("train", "-c", config(), *args)
    assert_one_line_error(result, 2, fragment)
    assert not (tmp_path / "run" / "result.json").exists()


def test_non_utf8_config_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train: {epochs: 2}  # caf\xe9\n".encode("latin-1"))
    assert_one_line_error(invoke("train", "-c", path), 2, "UTF-8")


def test_scientific_notation_is_a_number(config, tmp_path: Path) -> None:
    """PyYAML's YAML 1.1 resolver reads ``1e-3`` as a string; moomtl's configs read it as 0.001."""
    from moomtl.config import load_config

    cfg = load_config(config(optimizer={"name": "SGD", "lr": "PLACEHOLDER"}), ["optimizer.lr=1e4"])
    assert cfg.optimizer["lr"] == 1e4
    path = tmp_path / "sci.yaml"
    path.write_text("optimizer: {name: SGD, lr: 1e-3}\n")
    assert load_config(path).optimizer["lr"] == pytest.approx(1e-3)


def test_messages_keep_bracketed_values(config) -> None:
    """Rich markup would swallow ``[nan, 1.0]``; messages print it literally."""
    result = invoke("train", "-c", config(method={"name": "linear", "weights": [float("nan"), 1.0]}))
    line = assert_one_line_error(result, 2, "weights")
    assert "[nan, 1.0]" in line


# --- output folders: exit 1 (I/O) or 2 (refusals) ----------------------------------------------------------
@pytest.mark.parametrize("command", ["train", "sweep", "demo", "compare"])
@pytest.mark.parametrize("where", ["is a file", "under a file"])
def test_out_that_is_or_is_under_a_file(config, tmp_path: Path, command: str, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker if where == "is a file" else blocker / "sub"
    args = {"train": ["train", "-c", config()], "sweep": ["sweep", "-c", config(), "--preferences", "2"],
            "demo": ["demo", "--epochs", "1"], "compare": ["compare", str(tmp_path)]}[command]
    result = invoke(*args, "--out", out)
    assert_one_line_error(result, 1 if command != "compare" else 1, str(blocker))
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_not_writable(config, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert_one_line_error(invoke("train", "-c", config(), "--out", ro / "run"), 1, "not writable")
    finally:
        ro.chmod(0o700)


def test_out_not_writable_is_checked_before_data(config, tmp_path: Path, monkeypatch) -> None:
    """As root every folder is writable, so the permission answer is simulated: the check runs before
    any data is built and names the folder."""
    import moomtl.rundir as rundir

    real_access = os.access
    monkeypatch.setattr(rundir.os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    assert_one_line_error(invoke("train", "-c", config(), "--out", tmp_path / "new"), 1, "not writable")
    assert not (tmp_path / "new").exists()


def test_finished_run_is_not_overwritten(finished_run) -> None:
    cfg, run = finished_run
    before = snapshot(run)
    assert_one_line_error(invoke("train", "-c", cfg), 2, "--resume", "--overwrite")
    assert snapshot(run) == before
    assert invoke("train", "-c", cfg, "--overwrite").exit_code == 0


def test_resume_with_other_settings_is_refused_with_a_diff(finished_run, config) -> None:
    cfg, run = finished_run
    before = snapshot(run)
    result = invoke("train", "-c", config(optimizer={"name": "SGD", "lr": 0.05}), "--resume", "--epochs", "2")
    assert_one_line_error(result, 2, "optimizer.lr: 0.01 → 0.05")
    assert snapshot(run) == before


def test_resume_allows_more_epochs_and_says_so(finished_run) -> None:
    cfg, run = finished_run
    result = invoke("train", "-c", cfg, "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "continued from epoch 1 of 2" in result.output
    assert json.loads((run / "result.json").read_text())["epochs"] == 2
    assert_one_line_error(invoke("train", "-c", cfg, "--resume", "--epochs", "1"), 2, "train.epochs: 2 → 1")


def test_resume_by_relative_path_and_after_a_move(finished_run, tmp_path: Path, monkeypatch) -> None:
    """Settings are compared without the output path: the same folder named relatively, or moved."""
    cfg, run = finished_run
    moved = tmp_path / "moved"
    run.rename(moved)
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "-c", cfg, "--out", "moved", "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "continued from epoch 1" in result.output


def test_fresh_resume_says_it_started_fresh(config) -> None:
    result = invoke("train", "-c", config(), "--resume")
    assert result.exit_code == 0, result.output
    assert "started fresh" in result.output


def test_train_without_config_says_defaults_are_used(tmp_path: Path, monkeypatch) -> None:
    from moomtl.config import ConfigError
    from moomtl.experiments import run as run_module

    def stop(*a, **k):  # don't train 10 epochs of the defaults; the first line is what is tested
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(run_module, "run_experiment", stop)
    result = invoke("train", "--out", tmp_path / "d")
    assert result.output.splitlines()[0].startswith("no --config given: training moomtl's built-in defaults")


# --- hostile checkpoints: exit 1, nothing executed, folder unchanged ------------------------------------
class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _tamper(run: Path, kind: str) -> None:
    path = run / "checkpoint.pt"
    if kind == "code":
        ckpt = torch.load(path, weights_only=True)
        ckpt["extra"] = _Boom()
        torch.save(ckpt, path)
    elif kind == "plain pickle":
        path.write_bytes(pickle.dumps(_Boom()))
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "wrong type":
        torch.save([1, 2, 3], path)
    elif kind == "missing field":
        ckpt = torch.load(path, weights_only=True)
        del ckpt["optimizer"]
        torch.save(ckpt, path)
    elif kind == "wrong field type":
        ckpt = torch.load(path, weights_only=True)
        ckpt["model"] = "weights"
        torch.save(ckpt, path)
    elif kind == "empty":
        path.write_bytes(b"")


CHECKPOINT_ATTACKS = ["code", "plain pickle", "truncated", "directory", "wrong type", "missing field",
                      "wrong field type", "empty"]


@pytest.mark.parametrize("kind", CHECKPOINT_ATTACKS)
def test_hostile_checkpoint(finished_run, tmp_path: Path, monkeypatch, kind: str) -> None:
    cfg, run = finished_run
    monkeypatch.chdir(tmp_path)
    _tamper(run, kind)
    before = snapshot(run)
    result = invoke("train", "-c", cfg, "--resume", "--epochs", "2")
    assert_one_line_error(result, 1, "cannot resume from", "checkpoint.pt")
    assert not (tmp_path / "PWNED").exists()
    assert snapshot(run) == before


def test_sweep_rerun_refuses_a_checkpoint_with_code(config, tmp_path: Path, monkeypatch) -> None:
    """A sweep rerun resumes its points: an interrupted point's checkpoint is loaded safely too."""
    monkeypatch.chdir(tmp_path)
    cfg = config(method={"name": "tch"})
    out = tmp_path / "sweep"
    assert invoke("sweep", "-c", cfg, "--preferences", "2", "--out", out).exit_code == 0
    point = next(p for p in out.iterdir() if p.is_dir())
    (point / "result.json").unlink()  # the point looks interrupted: its checkpoint will be resumed
    _tamper(point, "code")
    result = invoke("sweep", "-c", cfg, "--preferences", "2", "--out", out)
    assert_one_line_error(result, 1, "cannot resume from")
    assert not (tmp_path / "PWNED").exists()


def test_saved_models_load_with_weights_only(finished_run) -> None:
    _, run = finished_run
    for name in ("model.pt", "checkpoint.pt"):
        assert isinstance(torch.load(run / name, weights_only=True), dict)


# --- sweeps: mixed settings, corrupt files, concurrent writers ---------------------------------------------
def test_sweep_rerun_with_other_settings_and_an_interrupted_point(config, tmp_path: Path) -> None:
    cfg = config(method={"name": "tch"})
    out = tmp_path / "sweep"
    assert invoke("sweep", "-c", cfg, "--preferences", "2", "--out", out).exit_code == 0
    point = next(p for p in sorted(out.iterdir()) if p.is_dir())
    (point / "result.json").unlink()  # interrupted, but its config and checkpoint are there
    before = snapshot(out)
    result = invoke("sweep", "-c", cfg, "--preferences", "2", "--out", out, "--set", "optimizer.lr=0.03")
    assert_one_line_error(result, 2, "optimizer.lr")
    assert snapshot(out) == before


def test_sweep_of_another_method_into_a_sweep_folder(config, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    assert invoke("sweep", "-c", config(method={"name": "tch"}), "--preferences", "2", "--out", out).exit_code == 0
    before = snapshot(out)
    result = invoke("sweep", "-c", config(method={"name": "linear"}), "--preferences", "2", "--out", out)
    assert_one_line_error(result, 2, "--overwrite")
    assert snapshot(out) == before


@pytest.mark.parametrize("damage", ["config.yaml", "result.json"])
def test_corrupt_point_files(config, tmp_path: Path, damage: str) -> None:
    cfg = config(method={"name": "tch"})
    out = tmp_path / "sweep"
    assert invoke("sweep", "-c", cfg, "--preferences", "2", "--out", out).exit_code == 0
    point = next(p for p in sorted(out.iterdir()) if p.is_dir())
    (point / damage).write_bytes(b"\xff\xfe{{{ not: [valid")
    assert_one_line_error(invoke("sweep", "-c", cfg, "--preferences", "2", "--out", out), 1, damage)


@pytest.mark.parametrize("content", [b"{not json", b'{"task_names": ["a"], "rows": [{"a/loss": NaN}]}',
                                     b'["a list"]', b'{"task_names": ["a", "b"], "rows": [{"label": "x"}]}'])
def test_compare_on_malformed_results(tmp_path: Path, content: bytes) -> None:
    run = tmp_path / "s"
    run.mkdir()
    (run / "results.json").write_bytes(content)
    assert_one_line_error(invoke("compare", run, "--out", tmp_path / "cmp"), 1, "results.json")


def test_second_writer_of_a_folder_is_refused(config, tmp_path: Path) -> None:
    """Two trainings (or sweeps) writing one folder at once: the second gets one line and exit 1."""
    from filelock import FileLock

    run = tmp_path / "run"
    run.mkdir()
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with FileLock(run / ".moomtl.lock"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        held.wait(10)
        assert_one_line_error(invoke("train", "-c", config()), 1, "in use")
        assert_one_line_error(invoke("sweep", "-c", config(method={"name": "tch"}), "--preferences", "2",
                                     "--out", run), 1, "in use")
    finally:
        release.set()
        t.join()
    assert not (run / "result.json").exists()


def test_stale_temporaries_are_cleaned_on_next_start(finished_run) -> None:
    cfg, run = finished_run
    stale = run / ".checkpoint.pt.k3j4h5.tmp"
    stale.write_bytes(b"x" * 1000)
    keep = run / "notes.tmp"
    keep.write_text("user file")
    assert invoke("train", "-c", cfg, "--resume", "--epochs", "2").exit_code == 0
    assert not stale.exists() and keep.exists()


# --- non-finite results -------------------------------------------------------------------------------------
def test_non_finite_final_evaluation_is_a_training_error(tmp_path: Path, tiny_multimnist) -> None:
    """A model that is finite in training but NaN in evaluation: no result, no model.pt, strict JSON."""
    from moomtl.methods import build_method
    from moomtl.models.lenet import hps_lenet
    from moomtl.train.trainer import Trainer, TrainingError

    class NaNInEval(torch.nn.Module):
        def forward(self, x):
            return x if self.training else x * float("nan")

    model = hps_lenet(("left", "right"))
    model.heads["left"] = torch.nn.Sequential(model.heads["left"], NaNInEval())
    trainer = Trainer(model, build_method("uniform"), epochs=1, batch_size=256, out_dir=tmp_path)
    with pytest.raises(TrainingError, match="final evaluation is not finite"):
        trainer.fit(tiny_multimnist)
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "final_metrics.json").exists()
    json.loads((tmp_path / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


def test_diverging_sparse_pipeline_is_a_training_error(config, tmp_path: Path) -> None:
    cfg = config(method={"name": "mwc_alm"}, optimizer={"name": "SGD", "lr": 1e6},
                 sparsity={"k0": [0.01], "search_epochs": 1, "retrain_epochs": 0, "warmup_epochs": 0})
    assert_one_line_error(invoke("sparse", "-c", cfg), 1, "not finite")


# --- bad files ---------------------------------------------------------------------------------------------
def test_gzip_idx_bomb_is_rejected_before_it_is_inflated(tmp_path: Path) -> None:
    """Declared dims that the bytes do not match are rejected after reading at most what they declare."""
    import tracemalloc

    from moomtl.data.base import DataError
    from moomtl.data.idx import read_idx

    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    header = struct.pack(">I", 0x0803) + struct.pack(">III", 10, 28, 28)
    with gzip.open(path, "wb") as f:
        f.write(header)
        f.write(bytes(200 * 2**20))  # 200 MiB of zeros after a header declaring 10 images
    tracemalloc.start()
    with pytest.raises(DataError, match="more bytes than"):
        read_idx(path, expected_dtype="uint8")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20, peak


def test_min_norm_rejects_a_matrix_that_is_not_a_gramian() -> None:
    from moomtl.solvers.min_norm import min_norm

    with pytest.raises(ValueError, match="symmetric"):
        min_norm(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="positive semi-definite"):
        min_norm(torch.tensor([[1.0, 3.0], [3.0, 1.0]], dtype=torch.float64))


def test_tampered_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    """A readable cache entry with label 99 (a 100-class head) is validated like fresh data and rebuilt."""
    from moomtl.data.cache import cache_path
    from moomtl.data.multimnist import build_multitask_digits

    kw = {"kind": "multimnist", "source": "mnist5k", "n_train": 32, "n_val": 8, "n_test": 8, "seed": 0,
          "cache_dir": tmp_path}
    good = build_multitask_digits(**kw)
    (entry,) = tmp_path.glob("*.pt")
    data = torch.load(entry, weights_only=True)
    _set_first_label(data["payload"], 99)
    torch.save(data, entry)
    with pytest.warns(UserWarning, match="invalid"):
        again = build_multitask_digits(**kw)
    assert int(again.train.y.max()) <= 9
    assert torch.equal(again.train.y, good.train.y)
    del cache_path


def _set_first_label(payload, value: int) -> None:
    """Find the first int64 label tensor in a cache payload and set its first entry."""
    stack = [payload]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(v, torch.Tensor) and v.dtype == torch.int64 and "label" in str(k):
                    v.view(-1)[0] = value
                    return
                stack.append(v)
        elif isinstance(node, list | tuple):
            stack.extend(node)
    raise AssertionError("no label tensor in the cache payload")


# --- every registered method's checkpoint is plain data ---------------------------------------------------
@pytest.fixture(scope="module")
def small_pairs(cache_dir: Path):
    from moomtl.data.multimnist import build_multitask_digits

    return build_multitask_digits(kind="multimnist", source="mnist5k", n_train=96, n_val=0, n_test=32, seed=0,
                                  cache_dir=cache_dir)


def _registered_methods() -> list[str]:
    from moomtl.methods import available_methods

    return list(available_methods())


@pytest.mark.parametrize("name", _registered_methods())
def test_every_method_checkpoint_loads_with_weights_only_and_resumes(name: str, tmp_path: Path, small_pairs) -> None:
    """Runs over the whole registry: a new method is covered by being registered. Its state (buffers,
    RNG states, extra state) must survive ``torch.load(weights_only=True)`` and resume to the same
    parameters as an uninterrupted run."""
    from moomtl.methods import build_method
    from moomtl.methods.base import get_method_class, method_hyperparameters
    from moomtl.models.lenet import hps_lenet
    from moomtl.train.trainer import Trainer, load_checkpoint

    cls = get_method_class(name)
    required = [k for k, d in method_hyperparameters(name).items() if d is inspect.Parameter.empty]
    hp: dict = {}
    for k in required:  # the few methods without defaults for everything
        hp[k] = [0.5, 0.5] if k == cls.preference_param else "left" if k == "task" else pytest.fail(
            f"{name}: no test value for required hyper-parameter {k!r}")

    def train(epochs: int, out: Path, resume: bool = False):
        torch.manual_seed(0)
        model = hps_lenet(("left", "right"))
        trainer = Trainer(model, build_method(name, **hp), epochs=epochs, batch_size=32, out_dir=out)
        trainer.fit(small_pairs, resume=resume)
        return model

    whole = train(2, tmp_path / "whole")
    train(1, tmp_path / "split")
    ckpt = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert ckpt["epochs_done"] == 1
    resumed = train(2, tmp_path / "split", resume=True)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name}: {k} differs after resume"
