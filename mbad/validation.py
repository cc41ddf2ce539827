"""The data validation suite, run with Great Expectations 1.x.

Every language in the dataset is validated, not only those a run trains on, and every
expectation holds per file: the suite runs once per file pair (`{lang}_{split}_toxic.csv`
with `{lang}_{split}_neutral.csv`, one GE batch each), so a corruption confined to one file
fails even when it is a small share of the whole table, and a failure names the file.
Checks that GE cannot express on the raw table (script share, language, leakage, toxic ==
neutral) are computed as derived columns first and then validated by GE like any other
column, so that one report (Data Docs HTML, a section per file pair) holds every check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from mbad.config import DataConfig
from mbad.eval.fidelity import detect_languages
from mbad.languages import LanguageRegistry, script_share

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import great_expectations as gx  # noqa: E402  (after disabling analytics)
import great_expectations.expectations as gxe  # noqa: E402


class DataValidationError(ValueError):
    """Raised when the data fails validation; the message lists each failed check."""


# Rows of one file pair share these columns: the unit every expectation holds on.
FILE_GROUP_COLUMNS = ["lang", "split", "toxic_file", "neutral_file"]


@dataclass
class CheckFailure:
    """One check that failed, over every file it failed in."""

    check: str
    expectation: str
    column: str
    unexpected_count: int
    element_count: int
    example: dict[str, Any]
    hint: str = ""
    by_language: dict[str, int] = field(default_factory=dict)
    # File name -> "unexpected/rows" in that file, worst first.
    by_file: dict[str, str] = field(default_factory=dict)
    mostly: float | None = None

    @property
    def files(self) -> list[str]:
        return list(self.by_file)

    def describe(self) -> str:
        hint = f" ({self.hint})" if self.hint else ""
        where = f" (by language: {self.by_language})" if self.by_language else ""
        files = ", ".join(f"{name} ({count})" for name, count in self.by_file.items())
        rule = f"; at least {self.mostly:.0%} of each file's rows must pass" if self.mostly is not None else ""
        return (
            f"check '{self.check}' failed{hint}: {self.expectation} on column '{self.column}' "
            f"is false for {self.unexpected_count} of {self.element_count} rows in {len(self.by_file)} file(s): "
            f"{files}{rule}{where}, e.g. {self.example}"
        )


@dataclass
class ValidationReport:
    success: bool
    failures: list[CheckFailure] = field(default_factory=list)
    html: str = ""
    n_rows: int = 0
    languages: list[str] = field(default_factory=list)
    n_file_groups: int = 0

    @property
    def failed_files(self) -> list[str]:
        """Every file named by a failure, sorted."""
        return sorted({name for failure in self.failures for name in failure.files})

    def error_message(self) -> str:
        lines = [f"data validation failed: {len(self.failures)} check(s) did not pass in {', '.join(self.failed_files)}"]
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
        # None (unknown language, missing or letterless text) is left to the other checks.
        detected = detect_languages([text if isinstance(text, str) else None for text in table[side]], registry,
                                    desc=f"language of {side} sentences")
        table[f"{side}_detected_lang"] = pd.Series(detected, index=table.index, dtype=object)
        table[f"{side}_in_language"] = pd.Series(
            [None if found is None or lang not in registry else found == lang for found, lang in zip(detected, table["lang"])],
            index=table.index, dtype=object,
        )
    normal_toxic = table["toxic"].map(_normalise)
    normal_neutral = table["neutral"].map(_normalise)
    table["toxic_equals_neutral"] = [
        bool(t is not None and t == n) for t, n in zip(normal_toxic, normal_neutral)
    ]
    texts_by_split = {
        split: set(zip(table["lang"][rows], normal_toxic[rows])) | set(zip(table["lang"][rows], normal_neutral[rows]))
        for split in ("train", "test")
        for rows in [table["split"] == split]
    }
    # A test pair leaks when its toxic or its neutral sentence also occurs in train; the train
    # pair it leaked into is flagged too, so that both files are named.
    table["pair_in_other_split"] = [
        bool(split in texts_by_split and ((lang, t) in texts_by_split[other] or (lang, n) in texts_by_split[other]))
        for split, lang, t, n in zip(table["split"], table["lang"], normal_toxic, normal_neutral)
        for other in ["test" if split == "train" else "train"]
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
        tagged(gxe.ExpectColumnValuesToBeInSet(column="toxic_in_language", value_set=[True], mostly=config.language_mostly),
               "language", "most sentences must be detected (lid.176 + script rules) as the file's language"),
        tagged(gxe.ExpectColumnValuesToBeInSet(column="neutral_in_language", value_set=[True], mostly=config.language_mostly),
               "language", "most sentences must be detected (lid.176 + script rules) as the file's language"),
        tagged(gxe.ExpectColumnValuesToBeInSet(column="toxic_equals_neutral", value_set=[False], mostly=config.differs_mostly),
               "toxic_differs_from_neutral"),
        tagged(gxe.ExpectColumnValuesToBeInSet(column="pair_in_other_split", value_set=[False]),
               "no_test_leak", "a sentence occurs in both the train and the test file (whitespace/case normalised)"),
    ]


def file_groups(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) of each file pair, the label naming both files, e.g. `hi_train_{toxic,neutral}.csv`."""
    groups = []
    for (_, _, toxic_file, neutral_file), rows in table.groupby(FILE_GROUP_COLUMNS, sort=True, dropna=False):
        groups.append((f"{toxic_file} + {neutral_file}", rows))
    return groups


