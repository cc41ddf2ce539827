import pytest

from mbad.config import DataConfig
from mbad.data import load_directory
from mbad.languages import script_share
from mbad.validation import validate_pairs
from tests.corruptions import CASE_FILES, CASES, few_rows_wrong_script, russian_rows_in_ukrainian_file


def _file_pair(name: str) -> str:
    """`hi_train_toxic.csv` or `hi_train_toxic.csv + hi_train_neutral.csv` -> `hi_train`."""
    return "_".join(name.split("_")[:2])


def test_released_data_passes(pairs, registry):
    columns, roles = list(pairs.columns), pairs["role"].value_counts().to_dict()
    report = validate_pairs(pairs, registry, DataConfig())
    # The derived columns stay inside the suite: the table (its role column too) is unchanged.
    assert list(pairs.columns) == columns and pairs["role"].value_counts().to_dict() == roles
    assert report.success, report.error_message()
    assert report.languages == sorted(registry.codes)
    assert report.n_file_groups == 18 and report.failed_files == []
    assert "<html" in report.html.lower()
    # One Data Docs page, a section for every file pair.
    assert report.html.lower().count("<html") == 1
    assert all(f"{lang}_{split}_toxic.csv + {lang}_{split}_neutral.csv" in report.html
               for lang in registry.codes for split in ("train", "test"))


def test_cases_name_their_files():
    assert set(CASE_FILES) == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_data_fails_the_named_check_in_the_named_files(case, data_copy, registry):
    corrupt, check, named = CASES[case]
    corrupt(data_copy)
    report = validate_pairs(load_directory(data_copy), registry, DataConfig())
    assert not report.success
    failed_files: dict[str, set[str]] = {}
    for failure in report.failures:
        failed_files.setdefault(failure.check, set()).update(failure.files)
    assert check in failed_files, report.error_message()
    message = report.error_message()
    assert f"check '{check}'" in message and named in message
    assert sorted(failed_files[check]) == CASE_FILES[case], message
    assert all(name in message for name in CASE_FILES[case])
    # Every other file pair is clean: no failure names one.
    assert {_file_pair(name) for name in report.failed_files} == {_file_pair(name) for name in CASE_FILES[case]}, message


def test_a_corruption_below_the_whole_table_threshold_fails_its_file(data_copy, registry):
    few_rows_wrong_script(data_copy)
    pairs = load_directory(data_copy)
    in_script = [script_share(text, registry.script(lang)) >= DataConfig().min_script_share
                 for text, lang in zip(pairs["toxic"], pairs["lang"])]
    # Over the whole table 99.6 % of the rows pass: a table-wide `mostly` of 0.98 let it through.
    assert sum(in_script) / len(in_script) > DataConfig().script_mostly
    report = validate_pairs(pairs, registry, DataConfig())
    script = next(failure for failure in report.failures if failure.check == "script")
    assert script.by_file == {"hi_train_toxic.csv": "15/300"}
    assert "hi_train_toxic.csv (15/300)" in report.error_message()
    assert "at least 98% of each file's rows must pass" in report.error_message()


def test_russian_rows_in_a_ukrainian_file_fail_only_the_language_check(data_copy, registry):
    russian_rows_in_ukrainian_file(data_copy)
    report = validate_pairs(load_directory(data_copy), registry, DataConfig())
    assert [failure.check for failure in report.failures] == ["language"], report.error_message()
    language = report.failures[0]
    assert language.files == ["uk_train_neutral.csv"]
    assert language.example["lang"] == "uk" and language.example["neutral_detected_lang"] == "ru"
    assert language.unexpected_count >= 55  # of the 60 Russian rows


def test_language_threshold_is_configurable(data_copy, registry):
    russian_rows_in_ukrainian_file(data_copy)
    report = validate_pairs(load_directory(data_copy), registry, DataConfig(language_mostly=0.7))
    assert report.success, report.error_message()


def test_script_share():
    assert script_share("Привет, мир", "Cyrillic") == 1.0
    assert script_share("Привет world", "Cyrillic") == pytest.approx(6 / 11)
    assert script_share("你好 hello", "Han") == pytest.approx(2 / 7)
    assert script_share("12345 !!!", "Latin") == 1.0
