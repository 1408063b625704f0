"""Cifar10Mnist (Hotegni et al.): a CIFAR-10 image with an MNIST digit on it, two tasks; training batches
get RandomRotation(20) as in the MDMTN code (:mod:`moomtl.data.cifar10mnist`)."""

from __future__ import annotations

from typing import Any

from moomtl.data.sets import DataSet, register_dataset


def _build(d: Any) -> Any:
    from moomtl.data.cifar10mnist import build_cifar10mnist_from_roots

    return build_cifar10mnist_from_roots(cifar_root=d.cifar_root, mnist_source=d.source, mnist_root=d.root, seed=d.seed,
                                         n_train=d.n_train, n_val=d.n_val, n_test=d.n_test, cache_dir=d.cache_dir)


def _augment(x: Any, generator: Any) -> Any:
    from moomtl.data.cifar10mnist import augment_train_batch

    return augment_train_batch(x, generator)  # RandomRotation(20), training batches only


register_dataset(DataSet("cifar10mnist", "CIFAR-10 image + MNIST digit (data.cifar_root)", _build,
                         keys=frozenset({"source", "root", "cifar_root"}), train_transform=_augment))
