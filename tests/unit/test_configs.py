"""Every shipped run config parses into the typed config of its pipeline (typos fail here), and
out-of-range values are refused with the field, the value and the allowed range named."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mbad.config import DataConfig, DetoxConfig, GenerationConfig, SweepConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _config_class(path: Path) -> type:
    """The `config` parameter's type of the pipeline a run config is for."""
    from mbad.promotion import PromoteConfig
    from mbad.retraining import RetrainConfig

    name = path.stem
    if "sweep" in name:
        return SweepConfig
    if "retrain" in name:
        return RetrainConfig
    if "promote" in name:
        return PromoteConfig
    return DetoxConfig


RUN_CONFIGS = sorted(path for path in CONFIGS.rglob("*.yaml") if path.name != "languages.yaml")


def _parameters(path: Path) -> dict:
    return (yaml.safe_load(path.read_text()).get("parameters") or {}).get("config") or {}


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_validates(path):
    config = _config_class(path).model_validate(_parameters(path))
    assert config is not None


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("quickstart.yaml")) + sorted((CONFIGS / "paper").glob("[!s]*.yaml")),
                         ids=lambda p: p.name)
def test_training_configs_parse(path):
    config = DetoxConfig.model_validate(_parameters(path))
    assert config.train.source_languages and config.target_languages


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("sweep_*.yaml")) + sorted((CONFIGS / "paper").glob("sweep_*.yaml")),
                         ids=lambda p: p.name)
def test_sweep_configs_parse(path):
    config = SweepConfig.model_validate(_parameters(path))
    assert set(config.modes) == {"zs", "xft", "pft", "mft"}


def test_paper_configs_follow_the_paper():
    for path in (CONFIGS / "paper").glob("sweep_*.yaml"):
        config = SweepConfig.model_validate(_parameters(path))
        assert len(config.languages) == 9 and config.fractions == [0.1, 0.2, 0.3] and config.mft_max_length == 512
        lora, generation = config.base.train.lora, config.base.generation
        assert (lora.r, lora.alpha, lora.dropout, config.base.train.learning_rate) == (16, 32, 0.05, 2e-4)
        assert (generation.temperature, generation.top_p, generation.max_new_tokens) == (0.7, 0.9, 50)
        assert config.base.model.quantization == "4bit"


def test_unknown_keys_are_rejected():
    with pytest.raises(ValueError, match="learning_rat"):
        DetoxConfig.model_validate({"train": {"learning_rat": 1e-4}})


