"""Retraining when a new language arrives. Dynamic (ZenML 0.98): when nothing is new, the run
ends after the language check and no training step exists in it."""

from zenml import Model, pipeline

from mbad.retraining import RetrainConfig
from pipelines.promotion import gate_and_promote
from pipelines.training import train_evaluate_register
from steps.data import load_data, validate_data
from steps.evaluation import evaluate_knowledge, generate, score_fluency
from steps.retraining import find_new_languages
from steps.training import train_adapter


# Dynamic steps get per-step settings (GPU pod settings on Kubernetes) only through `depends_on`.
@pipeline(dynamic=True, depends_on=[train_adapter, generate, score_fluency, evaluate_knowledge])
def retrain_new_languages(config: RetrainConfig = RetrainConfig()) -> None:
    """Validate the data; if it holds languages the champion was not evaluated on, train an
    adapter (policy: `config.train_on`), evaluate it on every language, register it and hand
    it to the promotion gate (which compares every language with the champion)."""
    pairs, data_hash = load_data(config=config.detox.data)
    validated, _ = validate_data(pairs=pairs, config=config.detox.data)
    plan = find_new_languages(pairs=validated, config=config).load()
    if not plan.new_languages:
        return  # `find_new_languages` logged why
    # The ZenML Model version is created here, not for runs that train nothing; each retraining
    # registers (and gates) its own version, so report and registration are never served from cache.
    evaluated = train_evaluate_register(plan.training, validated, data_hash,
                                        model=Model(name=plan.training.registry.model_name), enable_cache=False)
    gate_and_promote(config.promotion, registered_by_this_run=True, evaluated=evaluated)
