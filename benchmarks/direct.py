"""The `detox_training` pipeline's work as plain `mbad` calls, step by step, with no ZenML.

`zenml_overhead` times this against the pipeline itself on the same config: each function
below does what the step of the same name does, minus ZenML's bookkeeping (artifacts,
metadata, caching, step launching). Keep it in step with `pipelines/training.py`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import mlflow

from mbad.adapters import load_model_under_test
from mbad.config import DetoxConfig
from mbad.data import content_hash, load_pairs, select
from mbad.eval.compare import ModelEvidence
from mbad.eval.judges import JudgeContext, make_judge, score_frame, train_offline_judge
from mbad.eval.judges.quality import judge_quality as measure_judge_quality
from mbad.eval.probes import completion_nll, run_probes
from mbad.generation import generate_for_targets
from mbad.languages import LanguageRegistry
from mbad.models import load_base_model
from mbad.tracking import ensure_experiments, tracking_uri
from mbad.train.checkpoints import checkpoint_key
from mbad.train.sft import train_sft_adapter
from mbad.training_report import log_report, register_reported
from mbad.validation import DataValidationError, validate_pairs


def run_quickstart_directly(config: DetoxConfig, home: Path, experiment: str = "bench-direct") -> dict[str, float]:
    """Validate; generate and probe with the base model; train the adapter and the judge; generate
    and probe with the adapter; score both; log and register.

    Returns the seconds spent in each of the pipeline's steps (their names)."""
    seconds: dict[str, float] = {}

    @contextmanager
    def step(name: str):
        started = time.perf_counter()
        yield
        seconds[name] = time.perf_counter() - started

    with step("load_data"):
        pairs = load_pairs(config.data)
        data_hash = content_hash(pairs)
    with step("validate_data"):
        validation = validate_pairs(pairs, LanguageRegistry.from_yaml(config.data.languages_file), config.data)
        if not validation.success:
            raise DataValidationError(validation.error_message())
    ensure_experiments([experiment])  # artifacts under MBAD_HOME, not ./mlruns
    mlflow.set_experiment(experiment)
    with mlflow.start_run():
        # The steps in the order ZenML's local orchestrator runs them (a topological sort of the
        # pipeline): how much memory a step finds in use depends on what ran before it.
        prompts = select(pairs, "test", config.target_languages, max_per_language=config.generation.max_prompts_per_language)
        sentences = select(pairs, "test", config.target_languages)
        completions, knowledge = {}, {}

        def evaluate(name: str, adapter: Path | None) -> None:
            with step(f"generate_{name}"):
                completions[name] = generate_for_targets(load_model_under_test(config.model, adapter), prompts, config.generation)
            with step(f"knowledge_{name}"):
                knowledge[name] = run_probes(load_model_under_test(config.model, adapter), sentences, config.knowledge)

        evaluate("base", None)
        train = config.train
        with step("train_adapter"):
            neutral = select(pairs, "train", train.source_languages, train.fraction, train.max_examples_per_language,
                             train.seed, role="adapter")
            key = checkpoint_key(config.model, train, data_hash)
            adapter_dir = home / "adapters" / key
            summary = train_sft_adapter(neutral["neutral"].tolist(), config.model, train, adapter_dir, home / "checkpoints" / key)
            mlflow.log_params({f"train.{name}": value for name, value in train.model_dump().items() if name != "lora"})
            mlflow.log_params({f"lora.{name}": value for name, value in train.lora.model_dump().items()})
            for index, loss in enumerate(summary.losses, start=1):
                mlflow.log_metric("train_loss", loss, step=index)
        with step("train_judge"):
            judge = train_offline_judge(pairs, config.judge)
            judge_quality = measure_judge_quality(judge, pairs)
        evaluate("tuned", adapter_dir)
        scores, fluency = {}, {}
        for name in ("base", "tuned"):
            with step(f"score_{name}"):
                scores[name] = score_frame(make_judge(config.judge, JudgeContext(fitted=judge)), completions[name])
            with step(f"fluency_{name}"):
                fluency[name] = completion_nll(load_base_model(config.model), completions[name], config.knowledge.batch_size)

        with step("report"):
            # What the pipeline's report step does, through the same function.
            logged = log_report(config, data_hash, ModelEvidence(scores["base"], knowledge["base"], fluency["base"]),
                                ModelEvidence(scores["tuned"], knowledge["tuned"], fluency["tuned"]), judge_quality,
                                adapter_dir, zenml_run="direct", pairs=pairs)
    with step("register_model"):  # as the pipeline's step: the report's run reopened by its id
        register_reported(logged.registration, adapter_dir, config, tracking_uri())
    return seconds
