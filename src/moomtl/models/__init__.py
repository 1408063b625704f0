"""Multi-task models: the :class:`MultiTaskModel` interface, hard parameter sharing, LeNet, MDMTN,
the CIFAR-style ResNet-18 of the CelebA experiment."""

from moomtl.models.base import HardParameterSharing, MultiTaskModel, count_parameters
from moomtl.models.lenet import hps_lenet
from moomtl.models.mdmtn import (
    MDMTN,
    hps_cifar10mnist,
    hps_multimnist,
    mdmtn_cifar10mnist,
    mdmtn_multimnist,
)
from moomtl.models.resnet import ResNetEncoder, resnet18_hps

__all__ = [
    "MDMTN",
    "HardParameterSharing",
    "MultiTaskModel",
    "ResNetEncoder",
    "count_parameters",
    "hps_cifar10mnist",
    "hps_lenet",
    "hps_multimnist",
    "mdmtn_cifar10mnist",
    "mdmtn_multimnist",
    "resnet18_hps",
]
