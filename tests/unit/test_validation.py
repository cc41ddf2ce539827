import pytest

from mbad.config import DataConfig
from mbad.data import load_directory
from mbad.languages import script_share
from mbad.validation import validate_pairs
from tests.corruptions import CASES


def test_released_data_passes(pairs, registry):
    report = validate_pairs(pairs, registry, DataConfig())
    assert report.success, report.error_message()
    assert report.languages == sorted(registry.codes)
    assert "<html" in report.html.lower()


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_data_fails_the_named_check(case, data_copy, registry):
    corrupt, check, named = CASES[case]
    corrupt(data_copy)
    report = validate_pairs(load_directory(data_copy), registry, DataConfig())
    assert not report.success
    failed = {failure.check for failure in report.failures}
    assert check in failed, report.error_message()
    message = report.error_message()
    assert f"check '{check}'" in message and named in message


def test_script_share():
    assert script_share("Привет, мир", "Cyrillic") == 1.0
    assert script_share("Привет world", "Cyrillic") == pytest.approx(6 / 11)
    assert script_share("你好 hello", "Han") == pytest.approx(2 / 7)
    assert script_share("12345 !!!", "Latin") == 1.0
