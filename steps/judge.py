from typing import Annotated

import pandas as pd
from zenml import log_metadata, step

from mbad.config import JudgeConfig
from mbad.eval.judges import FittedJudge, train_offline_judge
from mbad.eval.judges.quality import judge_quality


@step
def train_judge(
    pairs: pd.DataFrame, config: JudgeConfig
) -> tuple[Annotated[FittedJudge, "toxicity_judge"], Annotated[dict[str, dict[str, float]], "judge_quality"]]:
    """The offline judge, fitted on the judge-role TRAIN pairs only; its quality per language
    ({figure: {lang: value}}: held-out AUC, Brier, pair accuracy on TEST, style bias)."""
    judge = train_offline_judge(pairs, config)
    quality = judge_quality(judge, pairs)
    log_metadata(metadata={"judge": judge.name, "identity": judge.identity, "quality": quality})
    return judge, quality
