import shutil
from pathlib import Path

import numpy as np
import pytest

from mbad.config import PAPER_LANGUAGES, DataConfig
from mbad.data import content_hash, load_directory, load_pairs, planning_test_pairs, resolve_source, select, split_indices


def test_loads_every_language_with_the_released_split(pairs):
    assert sorted(pairs["lang"].unique()) == sorted(PAPER_LANGUAGES)
    counts = pairs.groupby(["lang", "split"]).size()
    assert (counts.xs("train", level="split") == 300).all()
    assert (counts.xs("test", level="split") == 100).all()
    assert pairs["pair_id"].is_unique
    assert pairs[["toxic", "neutral"]].notna().all().all()


def test_quoted_multiline_fields_are_one_row(tmp_path: Path):
    (tmp_path / "en_train_toxic.csv").write_text('"first line\nsecond line"\nplain row\n', encoding="utf-8")
    (tmp_path / "en_train_neutral.csv").write_text('"calm, with a comma"\nanother\n', encoding="utf-8")
    table = load_directory(tmp_path)
    assert table["toxic"].tolist() == ["first line\nsecond line", "plain row"]
    assert table["neutral"].tolist() == ["calm, with a comma", "another"]


def test_misaligned_files_leave_a_gap_instead_of_shifting_pairs(tmp_path: Path):
    (tmp_path / "en_train_toxic.csv").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "en_train_neutral.csv").write_text("x\ny\n", encoding="utf-8")
    table = load_directory(tmp_path)
    assert table["neutral"].tolist()[:2] == ["x", "y"]
    assert table["neutral"].isna().tolist() == [False, False, True]


def test_undecodable_bytes_are_recorded_not_raised(tmp_path: Path):
    (tmp_path / "en_train_toxic.csv").write_bytes(b"ok\n\xff\xfe broken\n")
    (tmp_path / "en_train_neutral.csv").write_text("x\ny\n", encoding="utf-8")
    table = load_directory(tmp_path)
    assert not table["utf8_ok"].any()


def test_split_is_deterministic_and_disjoint():
    train_a, test_a = split_indices(400, seed=42, train_size=300)
    train_b, test_b = split_indices(400, seed=42, train_size=300)
    assert np.array_equal(train_a, train_b) and np.array_equal(test_a, test_b)
    assert not set(train_a) & set(test_a)
    assert len(train_a) == 300 and len(test_a) == 100


def test_fraction_sampling_is_seeded_and_per_language(pairs):
    first = select(pairs, "train", ["en", "hi"], fraction=0.1, seed=7)
    second = select(pairs, "train", ["en", "hi"], fraction=0.1, seed=7)
    other = select(pairs, "train", ["en", "hi"], fraction=0.1, seed=8)
    assert first["pair_id"].tolist() == second["pair_id"].tolist()
    assert first["pair_id"].tolist() != other["pair_id"].tolist()
    assert first.groupby("lang").size().to_dict() == {"en": 30, "hi": 30}


def test_select_names_missing_languages(pairs):
    with pytest.raises(ValueError, match="xx"):
        select(pairs, "train", ["en", "xx"])


def test_content_hash_follows_the_rows_read_not_where_they_came_from(data_copy: Path, tmp_path: Path):
    config = DataConfig(data_dir=str(data_copy))
    before = content_hash(load_pairs(config))
    elsewhere = Path(shutil.copytree(data_copy, tmp_path / "another-copy"))
    assert content_hash(load_pairs(DataConfig(data_dir=str(elsewhere)))) == before  # the same data, read elsewhere
    with (data_copy / "en_train_neutral.csv").open("a", encoding="utf-8") as handle:
        handle.write("one more line\n")
    assert content_hash(load_pairs(config)) != before
    swapped = load_pairs(DataConfig(data_dir=str(elsewhere)))
    swapped.loc[[0, 1], "neutral"] = swapped.loc[[1, 0], "neutral"].to_numpy()
    assert content_hash(swapped) != before  # order and pairing count, not only the set of sentences
    assert content_hash(load_pairs(DataConfig(data_dir=str(elsewhere), judge_share=0.25))) != before  # the roles too


def test_plans_count_test_pairs_here_and_fall_back_to_the_released_sizes(data_copy: Path, tmp_path: Path):
    assert planning_test_pairs(DataConfig(data_dir=str(data_copy))) == 100
    # A path that exists only in the run's pods (a volume): the released data's 100.
    assert planning_test_pairs(DataConfig(data_dir=str(tmp_path / "mounted-in-pods-only"))) == 100


def test_missing_data_dir_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        resolve_source(DataConfig(data_dir=str(tmp_path / "nope")))


def test_fresh_clone_without_data_offline_stops_fast_with_instructions(tmp_path):
    """A checkout without ../shared and no MBAD_DATA_DIR, offline: `python -m mbad.data` (the
    first thing `make run` does) says how to provide the data and exits 2 within seconds."""
    import os
    import subprocess
    import sys
    import time

    from mbad.paths import REPO_ROOT

    clone = tmp_path / "fresh" / "mbad"
    tracked = subprocess.run(["git", "ls-files", "mbad"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        (clone / name).write_bytes((REPO_ROOT / name).read_bytes())
    env = {key: value for key, value in os.environ.items() if key not in ("MBAD_DATA_DIR", "PYTHONPATH")}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "mbad.data"], cwd=clone, env=env | {"HF_HUB_OFFLINE": "1"},
                            capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 2, result
    assert "no MultiParaDetox data" in result.stderr and "MBAD_DATA_DIR" in result.stderr and "HF_HUB_OFFLINE is set" in result.stderr
    assert "Traceback" not in result.stderr


def test_hub_unreachable_is_a_clear_error(monkeypatch):
    from mbad import data

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(data, "HUB_HOST", ("127.0.0.1", 9))  # discard port: nothing listens
    with pytest.raises(data.DataUnavailable, match="cannot be downloaded"):
        data.check_hub_reachable("textdetox/multilingual_paradetox", timeout_s=1)