def validate_pairs(pairs: pd.DataFrame, registry: LanguageRegistry, config: DataConfig) -> ValidationReport:
    """Run the suite on each file pair (one GE batch each); never raises for bad data, returns
    the report, whose failures name the files they failed in."""
    missing = sorted(set(FILE_GROUP_COLUMNS) - set(pairs.columns))
    if missing:
        raise ValueError(f"the pairs table lacks column(s) {missing}: load it with mbad.data.load_pairs")
    table = add_derived_columns(pairs, registry)
    context = gx.get_context(mode="ephemeral")
    _quiet_progress_bars(context)
    batch = context.data_sources.add_pandas("mbad").add_dataframe_asset("pairs").add_batch_definition_whole_dataframe("file_pair")
    suite = context.suites.add(gx.ExpectationSuite(name="multiparadetox", expectations=build_suite(config, registry)))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="multiparadetox", data=batch, suite=suite))
    results = []
    groups = file_groups(table)
    for label, rows in tqdm(groups, desc="validate files", unit="file pair", leave=False):
        result = definition.run(
            batch_parameters={"dataframe": rows},
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["pair_id"]},
        )
        results.append((label, rows, result))
    return ValidationReport(
        success=all(bool(result.success) for _, _, result in results),
        failures=_failures(results),
        html=render_html(results),
        n_rows=len(table),
        languages=sorted(set(table["lang"])),
        n_file_groups=len(groups),
    )


def _quiet_progress_bars(context: Any) -> None:
    """GE draws a progress bar per run; one bar over the file pairs says more."""
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # noqa: BLE001  (cosmetic: an older or newer GE keeps its bars)
        pass


# Columns whose values come from one file of the pair; a failure elsewhere names both files.
_ONE_FILE_COLUMNS = {f"{side}{suffix}": side for side in ("toxic", "neutral") for suffix in ("", "_script_share", "_in_language")}


def _file_of(column: str, rows: pd.DataFrame) -> str:
    """The file a failed column's values come from: the toxic or the neutral file, else both."""
    side = _ONE_FILE_COLUMNS.get(column)
    if side:
        return str(rows[f"{side}_file"].iloc[0])
    return f"{rows['toxic_file'].iloc[0]} + {rows['neutral_file'].iloc[0]}"


