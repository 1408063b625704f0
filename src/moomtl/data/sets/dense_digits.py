"""Dense MultiMNIST / MultiFashion: per-pixel segmentation, instance and depth-like tasks on a canvas of
digits (:mod:`moomtl.data.dense_digits`); ``data.image_size`` is the canvas side."""

from __future__ import annotations

from typing import Any

from moomtl.data.sets import DataSet, register_dataset


def _validate_for(name: str):
    def validate(d: Any) -> None:
        from moomtl.data.dense_digits import check_canvas

        if d.image_size is None:
            return
        try:
            check_canvas(d.image_size)
        except ValueError as e:
            raise ValueError(f"data.image_size for {name} is the canvas side: {e}") from None

    return validate


def _builder(kind: str):
    def build(d: Any) -> Any:
        from moomtl.data.dense_digits import build_dense_digits

        sizes = {k: getattr(d, k) for k in ("n_train", "n_val", "n_test") if getattr(d, k) is not None}
        return build_dense_digits(kind=kind, source=d.source, root=d.root, seed=d.seed, cache_dir=d.cache_dir,
                                  canvas=d.image_size if isinstance(d.image_size, int) else 64, **sizes)

    return build


for _kind in ("multimnist", "multifashion"):
    register_dataset(DataSet(f"dense_{_kind}", f"dense {_kind}: per-pixel tasks on a canvas of items",
                             _builder(_kind), keys=frozenset({"source", "root", "image_size"}),
                             validate=_validate_for(f"dense_{_kind}")))
