"""Every shipped run config parses into the typed config of its pipeline (typos fail here)."""

from pathlib import Path

import pytest
import yaml

from mbad.config import DetoxConfig, SweepConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("quickstart.yaml")) + sorted((CONFIGS / "paper").glob("[!s]*.yaml")),
                         ids=lambda p: p.name)
def test_training_configs_parse(path):
    config = DetoxConfig.model_validate(yaml.safe_load(path.read_text())["parameters"]["config"])
    assert config.train.source_languages and config.target_languages


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("sweep_*.yaml")) + sorted((CONFIGS / "paper").glob("sweep_*.yaml")),
                         ids=lambda p: p.name)
def test_sweep_configs_parse(path):
    config = SweepConfig.model_validate(yaml.safe_load(path.read_text())["parameters"]["config"])
    assert set(config.modes) == {"zs", "xft", "pft", "mft"}


def test_paper_configs_follow_the_paper():
    for path in (CONFIGS / "paper").glob("sweep_*.yaml"):
        config = SweepConfig.model_validate(yaml.safe_load(path.read_text())["parameters"]["config"])
        assert len(config.languages) == 9 and config.fractions == [0.1, 0.2, 0.3] and config.mft_max_length == 512
        lora, generation = config.base.train.lora, config.base.generation
        assert (lora.r, lora.alpha, lora.dropout, config.base.train.learning_rate) == (16, 32, 0.05, 2e-4)
        assert (generation.temperature, generation.top_p, generation.max_new_tokens) == (0.7, 0.9, 50)
        assert config.base.model.quantization == "4bit"


def test_unknown_keys_are_rejected():
    with pytest.raises(ValueError, match="learning_rat"):
        DetoxConfig.model_validate({"train": {"learning_rat": 1e-4}})
