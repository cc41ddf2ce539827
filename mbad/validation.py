"""The data validation suite, run with Great Expectations 1.x.

Every language in the dataset is validated, not only those a run trains on. Checks that
GE cannot express on the raw table (script share, leakage, toxic == neutral) are computed
as derived columns first and then validated by GE like any other column, so that one
report (Data Docs HTML) holds every check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mbad.config import DataConfig
from mbad.languages import LanguageRegistry, script_share

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import great_expectations as gx  # noqa: E402  (after disabling analytics)
import great_expectations.expectations as gxe  # noqa: E402


class DataValidationError(ValueError):
    """Raised when the data fails validation; the message lists each failed check."""


@dataclass
class CheckFailure:
    check: str
    expectation: str
    column: str
    unexpected_count: int
    element_count: int
    example: dict[str, Any]
    hint: str = ""
    by_language: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        hint = f" ({self.hint})" if self.hint else ""
        where = f" (by language: {self.by_language})" if self.by_language else ""
        return (
            f"check '{self.check}' failed{hint}: {self.expectation} on column '{self.column}' "
            f"is false for {self.unexpected_count} of {self.element_count} rows{where}, e.g. {self.example}"
        )


@dataclass
class ValidationReport:
    success: bool
    failures: list[CheckFailure] = field(default_factory=list)
    html: str = ""
    n_rows: int = 0
    languages: list[str] = field(default_factory=list)

    def error_message(self) -> str:
        lines = [f"data validation failed: {len(self.failures)} check(s) did not pass"]
        lines += [f"  - {failure.describe()}" for failure in self.failures]
        return "\n".join(lines)


def _normalise(text: object) -> str | None:
    return " ".join(str(text).lower().split()) if isinstance(text, str) else None


def add_derived_columns(pairs: pd.DataFrame, registry: LanguageRegistry) -> pd.DataFrame:
    """Columns for the checks GE cannot express on the raw table."""
    table = pairs.copy()
    for side in ("toxic", "neutral"):
        table[f"{side}_script_share"] = [
            script_share(text, registry.script(lang)) if isinstance(text, str) and lang in registry else None
            for text, lang in zip(table[side], table["lang"])
        ]
    normal_toxic = table["toxic"].map(_normalise)
    normal_neutral = table["neutral"].map(_normalise)
    table["toxic_equals_neutral"] = [
        bool(t is not None and t == n) for t, n in zip(normal_toxic, normal_neutral)
    ]
    is_train = table["split"] == "train"
    train_texts = set(zip(table["lang"][is_train], normal_toxic[is_train])) | set(
        zip(table["lang"][is_train], normal_neutral[is_train])
    )
    # A test pair leaks when its toxic or its neutral sentence also occurs in train.
    table["test_pair_in_train"] = [
        bool(split == "test" and ((lang, t) in train_texts or (lang, n) in train_texts))
        for split, lang, t, n in zip(table["split"], table["lang"], normal_toxic, normal_neutral)
    ]
    return table


def build_suite(config: DataConfig, registry: LanguageRegistry) -> list[gxe.Expectation]:
    """The expectations; `meta.check` names each check in error messages."""

    def tagged(expectation: gxe.Expectation, check: str, hint: str = "") -> gxe.Expectation:
        expectation.meta = {"check": check, "hint": hint}
        return expectation

    return [
        tagged(gxe.ExpectColumnValuesToBeInSet(column="readable", value_set=[True]), "file_readable",
               "the file named in toxic_file/neutral_file is missing or is not parseable CSV"),
        tagged(gxe.ExpectColumnValuesToBeInSet(column="utf8_ok", value_set=[True]), "utf8",
               "the file named in toxic_file/neutral_file has bytes that are not UTF-8"),
        tagged(gxe.ExpectColumnValuesToBeInSet(column="lang", value_set=registry.codes), "known_language",
               f"add the language to {registry.source} with its code, name and script"),
        tagged(gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "test"]), "known_split"),
        tagged(gxe.ExpectColumnValuesToBeUnique(column="pair_id"), "unique_pair_id"),
        tagged(gxe.ExpectColumnValuesToNotBeNull(column="toxic"), "pairs_aligned",
               "the toxic and neutral files have different numbers of rows"),
        tagged(gxe.ExpectColumnValuesToNotBeNull(column="neutral"), "pairs_aligned",
               "the toxic and neutral files have different numbers of rows"),
        tagged(gxe.ExpectColumnValuesToNotMatchRegex(column="toxic", regex=r"^\s*$"), "non_empty_text"),
        tagged(gxe.ExpectColumnValuesToNotMatchRegex(column="neutral", regex=r"^\s*$"), "non_empty_text"),
        tagged(gxe.ExpectColumnValuesToBeBetween(column="toxic_script_share", min_value=config.min_script_share,
                                                 mostly=config.script_mostly),
               "script", "most letters must be in the language's script from the registry"),
        tagged(gxe.ExpectColumnValuesToBeBetween(column="neutral_script_share", min_value=config.min_script_share,
                                                 mostly=config.script_mostly),
               "script", "most letters must be in the language's script from the registry"),
        tagged(gxe.ExpectColumnValuesToBeInSet(column="toxic_equals_neutral", value_set=[False], mostly=config.differs_mostly),
               "toxic_differs_from_neutral"),
        tagged(gxe.ExpectColumnValuesToBeInSet(column="test_pair_in_train", value_set=[False]),
               "no_test_leak", "a test pair's sentence also occurs in train (whitespace/case normalised)"),
    ]


def validate_pairs(pairs: pd.DataFrame, registry: LanguageRegistry, config: DataConfig) -> ValidationReport:
    """Run the suite over the whole table; never raises for bad data, returns the report."""
    table = add_derived_columns(pairs, registry)
    context = gx.get_context(mode="ephemeral")
    batch = context.data_sources.add_pandas("mbad").add_dataframe_asset("pairs").add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(name="multiparadetox", expectations=build_suite(config, registry)))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="multiparadetox", data=batch, suite=suite))
    result = definition.run(
        batch_parameters={"dataframe": table},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["pair_id"]},
    )
    failures = [_failure(item, table) for item in result.results if not item.success]
    return ValidationReport(
        success=bool(result.success),
        failures=failures,
        html=render_html(result),
        n_rows=len(table),
        languages=sorted(set(table["lang"])),
    )


def _failure(item: Any, table: pd.DataFrame) -> CheckFailure:
    config = item.expectation_config
    outcome = item.result or {}
    example: dict[str, Any] = {}
    by_language: dict[str, int] = {}
    indices = outcome.get("unexpected_index_list") or []
    pair_ids = [index["pair_id"] for index in indices if isinstance(index, dict) and "pair_id" in index]
    if pair_ids:
        failed = table[table["pair_id"].isin(pair_ids)]
        by_language = {str(k): int(v) for k, v in failed["lang"].value_counts().items()}
        # The example comes from the file with the most failures: the likely culprit.
        worst_file = failed["toxic_file"].value_counts().index[0]
        row = failed[failed["toxic_file"] == worst_file].iloc[0]
        example = {key: _plain(row[key]) for key in ("pair_id", "lang", "split", "toxic", "neutral", "toxic_file", "neutral_file")}
        column = config.kwargs.get("column")
        if column not in example:
            example[column] = _plain(row[column])
    elif "exception_info" in item:
        example = {"exception": str(item.exception_info)[:300]}
    return CheckFailure(
        check=config.meta.get("check", config.type) if config.meta else config.type,
        expectation=config.type,
        column=str(config.kwargs.get("column")),
        unexpected_count=int(outcome.get("unexpected_count") or 0),
        element_count=int(outcome.get("element_count") or len(table)),
        example=example,
        hint=(config.meta or {}).get("hint", ""),
        by_language=by_language,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 80:
        return value[:77] + "..."
    return value.item() if hasattr(value, "item") else value


def render_html(result: Any) -> str:
    """The GE Data Docs page for one validation result."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
