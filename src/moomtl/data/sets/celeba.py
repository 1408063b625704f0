"""CelebA: 40 binary attributes from the official files at ``data.root`` (:mod:`moomtl.data.celeba`);
``data.stream`` keeps the images on disk."""

from __future__ import annotations

from typing import Any

from moomtl.data.sets import DataSet, register_dataset

NEEDS = ("the CelebA root (the folder holding list_attr_celeba.txt, list_eval_partition.txt and "
         "img_align_celeba/, or Anno/, Eval/ and Img/)")


def _validate(d: Any) -> None:
    from moomtl.data.celeba import check_attributes

    if d.image_size is not None and (isinstance(d.image_size, bool) or not isinstance(d.image_size, int)
                                     or d.image_size < 1):
        raise ValueError(f"data.image_size for celeba is one side length ≥ 1, got {d.image_size!r}")
    try:
        check_attributes(d.attributes)
    except ValueError as e:
        raise ValueError(f"data.attributes: {e}") from None


def _build(d: Any) -> Any:
    from moomtl.data.celeba import build_celeba

    return build_celeba(d.root, image_size=d.image_size if d.image_size is not None else 64, attributes=d.attributes,
                        n_train=d.n_train, n_val=d.n_val, n_test=d.n_test, seed=d.seed, cache_dir=d.cache_dir,
                        stream=d.stream)


register_dataset(DataSet("celeba", "CelebA, 40 binary attributes (data.root; data.stream keeps it on disk)", _build,
                         keys=frozenset({"root", "image_size", "attributes", "stream"}), validate=_validate,
                         needs_root=NEEDS))
