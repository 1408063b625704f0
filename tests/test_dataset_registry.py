"""The data-set registry (moomtl.data.sets), tested over every registered entry: what each declares,
the config checks it drives (keys it does not read, its own validation, a needed root) — so a new data
set is tested by being registered."""

from __future__ import annotations

from dataclasses import fields

import pytest

from moomtl.config import ConfigError, DataConfig, parse_config
from moomtl.data.sets import COMMON_KEYS, dataset_names, datasets_reading, get_dataset
from moomtl.experiments.run import build_data

NAMES = dataset_names()
#: a value for each data-set-specific key that differs from its default
OFF_DEFAULT = {"source": "mnist", "root": "somewhere", "cifar_root": "x", "image_size": 64, "attributes": ["Male"],
               "interpolation": "bilinear", "stream": True}


def test_registry_holds_the_known_sets_and_unknown_names_fail():
    assert {"multimnist", "multifashion", "multifashion+mnist", "cifar10mnist", "celeba", "cityscapes",
            "dense_multimnist", "dense_multifashion"} <= set(NAMES)
    with pytest.raises(ConfigError, match="unknown data set 'imagenet'; choose one of"):
        parse_config({"data": {"dataset": "imagenet"}})


@pytest.mark.parametrize("name", NAMES)
def test_each_entry_declares_real_config_keys(name):
    spec = get_dataset(name)
    assert spec.name == name and spec.summary and callable(spec.build)
    config_keys = {f.name for f in fields(DataConfig)}
    assert spec.keys <= config_keys and COMMON_KEYS <= config_keys
    assert set(OFF_DEFAULT) == config_keys - COMMON_KEYS  # the table below covers every specific key


@pytest.mark.parametrize(("name", "key"), [(n, k) for n in NAMES for k in sorted(OFF_DEFAULT)
                                           if not get_dataset(n).reads(k)])
def test_keys_a_set_does_not_read_are_refused_with_the_sets_that_do(name, key):
    with pytest.raises(ConfigError, match=f"data.{key} only applies to") as e:
        parse_config({"data": {"dataset": name, key: OFF_DEFAULT[key]}})
    assert all(reader in str(e.value) for reader in datasets_reading(key))


@pytest.mark.parametrize("name", [n for n in NAMES if get_dataset(n).needs_root])
def test_sets_that_need_a_root_say_so_in_one_line(name):
    cfg = parse_config({"data": {"dataset": name}})
    with pytest.raises(ConfigError, match=f"data.root: dataset {name} needs"):
        build_data(cfg)


def test_validation_lives_with_the_set():
    with pytest.raises(ConfigError, match="data.interpolation must be nearest or bilinear"):
        parse_config({"data": {"dataset": "multimnist", "interpolation": "cubic"}})
    with pytest.raises(ConfigError, match="data.attributes: "):
        parse_config({"data": {"dataset": "celeba", "attributes": ["Not_An_Attribute"]}})
    assert get_dataset("cifar10mnist").train_transform is not None and get_dataset("celeba").train_transform is None
