from typing import Annotated

import pandas as pd
from sklearn.pipeline import Pipeline
from zenml import log_metadata, step

from mbad.config import JudgeConfig
from mbad.data import select
from mbad.eval.judges.classifier import auc_by_language, train_classifier


@step
def train_judge(
    pairs: pd.DataFrame, config: JudgeConfig
) -> tuple[Annotated[Pipeline, "toxicity_classifier"], Annotated[dict[str, float], "judge_auc_by_language"]]:
    """The offline judge, fitted on the TRAIN split; its ROC-AUC per language on TEST."""
    classifier = train_classifier(select(pairs, "train"), config.classifier)
    auc = auc_by_language(classifier, select(pairs, "test"))
    log_metadata(metadata={"heldout_auc": auc})
    return classifier, auc