def _failures(results: list[tuple[str, pd.DataFrame, Any]]) -> list[CheckFailure]:
    """One failure per failed expectation, over every file pair it failed in."""
    by_expectation: dict[int, list[tuple[pd.DataFrame, Any]]] = {}
    for _, rows, result in results:
        for position, item in enumerate(result.results):
            if not item.success:
                by_expectation.setdefault(position, []).append((rows, item))
    return [_failure(failed) for _, failed in sorted(by_expectation.items())]


def _failure(failed: list[tuple[pd.DataFrame, Any]]) -> CheckFailure:
    config = failed[0][1].expectation_config
    column = str(config.kwargs.get("column"))
    per_file: list[tuple[str, int, int, pd.DataFrame, Any]] = []
    for rows, item in failed:
        outcome = item.result or {}
        unexpected = int(outcome.get("unexpected_count") or 0)
        per_file.append((_file_of(column, rows), unexpected, int(outcome.get("element_count") or len(rows)), rows, item))
    per_file.sort(key=lambda entry: -entry[1])
    example: dict[str, Any] = {}
    by_language: dict[str, int] = {}
    for _, _, _, rows, item in per_file:
        indices = (item.result or {}).get("unexpected_index_list") or []
        pair_ids = [index["pair_id"] for index in indices if isinstance(index, dict) and "pair_id" in index]
        failed_rows = rows[rows["pair_id"].isin(pair_ids)]
        for lang, count in failed_rows["lang"].value_counts().items():
            by_language[str(lang)] = by_language.get(str(lang), 0) + int(count)
        if not example and len(failed_rows):
            # The example comes from the file with the most failures: the likely culprit.
            row = failed_rows.iloc[0]
            example = {key: _plain(row[key]) for key in ("pair_id", "lang", "split", "toxic", "neutral", "toxic_file", "neutral_file")}
            if column not in example:
                example[column] = _plain(row[column])
            if column.endswith("_in_language"):  # what the sentence was taken for
                detected = column.replace("_in_language", "_detected_lang")
                example[detected] = _plain(row[detected])
        elif not example and "exception_info" in item:
            example = {"exception": str(item.exception_info)[:300]}
    return CheckFailure(
        check=config.meta.get("check", config.type) if config.meta else config.type,
        expectation=config.type,
        column=column,
        unexpected_count=sum(entry[1] for entry in per_file),
        element_count=sum(entry[2] for entry in per_file),
        example=example,
        hint=(config.meta or {}).get("hint", ""),
        by_language=by_language,
        by_file={name: f"{unexpected}/{rows_in_file}" for name, unexpected, rows_in_file, _, _ in per_file},
        mostly=config.kwargs.get("mostly"),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 80:
        return value[:77] + "..."
    return value.item() if hasattr(value, "item") else value


def render_html(results: list[tuple[str, pd.DataFrame, Any]]) -> str:
    """One GE Data Docs page holding every file pair's validation result, a section per file
    pair (failed ones first)."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    renderer = ValidationResultsPageRenderer()
    ordered = sorted(results, key=lambda entry: (bool(entry[2].success), entry[0]))
    documents = []
    for label, _, result in ordered:
        document = renderer.render(result)
        status = "passed" if result.success else "FAILED"
        for section in document.sections:
            section.section_name = f"{label} ({status}): {section.section_name or ''}"
        _title_overview(document, f"{label} ({status})")
        documents.append(document)
    page = documents[0]
    page.sections = [section for document in documents for section in document.sections]
    page.page_title = f"MultiParaDetox validation: {len(results)} file pairs"
    return DefaultJinjaPageView().render(page)


def _title_overview(document: Any, title: str) -> None:
    """Put the file pair's name in its overview heading, not only in the page's navigation."""
    blocks = getattr(document.sections[0], "content_blocks", None) if document.sections else None
    header = getattr(blocks[0], "header", None) if blocks else None
    template = getattr(header, "string_template", None)
    if isinstance(template, dict) and isinstance(template.get("template"), str):
        template["template"] = f"{title.replace('$', '$$')}: {template['template']}"
