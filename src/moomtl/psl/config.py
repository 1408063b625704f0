"""The ``psl`` section of a config: how the model is conditioned on the preference and how preferences
are drawn. Every other section is moomtl's :class:`~moomtl.config.ExperimentConfig` (``method`` names the
scalarization the model is trained with, without a preference: it is drawn per batch).

.. code-block:: yaml

    psl: {encoder: film, heads: lowrank, hidden: 32, rank: 4, alpha: 1.0, gain: 1.0}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from moomtl.config import ConfigError, ExperimentConfig, _build, apply_overrides, parse_config, read_config_mapping
from moomtl.psl.conditioning import ENCODER_CONDITIONINGS, HEAD_CONDITIONINGS


@dataclass
class PSLConfig:
    encoder: str = "film"  # film | lora | none: conditioning of the encoder
    heads: str = "lowrank"  # lowrank | none: hypernetwork low-rank update of every head layer
    hidden: int = 32  # hidden width of the hypernetworks
    rank: int = 4  # rank of the low-rank updates
    alpha: float = 1.0  # Dirichlet concentration of the per-batch preference (1: uniform on the simplex)
    gain: float = 1.0  # factor on the hypernetwork outputs (how fast the preference dependence is learned)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_psl_config(raw: Any) -> PSLConfig:
    """Validate the ``psl`` section (``None``: the defaults); :class:`ConfigError` on a bad key or value.

    >>> parse_psl_config({"rank": 8}).rank
    8
    """
    p = _build(PSLConfig, raw if raw is not None else {}, "psl")
    if p.encoder not in ENCODER_CONDITIONINGS:
        raise ConfigError(f"psl.encoder must be one of {', '.join(ENCODER_CONDITIONINGS)}, got {p.encoder!r}")
    if p.heads not in HEAD_CONDITIONINGS:
        raise ConfigError(f"psl.heads must be one of {', '.join(HEAD_CONDITIONINGS)}, got {p.heads!r}")
    if p.encoder == "none" and p.heads == "none":
        raise ConfigError("psl.encoder and psl.heads are both none: the model would not depend on the preference")
    if p.hidden < 1 or p.rank < 1:
        raise ConfigError(f"psl.hidden and psl.rank must be ≥ 1, got hidden={p.hidden}, rank={p.rank}")
    if not p.gain > 0:
        raise ConfigError(f"psl.gain must be > 0, got {p.gain}")
    if not p.alpha > 0:
        raise ConfigError(f"psl.alpha (Dirichlet concentration) must be > 0, got {p.alpha}")
    return p


def split_psl_config(raw: dict[str, Any]) -> tuple[ExperimentConfig, PSLConfig]:
    """A raw config mapping (with an optional ``psl`` section) → ``(experiment config, psl config)``."""
    rest = dict(raw)
    psl = rest.pop("psl", None)
    return parse_config(rest), parse_psl_config(psl)


def load_psl_config(path: str | Path | None, overrides: list[str] | None = None) -> tuple[ExperimentConfig, PSLConfig]:
    """Read a YAML config (``None``: defaults), apply ``section.key=value`` overrides (also ``psl.*``)."""
    return split_psl_config(apply_overrides(read_config_mapping(path), overrides or []))


def settings_of(cfg: ExperimentConfig, psl: PSLConfig) -> dict[str, Any]:
    """Everything a PSL run computes from (what its ``config.yaml`` holds)."""
    return {**cfg.to_dict(), "psl": psl.to_dict()}


def dump_psl_config(cfg: ExperimentConfig, psl: PSLConfig) -> str:
    return yaml.safe_dump(settings_of(cfg, psl), sort_keys=False)


__all__ = ["PSLConfig", "dump_psl_config", "load_psl_config", "parse_psl_config", "settings_of", "split_psl_config"]