# (override, the field named, the value and range the message must state)
OUT_OF_RANGE = {
    "negative temperature": ({"generation": {"temperature": -0.1}}, "generation.temperature",
                             "must be >= 0 (0: greedy decoding), got -0.1"),
    "top_p 0": ({"generation": {"top_p": 0}}, "generation.top_p", "must be in (0, 1], got 0"),
    "top_p above 1": ({"generation": {"top_p": 1.5}}, "generation.top_p", "must be in (0, 1], got 1.5"),
    "negative top_k": ({"generation": {"top_k": -1}}, "generation.top_k", "must be >= 0 (0: no top-k), got -1"),
    "generation batch 0": ({"generation": {"batch_size": 0}}, "generation.batch_size", "must be > 0, got 0"),
    "no samples": ({"generation": {"num_samples": 0}}, "generation.num_samples", "must be > 0, got 0"),
    "no new tokens": ({"generation": {"max_new_tokens": -5}}, "generation.max_new_tokens", "must be > 0, got -5"),
    "train batch 0": ({"train": {"batch_size": 0}}, "train.batch_size", "must be > 0, got 0"),
    "no epochs": ({"train": {"epochs": 0}}, "train.epochs", "must be > 0, got 0"),
    "learning rate 0": ({"train": {"learning_rate": 0}}, "train.learning_rate", "must be > 0, got 0"),
    "negative learning rate": ({"train": {"learning_rate": -1e-4}}, "train.learning_rate", "must be > 0, got -0.0001"),
    "accumulation 0": ({"train": {"gradient_accumulation_steps": 0}}, "train.gradient_accumulation_steps", "must be > 0, got 0"),
    "max length 0": ({"train": {"max_length": 0}}, "train.max_length", "must be > 0, got 0"),
    "knowledge batch 0": ({"knowledge": {"batch_size": 0}}, "knowledge.batch_size", "must be > 0, got 0"),
    "threshold 0": ({"judge": {"threshold": 0}}, "judge.threshold", "must be in (0, 1), got 0"),
    "threshold 1": ({"judge": {"threshold": 1.0}}, "judge.threshold", "must be in (0, 1), got 1.0"),
    "language share above 1": ({"data": {"language_mostly": 1.2}}, "data.language_mostly", "must be in (0, 1], got 1.2"),
    "unknown target": ({"target_languages": ["en", "xx"]}, "target_languages", "unknown language(s) ['xx']"),
    "unknown source": ({"train": {"source_languages": ["klingon"]}}, "train.source_languages", "unknown language(s) ['klingon']"),
    "no targets": ({"target_languages": []}, "target_languages", "is empty"),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_out_of_range_values_are_refused_with_field_value_and_range(case):
    override, field, message = OUT_OF_RANGE[case]
    with pytest.raises(ValidationError) as error:
        DetoxConfig.model_validate(override)
    text = str(error.value)
    assert f"{field} " in text and message in text, text


def test_boundaries_that_are_allowed():
    # Greedy decoding (temperature 0, see mbad.generation), no top-k, top_p 1.
    config = DetoxConfig.model_validate({"generation": {"temperature": 0, "top_k": 0, "top_p": 1.0}})
    assert (config.generation.temperature, config.generation.top_k, config.generation.top_p) == (0, 0, 1.0)


def test_greedy_decoding_with_several_samples_is_refused():
    with pytest.raises(ValidationError, match="greedy decoding makes every sample of a prompt the same"):
        GenerationConfig(temperature=0, num_samples=5)


def test_languages_are_checked_against_the_configured_registry(tmp_path):
    registry = tmp_path / "languages.yaml"
    registry.write_text("languages:\n  - {code: en, name: English, script: Latin}\n  - {code: ti, name: Tigrinya, script: Ethiopic}\n")
    config = DetoxConfig.model_validate({"data": {"languages_file": str(registry)}, "target_languages": ["en", "ti"]})
    assert config.target_languages == ["en", "ti"]
    with pytest.raises(ValidationError, match=r"unknown language\(s\) \['ru'\]"):
        DetoxConfig.model_validate({"data": {"languages_file": str(registry)}, "target_languages": ["ru"]})
    registry.write_text("languages:\n  - {code: en, name: English, script: Klingon}\n")
    with pytest.raises(ValidationError, match="cannot be checked: data.languages_file .* unknown script 'Klingon'"):
        DetoxConfig.model_validate({"data": {"languages_file": str(registry)}})


def test_a_registry_path_of_another_machine_is_checked_there(tmp_path):
    # The Kubernetes configs name the image's /app/configs/languages.yaml: not checkable on the
    # machine that submits the run, checked in the pod and by validate_data.
    config = DetoxConfig.model_validate({"data": {"languages_file": str(tmp_path / "elsewhere" / "languages.yaml")},
                                         "target_languages": ["xx"]})
    assert config.target_languages == ["xx"]


def test_sweep_languages_are_checked():
    with pytest.raises(ValidationError, match=r"languages has unknown language\(s\) \['xx'\]"):
        SweepConfig.model_validate({"languages": ["en", "xx"]})


def test_data_config_defaults_are_in_range():
    config = DataConfig()
    assert 0 < config.language_mostly <= 1 and 0 < config.script_mostly <= 1


def test_a_run_config_with_a_bad_value_fails_before_any_step_runs(tmp_path):
    """ZenML validates the pipeline's `config: DetoxConfig` parameter when the pipeline is
    called, before it creates a run: the pydantic error is the cause of its ValueError."""
    from zenml.client import Client

    from pipelines.training import detox_training

    run_config = tmp_path / "run.yaml"
    run_config.write_text(yaml.safe_dump({"parameters": {"config": {"generation": {"temperature": -0.5}}}}))
    runs_before = Client().list_pipeline_runs(size=1).total
    with pytest.raises(ValueError, match="Invalid or missing pipeline function entrypoint arguments") as error:
        detox_training.with_options(config_path=str(run_config))()
    assert "generation.temperature must be >= 0 (0: greedy decoding), got -0.5" in str(error.value.__cause__)
    assert Client().list_pipeline_runs(size=1).total == runs_before
