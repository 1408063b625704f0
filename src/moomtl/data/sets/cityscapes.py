"""Cityscapes: segmentation, instance offsets and disparity from the official files at ``data.root``
(:mod:`moomtl.data.cityscapes`); the paper's 275 held-out validation images by default."""

from __future__ import annotations

from typing import Any

from moomtl.data.sets import DataSet, register_dataset

DEFAULT_SIZE = (128, 256)
DEFAULT_N_VAL = 275  # the paper's held-out validation images


def _validate(d: Any) -> None:
    from moomtl.data.cityscapes import check_image_size

    if d.image_size is None:
        return
    try:
        if not isinstance(d.image_size, list):
            raise ValueError(f"got {d.image_size!r}")
        check_image_size(d.image_size)
    except ValueError as e:
        raise ValueError(f"data.image_size for cityscapes is [H, W]: {e}") from None


def _build(d: Any) -> Any:
    from moomtl.data.cityscapes import build_cityscapes

    size = tuple(d.image_size) if isinstance(d.image_size, list) else DEFAULT_SIZE
    n_val = d.n_val if d.n_val is not None else DEFAULT_N_VAL
    return build_cityscapes(d.root, image_size=size, n_train=d.n_train, n_val=n_val, n_test=d.n_test, seed=d.seed,
                            cache_dir=d.cache_dir, stream=d.stream)


register_dataset(DataSet("cityscapes", "Cityscapes: segmentation, instance, disparity (data.root)", _build,
                         keys=frozenset({"root", "image_size", "stream"}), validate=_validate,
                         needs_root="the Cityscapes root (the folder holding leftImg8bit/, gtFine/ and disparity/)"))
