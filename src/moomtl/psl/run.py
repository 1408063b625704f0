"""A finished PSL run folder, read back: evaluate the learned model at any preference, or export it
specialised to one preference as a plain multi-task model.

>>> # run = load_psl_run("runs/psl"); run.evaluate([0.3, 0.7], "val"); run.export([0.3, 0.7], "picked.pt")

The folder's ``model.pt`` is the conditioned model's state dict, read with ``torch.load(weights_only=True)``;
``result.json`` holds what is needed to rebuild the base model (task names, output sizes, input shape), so
loading needs no data; :meth:`PSLRun.evaluate` builds the configured data on first use (from the cache).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from moomtl import io as mio
from moomtl.config import ConfigError, ExperimentConfig, dump_config
from moomtl.data.base import DataSplits, MultiTaskTensors
from moomtl.methods.base import get_method_class
from moomtl.models.base import MultiTaskModel
from moomtl.models.registry import build_model
from moomtl.psl.conditioning import PreferenceConditionedModel, check_preference
from moomtl.psl.config import PSLConfig, split_psl_config
from moomtl.rundir import RunFolderError, read_folder_json
from moomtl.tasks import Task
from moomtl.train.trainer import evaluate

MODEL = "model.pt"
RESULT = "result.json"
SPLITS = ("train", "val", "test")


def model_spec(splits: DataSplits) -> dict[str, Any]:
    """What rebuilding the base model needs: task names, output sizes, the input shape of one image."""
    return {"task_names": list(splits.task_names), "output_sizes": [int(s) for s in splits.output_sizes()],
            "input_shape": [int(s) for s in splits.train.x.shape[1:]]}


def build_base(cfg: ExperimentConfig, spec: Mapping[str, Any]) -> MultiTaskModel:
    """The (unconditioned) model of ``cfg`` sized by ``spec`` (see :func:`model_spec`)."""
    try:
        return build_model(cfg.model.name, spec["task_names"], spec["output_sizes"],
                           input_shape=tuple(spec["input_shape"]), dropout=cfg.model.dropout)
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"model: {e}") from None


def build_conditioned(base: MultiTaskModel, psl: PSLConfig) -> PreferenceConditionedModel:
    try:
        return PreferenceConditionedModel(base, encoder=psl.encoder, heads=psl.heads, hidden=psl.hidden, rank=psl.rank,
                                          gain=psl.gain)
    except ValueError as e:
        raise ConfigError(f"psl: {e}") from None


def evaluate_at(model: PreferenceConditionedModel, data: MultiTaskTensors, tasks: Mapping[str, Task],
                preference: Sequence[float] | Tensor, device: torch.device | str = "cpu") -> dict[str, float]:
    """``{"<task>/loss": ..., "<task>/<metric>": ...}`` of ``model`` conditioned on ``preference`` over
    ``data`` (the model's preference is restored afterwards)."""
    saved = model.preference.clone()
    try:
        model.set_preference(preference)
        return evaluate(model, data, tasks, device=device)
    finally:
        with torch.no_grad():
            model.preference.copy_(saved)


def specialised_config(cfg: ExperimentConfig, scalarization: str, preference: Sequence[float]) -> ExperimentConfig:
    """``cfg`` with the method set to the scalarization at ``preference`` (what a sweep point of that
    preference would have been trained with)."""
    out = copy.deepcopy(cfg)
    param = get_method_class(scalarization).preference_param
    out.method = {**out.method, "name": scalarization}
    if param is not None:
        out.method[param] = [round(float(v), 6) for v in preference]
    return out


@dataclass
class PSLRun:
    """A finished ``moomtl psl`` run (see :func:`load_psl_run`)."""

    folder: Path
    cfg: ExperimentConfig
    psl: PSLConfig
    model: PreferenceConditionedModel
    spec: dict[str, Any]
    summary: dict[str, Any]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _splits: DataSplits | None = None

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(self.spec["task_names"])

    @property
    def scalarization(self) -> str:
        return str(self.summary["scalarization"])

    def splits(self) -> DataSplits:
        """The run's data (built, or read from the cache, on first use)."""
        if self._splits is None:
            from moomtl.experiments.run import build_data

            self._splits = build_data(self.cfg)
        return self._splits

    def evaluate(self, preference: Sequence[float], split: str = "val") -> dict[str, float]:
        """Metrics ``{"<task>/loss": ..., "<task>/acc": ...}`` of the model at ``preference`` on ``split``
        (``train``, ``val`` or ``test``)."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        pref = self._preference(preference)
        splits = self.splits()
        return evaluate_at(self.model, getattr(splits, split), splits.task_specs(), pref, self.device)

    def _preference(self, preference: Sequence[float]) -> Tensor:
        try:
            return check_preference(preference, len(self.task_names))
        except ValueError as e:
            raise ConfigError(f"preference: {e}") from None

    def specialised_state_dict(self, preference: Sequence[float]) -> dict[str, Tensor]:
        """The state dict of the plain base model equal to the learned model at ``preference``."""
        return self.model.specialised_state_dict(self._preference(preference))

    def specialised_model(self, preference: Sequence[float]) -> MultiTaskModel:
        """A plain model of ``cfg.model.name`` holding :meth:`specialised_state_dict` (eval mode)."""
        plain = build_base(self.cfg, self.spec)
        plain.load_state_dict(self.specialised_state_dict(preference))
        return plain.eval()

    def export(self, preference: Sequence[float], path: str | Path, overwrite: bool = False) -> dict[str, Any]:
        """Write the model specialised to ``preference``: its state dict to ``path`` (load it with
        ``torch.load(path, weights_only=True)`` into ``build_model(cfg.model.name, ...)``) and its config
        to ``path`` with the suffix ``.yaml`` (the method set to the scalarization at ``preference``).
        Refuses existing files unless ``overwrite``; returns ``{"model", "config", "preference"}``."""
        pref = self._preference(preference)
        path = Path(path)
        config_path = path.with_suffix(".yaml")
        if config_path == path:
            raise ConfigError(f"export path {path} must not end in .yaml (the config goes there)")
        for p in (path, config_path):
            if p.exists() and not overwrite:
                raise RunFolderError(f"{p} already exists; choose another path or overwrite it")
            if p.is_dir():
                raise RunFolderError(f"{p} is a directory, not a file")
        state = self.specialised_state_dict(pref)
        build_base(self.cfg, self.spec).load_state_dict(state)  # the plain model accepts it, key for key
        values = [float(v) for v in pref]
        cfg = specialised_config(self.cfg, self.scalarization, values)
        cfg.out = str(path.parent / path.stem)  # `moomtl train` with this config trains beside the export
        path.parent.mkdir(parents=True, exist_ok=True)
        mio.torch_save(state, path)
        mio.write_text(config_path, dump_config(cfg))
        return {"model": str(path), "config": str(config_path), "preference": values}


def load_psl_run(folder: str | Path, device: str = "cpu", splits: DataSplits | None = None) -> PSLRun:
    """Read a finished ``moomtl psl`` folder (``config.yaml``, ``result.json`` and ``model.pt``, all checked;
    nothing in it can run code). :class:`RunFolderError` when it is not one. ``splits``: the run's data, when
    the caller has it already (else :meth:`PSLRun.splits` builds it from the config on first use)."""
    from moomtl.experiments.run import read_run_config

    folder = Path(folder)
    if not (folder / RESULT).is_file() or not (folder / MODEL).is_file():
        raise RunFolderError(f"{folder} holds no finished psl run (no {RESULT} and {MODEL}); run `moomtl psl` first")
    summary = read_folder_json(
        folder / RESULT,
        lambda r: isinstance(r, dict) and r.get("kind") == "psl" and isinstance(r.get("model_spec"), dict),
        "is not the result of a psl run")
    cfg, psl = split_psl_config(read_run_config(folder))
    model = build_conditioned(build_base(cfg, summary["model_spec"]), psl)
    try:
        state = torch.load(folder / MODEL, map_location=device, weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - unpickling refusals, zip errors, missing keys: all unusable
        text = str(e).strip().splitlines()
        raise RunFolderError(f"{folder / MODEL} is not this run's model: {type(e).__name__}: "
                             f"{text[0] if text else ''}") from None
    model.to(device).eval()
    return PSLRun(folder=folder, cfg=cfg, psl=psl, model=model, spec=dict(summary["model_spec"]), summary=summary,
                  device=torch.device(device), _splits=splits)


__all__ = ["PSLRun", "build_base", "build_conditioned", "evaluate_at", "load_psl_run", "model_spec",
           "specialised_config"]
