"""Rotation tasks (the ``zhao2024-omd-tch`` reproduction): one task per fixed rotation of the same real
images, MNIST 5k or Fashion-MNIST (:mod:`moomtl.data.rotations`); model ``rotation_mlp``."""

from __future__ import annotations

from typing import Any

from moomtl.data.sets import DataSet, register_dataset

SOURCES = ("mnist5k", "fashion")
#: registered data-set name → rotations (multiples of 90°); moomtl.data.rotations.DATASETS is this table
ROTATIONS: dict[str, tuple[int, ...]] = {"rotations_0_180": (0, 2), "rotations_0_90_180": (0, 1, 2)}


def _validate(d: Any) -> None:
    if d.source not in (*SOURCES, "auto"):
        raise ValueError(f"data.source for the rotation tasks must be one of {', '.join(SOURCES)}, got {d.source!r}")


def _builder(ks: tuple[int, ...]):
    def build(d: Any) -> Any:
        from moomtl.data.rotations import build_rotation_tasks

        source = "mnist5k" if d.source == "auto" else d.source
        return build_rotation_tasks(ks, source, seed=d.seed, n_train=d.n_train, n_test=d.n_test)

    return build


for _name, _ks in ROTATIONS.items():
    register_dataset(DataSet(_name, f"rotation tasks {', '.join(f'rot{90 * k}' for k in _ks)} of the same images "
                             "(mnist5k or fashion)", _builder(_ks), keys=frozenset({"source"}), validate=_validate))
