"""Models by name, for configs and the CLI. Each builder gets the task names and class counts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from moomtl.models.base import MultiTaskModel

ModelBuilder = Callable[[Sequence[str], Sequence[int]], MultiTaskModel]


def _hps_lenet(task_names: Sequence[str], n_classes: Sequence[int]) -> MultiTaskModel:
    from moomtl.models.base import HardParameterSharing
    from moomtl.models.lenet import LeNetEncoder, lenet_head

    return HardParameterSharing(LeNetEncoder(), {t: lenet_head(c) for t, c in zip(task_names, n_classes, strict=True)})


def _lazy(name: str) -> ModelBuilder:
    def build(task_names: Sequence[str], n_classes: Sequence[int]) -> MultiTaskModel:
        from moomtl.models import mdmtn

        return getattr(mdmtn, name)(task_names, n_classes)

    return build


MODELS: dict[str, tuple[ModelBuilder, str]] = {
    "hps_lenet": (_hps_lenet, "HPS LeNet of Sener & Koltun (MultiMNIST-shaped 1x28x28 input)"),
    "mdmtn_multimnist": (_lazy("mdmtn_multimnist"), "MDMTN of Hotegni et al., MultiMNIST shape (1x28x28)"),
    "hps_multimnist": (_lazy("hps_multimnist"), "HPS counterpart of MDMTN, MultiMNIST shape (1x28x28)"),
    "mdmtn_cifar10mnist": (_lazy("mdmtn_cifar10mnist"), "MDMTN of Hotegni et al., Cifar10Mnist shape (3x32x32)"),
    "hps_cifar10mnist": (_lazy("hps_cifar10mnist"), "HPS counterpart of MDMTN, Cifar10Mnist shape (3x32x32)"),
}


def build_model(name: str, task_names: Sequence[str], n_classes: Sequence[int]) -> MultiTaskModel:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name][0](task_names, n_classes)
