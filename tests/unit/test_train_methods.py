"""The table of training methods: every method a config may name trains through one calling
convention, and a config naming any other method is refused with the known ones."""

import inspect

import pytest
from pydantic import ValidationError

from mbad.config import SweepConfig, TrainConfig
from mbad.train.methods import METHODS
from mbad.train.names import METHOD_NAMES


def test_every_method_a_config_accepts_has_a_training_function():
    assert set(METHODS) == set(METHOD_NAMES)
    for name, method in METHODS.items():
        assert TrainConfig(method=name).method == name
        assert method.learns_from and set(method.learns_from) <= {"toxic", "neutral", "lang"}  # columns of the pairs
        # The step and the launched processes pass the data columns first, then the same arguments.
        parameters = list(inspect.signature(method.train).parameters)
        assert parameters[len(method.learns_from):] == ["model_config", "config", "output_dir", "checkpoint_dir", "loaded"]
        assert method.describe(TrainConfig(method=name).model_dump())
    assert "beta 0.3" in METHODS["dpo"].describe(TrainConfig(method="dpo", dpo={"beta": 0.3}).model_dump())


def test_an_unknown_method_is_refused_with_the_known_ones():
    for make in (lambda: TrainConfig(method="ppo"), lambda: SweepConfig(methods=["sft", "ppo"])):
        with pytest.raises(ValidationError, match="'ppo' is not a training method; the known ones are sft, dpo"):
            make()
