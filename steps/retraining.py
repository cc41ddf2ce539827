from typing import Annotated

import pandas as pd
from zenml import log_metadata, step
from zenml.logger import get_logger

from mbad.retraining import RetrainConfig, RetrainPlan, plan_retraining
from steps._stack import mlflow_client

logger = get_logger(__name__)


@step(enable_cache=False)
def find_new_languages(pairs: pd.DataFrame, config: RetrainConfig) -> Annotated[RetrainPlan, "retraining_plan"]:
    """Languages of the VALIDATED data that the champion was not evaluated on, and what to train."""
    plan = plan_retraining(mlflow_client(), pairs["lang"].unique().tolist(), config)
    logger.info(plan.message)
    log_metadata(metadata={"new_languages": plan.new_languages, "champion": plan.champion or "none", "message": plan.message})
    return plan
