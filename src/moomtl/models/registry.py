"""Models by name, for configs and the CLI. Each builder gets the task names and class counts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from moomtl.models.base import MultiTaskModel

ModelBuilder = Callable[[Sequence[str], Sequence[int]], MultiTaskModel]


def _hps_lenet(task_names: Sequence[str], n_classes: Sequence[int]) -> MultiTaskModel:
    from moomtl.models.base import HardParameterSharing
    from moomtl.models.lenet import LeNetEncoder, lenet_head

    return HardParameterSharing(LeNetEncoder(), {t: lenet_head(c) for t, c in zip(task_names, n_classes, strict=True)})


MODELS: dict[str, tuple[ModelBuilder, str]] = {
    "hps_lenet": (_hps_lenet, "HPS LeNet of Sener & Koltun (MultiMNIST-shaped 1x28x28 input)"),
}


def build_model(name: str, task_names: Sequence[str], n_classes: Sequence[int]) -> MultiTaskModel:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name][0](task_names, n_classes)
