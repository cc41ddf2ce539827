"""Ways data goes wrong, each applied to a private copy of the files; and the check that
must catch it."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path


def read_rows(path: Path) -> list[str]:
    return [row[0] for row in csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline=""))]


def write_rows(path: Path, rows: list[str], encoding: str = "utf-8") -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([[row] for row in rows])
    path.write_bytes(buffer.getvalue().encode(encoding, errors="replace"))


def blank_text(data: Path) -> None:
    rows = read_rows(data / "en_train_toxic.csv")
    rows[5] = "   "
    write_rows(data / "en_train_toxic.csv", rows)


def misaligned_counts(data: Path) -> None:
    rows = read_rows(data / "de_test_neutral.csv")
    write_rows(data / "de_test_neutral.csv", rows[:-3])


def wrong_script(data: Path) -> None:
    # Hindi files that hold Russian sentences (a file mix-up).
    for kind in ("toxic", "neutral"):
        write_rows(data / f"hi_train_{kind}.csv", read_rows(data / f"ru_train_{kind}.csv"))


def test_leaked_into_train(data: Path) -> None:
    for kind in ("toxic", "neutral"):
        train, test = read_rows(data / f"es_train_{kind}.csv"), read_rows(data / f"es_test_{kind}.csv")
        # Same sentences, different case and spacing: still a leak.
        train[:5] = ["  " + text.upper() + " " for text in test[:5]]
        write_rows(data / f"es_train_{kind}.csv", train)


def not_utf8(data: Path) -> None:
    write_rows(data / "ru_train_toxic.csv", read_rows(data / "ru_train_toxic.csv"), encoding="cp1251")


def toxic_identical_to_neutral(data: Path) -> None:
    (data / "en_train_toxic.csv").write_bytes((data / "en_train_neutral.csv").read_bytes())


def unreadable_file(data: Path) -> None:
    (data / "zh_test_toxic.csv").unlink()
    (data / "zh_test_toxic.csv").symlink_to(data / "no-such-file.csv")


def unknown_language(data: Path) -> None:
    for split in ("train", "test"):
        for kind in ("toxic", "neutral"):
            write_rows(data / f"xx_{split}_{kind}.csv", read_rows(data / f"en_{split}_{kind}.csv")[:3])


def few_rows_wrong_script(data: Path) -> None:
    # 15 of hi_train_toxic.csv's 300 rows (5 % of the file, 0.4 % of the table) in Cyrillic.
    rows, russian = read_rows(data / "hi_train_toxic.csv"), read_rows(data / "ru_train_toxic.csv")
    rows[100:115] = russian[100:115]
    write_rows(data / "hi_train_toxic.csv", rows)


def few_pairs_unchanged(data: Path) -> None:
    # 5 of de_test's 100 neutral sentences copied from their toxic ones (5 % of the file).
    toxic, neutral = read_rows(data / "de_test_toxic.csv"), read_rows(data / "de_test_neutral.csv")
    neutral[10:15] = toxic[10:15]
    write_rows(data / "de_test_neutral.csv", neutral)


def russian_rows_in_ukrainian_file(data: Path) -> None:
    # 20 % of a Ukrainian file replaced by Russian sentences: same script, other language.
    rows, russian = read_rows(data / "uk_train_neutral.csv"), read_rows(data / "ru_train_neutral.csv")
    rows[::5] = russian[::5][: len(rows[::5])]
    write_rows(data / "uk_train_neutral.csv", rows)


def spanish_rows_in_german_file(data: Path) -> None:
    rows, spanish = read_rows(data / "de_test_toxic.csv"), read_rows(data / "es_test_toxic.csv")
    rows[:20] = spanish[:20]
    write_rows(data / "de_test_toxic.csv", rows)


# (corruption, the check that must fail, a file or text the error must name)
CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "blank_text": (blank_text, "non_empty_text", "en-train-0005"),
    "misaligned_counts": (misaligned_counts, "pairs_aligned", "de-test-0097"),
    "wrong_script": (wrong_script, "script", "hi-train"),
    "test_leaked_into_train": (test_leaked_into_train, "no_test_leak", "es-test"),
    "not_utf8": (not_utf8, "utf8", "ru_train_toxic.csv"),
    "toxic_identical_to_neutral": (toxic_identical_to_neutral, "toxic_differs_from_neutral", "en-train"),
    "unreadable_file": (unreadable_file, "file_readable", "zh_test_toxic.csv"),
    "unknown_language": (unknown_language, "known_language", "languages.yaml"),
    "few_rows_wrong_script": (few_rows_wrong_script, "script", "hi_train_toxic.csv"),
    "few_pairs_unchanged": (few_pairs_unchanged, "toxic_differs_from_neutral", "de-test-0010"),
    "russian_rows_in_ukrainian_file": (russian_rows_in_ukrainian_file, "language", "uk_train_neutral.csv"),
    "spanish_rows_in_german_file": (spanish_rows_in_german_file, "language", "de_test_toxic.csv"),
}


def _pair(lang: str, split: str) -> str:
    return f"{lang}_{split}_toxic.csv + {lang}_{split}_neutral.csv"


# The files the failure of each case's check must name, and no others.
CASE_FILES: dict[str, list[str]] = {
    "blank_text": ["en_train_toxic.csv"],
    "misaligned_counts": ["de_test_neutral.csv"],
    "wrong_script": ["hi_train_neutral.csv", "hi_train_toxic.csv"],
    "test_leaked_into_train": [_pair("es", "test"), _pair("es", "train")],
    "not_utf8": [_pair("ru", "train")],
    "toxic_identical_to_neutral": [_pair("en", "train")],
    "unreadable_file": [_pair("zh", "test")],
    "unknown_language": [_pair("xx", "test"), _pair("xx", "train")],
    "few_rows_wrong_script": ["hi_train_toxic.csv"],
    "few_pairs_unchanged": [_pair("de", "test")],
    "russian_rows_in_ukrainian_file": ["uk_train_neutral.csv"],
    "spanish_rows_in_german_file": ["de_test_toxic.csv"],
}
