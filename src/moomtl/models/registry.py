"""Models by name, for configs and the CLI. Each builder gets the task names and class counts; builders
whose layers depend on the input size also take ``input_shape`` (``(C, H, W)`` of one image)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from moomtl.models.base import MultiTaskModel

ModelBuilder = Callable[..., MultiTaskModel]  # (task_names, n_classes[, input_shape=...]) -> model


def _hps_lenet(task_names: Sequence[str], n_classes: Sequence[int], dropout: float = 0.5) -> MultiTaskModel:
    from moomtl.models.base import HardParameterSharing
    from moomtl.models.lenet import LeNetEncoder, lenet_head

    heads = {t: lenet_head(c) for t, c in zip(task_names, n_classes, strict=True)}
    return HardParameterSharing(LeNetEncoder(dropout=dropout), heads)


def _lazy(name: str) -> ModelBuilder:
    def build(task_names: Sequence[str], n_classes: Sequence[int]) -> MultiTaskModel:
        from moomtl.models import mdmtn

        return getattr(mdmtn, name)(task_names, n_classes)

    return build


def _resnet18_celeba(
    task_names: Sequence[str], n_classes: Sequence[int], input_shape: Sequence[int] | None = None
) -> MultiTaskModel:
    from moomtl.models.resnet import resnet18_hps

    channels, size = 3, 64
    if input_shape is not None:
        if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
            raise ValueError(f"resnet18_celeba needs square images (C, S, S), got input shape {tuple(input_shape)}")
        channels, size = int(input_shape[0]), int(input_shape[1])
    # Binary attributes always get two logits, also when a small subset happens to lack one class.
    return resnet18_hps(task_names, [max(int(c), 2) for c in n_classes], image_size=size, in_channels=channels)


def _dense(widths: Sequence[int], hidden: int) -> ModelBuilder:
    def build(
        task_names: Sequence[str], n_classes: Sequence[int], input_shape: Sequence[int] | None = None
    ) -> MultiTaskModel:
        from moomtl.models.dense import dense_hps

        # n_classes[t] is task t's output channel count (segmentation 19, instance 2, depth 1).
        if any(int(c) < 1 for c in n_classes):
            raise ValueError(f"output channel counts must be ≥ 1, got {list(n_classes)}")
        shape = (3, 128, 256) if input_shape is None else tuple(int(s) for s in input_shape)
        return dense_hps(task_names, [int(c) for c in n_classes], shape, widths=widths, hidden=hidden)

    return build


def _rotation_mlp(task_names: Sequence[str], n_classes: Sequence[int],
                  input_shape: Sequence[int] | None = None) -> MultiTaskModel:
    from moomtl.models.rotation_mlp import rotation_mlp

    return rotation_mlp(task_names, n_classes, input_shape)


MODELS: dict[str, tuple[ModelBuilder, str]] = {
    "hps_lenet": (_hps_lenet, "HPS LeNet of Sener & Koltun (MultiMNIST-shaped 1x28x28 input)"),
    "mdmtn_multimnist": (_lazy("mdmtn_multimnist"), "MDMTN of Hotegni et al., MultiMNIST shape (1x28x28)"),
    "hps_multimnist": (_lazy("hps_multimnist"), "HPS counterpart of MDMTN, MultiMNIST shape (1x28x28)"),
    "mdmtn_cifar10mnist": (_lazy("mdmtn_cifar10mnist"), "MDMTN of Hotegni et al., Cifar10Mnist shape (3x32x32)"),
    "hps_cifar10mnist": (_lazy("hps_cifar10mnist"), "HPS counterpart of MDMTN, Cifar10Mnist shape (3x32x32)"),
    "resnet18_celeba": (
        _resnet18_celeba,
        "CIFAR-style ResNet-18 + one linear head per task of Sener & Koltun, CelebA (3x64x64; any square size ≥ 25)",
    ),
    "resnet18_dense": (
        _dense((64, 128, 256, 512), 128),
        "dilated ResNet-18 (output stride 8) + one conv head per dense task (Cityscapes-shaped)",
    ),
    "rotation_mlp": (_rotation_mlp, "one MLP 784-200-10 shared by all tasks, task t on input channel t "
                                    "(rotation tasks of zhao2024-omd-tch)"),
    "resnet18_dense_small": (
        _dense((16, 32, 64, 128), 32),
        "resnet18_dense with widths 16/32/64/128 and 32 hidden head channels, for CPU tests and demos",
    ),
}


def build_model(
    name: str, task_names: Sequence[str], n_classes: Sequence[int], input_shape: Sequence[int] | None = None,
    dropout: float | None = None,
) -> MultiTaskModel:
    """Build model ``name``; ``input_shape`` goes to builders that size their layers from it (others have a
    fixed input shape and ignore it); ``dropout`` (``None``: the model's default) to builders that have
    it, and is an error for the others."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    builder = MODELS[name][0]
    params = inspect.signature(builder).parameters
    kwargs: dict = {}
    if input_shape is not None and "input_shape" in params:
        kwargs["input_shape"] = tuple(input_shape)
    if dropout is not None:
        if "dropout" not in params:
            raise ValueError(f"model {name!r} has no dropout option")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        kwargs["dropout"] = float(dropout)
    return builder(task_names, n_classes, **kwargs)
