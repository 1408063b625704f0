"""MultiMNIST, MultiFashion and Multi-(Fashion+MNIST): two overlapping 28×28 items, left/right label
(Sener & Koltun 2018; :mod:`moomtl.data.multimnist`)."""

from __future__ import annotations

from typing import Any

from moomtl.data.sets import DataSet, register_dataset


def _validate(d: Any) -> None:
    if d.interpolation not in ("nearest", "bilinear"):
        raise ValueError(f"data.interpolation must be nearest or bilinear, got {d.interpolation!r}")


def _builder(kind: str):
    def build(d: Any) -> Any:
        from moomtl.data.multimnist import build_multitask_digits

        sizes = {k: getattr(d, k) for k in ("n_train", "n_val", "n_test") if getattr(d, k) is not None}
        return build_multitask_digits(kind=kind, source=d.source, root=d.root, seed=d.seed, cache_dir=d.cache_dir,
                                      interpolation=d.interpolation, **sizes)

    return build


for _kind, _summary in (("multimnist", "two MNIST digits (left/right), 36×36 canvas resized to 28×28"),
                        ("multifashion", "two Fashion-MNIST items (left/right)"),
                        ("multifashion+mnist", "an MNIST digit and a Fashion-MNIST item (left/right)")):
    register_dataset(DataSet(_kind, _summary, _builder(_kind), keys=frozenset({"source", "root", "interpolation"}),
                             validate=_validate))
