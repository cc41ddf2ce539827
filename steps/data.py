import uuid
from typing import Annotated

import pandas as pd
from zenml import get_step_context, log_metadata, save_artifact, step
from zenml.config.cache_policy import CachePolicy
from zenml.types import HTMLString

from materializers.pairs import PairsMaterializer
from mbad.config import DataConfig
from mbad.data import content_hash, load_pairs, resolve_source
from mbad.languages import LanguageRegistry
from mbad.validation import DataValidationError, validate_pairs


def read_in_every_run() -> str:
    """The load step's cache key part: new in every run, so the step is never served from cache
    (a run config's `enable_cache: true` overrides a step's `enable_cache=False`, a cache policy
    it does not)."""
    return uuid.uuid4().hex


# The data is read where the step runs, in every run, and its hash computed from what was read.
# The steps downstream are cached on the table's content (`PairsMaterializer`).
@step(cache_policy=CachePolicy(cache_func=read_in_every_run), output_materializers={"multiparadetox_pairs": PairsMaterializer})
def load_data(config: DataConfig) -> tuple[Annotated[pd.DataFrame, "multiparadetox_pairs"], Annotated[str, "data_hash"]]:
    """All languages of MultiParaDetox in one tidy table, and the hash of its content."""
    pairs = load_pairs(config)
    data_hash = content_hash(pairs)
    log_metadata(
        metadata={"source": resolve_source(config), "data_hash": data_hash, "rows": len(pairs),
                  "languages": sorted(pairs["lang"].unique())},
    )
    return pairs, data_hash


@step(output_materializers={"validated_pairs": PairsMaterializer})
def validate_data(
    pairs: pd.DataFrame, config: DataConfig
) -> tuple[Annotated[pd.DataFrame, "validated_pairs"], Annotated[HTMLString, "data_validation_report"]]:
    """The GE suite on every file pair of every language; on failure the report is saved and the run stops."""
    report = validate_pairs(pairs, LanguageRegistry.from_yaml(config.languages_file), config)
    log_metadata(metadata={"validation_success": report.success, "failed_checks": [f.check for f in report.failures],
                           "failed_files": report.failed_files, "file_pairs_validated": report.n_file_groups})
    if not report.success:
        # Outputs of a failing step are not stored: save the report explicitly, linked by metadata.
        context = get_step_context()
        save_artifact(
            HTMLString(report.html), name="data_validation_report",
            user_metadata={"pipeline_run": context.pipeline_run.name, "step_run_id": str(context.step_run.id),
                           "failed_checks": sorted({f.check for f in report.failures}),
                           "failed_files": report.failed_files},
        )
        raise DataValidationError(report.error_message())
    return pairs, HTMLString(report.html)
