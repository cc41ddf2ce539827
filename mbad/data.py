"""Loading MultiParaDetox into one tidy table, from local CSV files or the HF dataset.

Schema: lang, split, pair_id, toxic, neutral, plus provenance columns that the validation
suite checks (toxic_file, neutral_file, utf8_ok, readable). Loading never drops or fixes a
bad row: it records what it saw so that validation can reject it with the row named.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import socket
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from mbad.config import DataConfig
from mbad.paths import REPO_ROOT

COLUMNS = ["lang", "split", "pair_id", "toxic", "neutral", "toxic_file", "neutral_file", "utf8_ok", "readable"]
# Who may learn from a pair: `judge` (the offline toxicity judge), `adapter` (fine-tuning), `test`.
ROLES = ("judge", "adapter", "test")
SPLITS = ("train", "test")
_FILE_PATTERN = re.compile(r"^(?P<lang>[a-z]{2,3})_(?P<split>train|test)_(?P<kind>toxic|neutral)\.csv$")
DEFAULT_LOCAL_DIR = REPO_ROOT.parent / "shared" / "data" / "multiparadetox"


def resolve_source(config: DataConfig) -> str:
    """The data source: a local directory path, or `hf:<dataset id>[@<revision>]`."""
    if config.data_dir:
        path = Path(config.data_dir).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"data.data_dir {path} is not a directory")
        return str(path.resolve())
    if os.environ.get("MBAD_DATA_DIR"):
        path = Path(os.environ["MBAD_DATA_DIR"]).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"MBAD_DATA_DIR={path} is not a directory")
        return str(path.resolve())
    if DEFAULT_LOCAL_DIR.is_dir():
        return str(DEFAULT_LOCAL_DIR.resolve())
    check_hub_reachable(config.hf_dataset)
    return f"hf:{config.hf_dataset}" + (f"@{config.hf_revision}" if config.hf_revision else "")


class DataUnavailable(RuntimeError):
    """No local MultiParaDetox directory and no way to reach the HF dataset."""


HUB_HOST = ("huggingface.co", 443)


def check_hub_reachable(dataset_id: str, timeout_s: float = 4.0) -> None:
    """Raise `DataUnavailable`, saying how to provide the data, when the HF hub cannot be used:
    offline mode is set, or huggingface.co does not answer within `timeout_s` (DNS included)."""
    how = (f"no MultiParaDetox data: neither MBAD_DATA_DIR nor {DEFAULT_LOCAL_DIR} exists, and the HF dataset "
           f"{dataset_id} cannot be downloaded ({{why}}). Provide the data in one of these ways: "
           "set MBAD_DATA_DIR (or data.data_dir in the config) to a directory of <lang>_<split>_<toxic|neutral>.csv files; "
           f"place them in {DEFAULT_LOCAL_DIR}; or go online (unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) to fetch {dataset_id}.")
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            raise DataUnavailable(how.format(why=f"{variable} is set"))
    result: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection(HUB_HOST, timeout=timeout_s).close()
            result.append(None)
        except OSError as error:
            result.append(error)

    # DNS lookups ignore the socket timeout: bound the whole attempt from outside.
    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout_s + 1)
    if not result or result[0] is not None:
        reason = f"{HUB_HOST[0]} did not answer in {timeout_s:.0f} s" if not result else f"{HUB_HOST[0]}: {result[0]}"
        raise DataUnavailable(how.format(why=reason))


def content_hash(pairs: pd.DataFrame) -> str:
    """A hash of a table's content: its columns, their types and every value, in order. The
    load step computes it from the rows it read, so the hash that keys caches, tags registered
    versions and names the training data in MLflow describes the data the run used, wherever it
    ran (a pod that reads a volume or the hub, not the client's copy)."""
    digest = hashlib.sha256()
    digest.update(repr([(str(name), str(dtype)) for name, dtype in pairs.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(pairs, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


RELEASED_PAIRS_PER_LANGUAGE = 400  # MultiParaDetox: 400 toxic/neutral pairs in each language
RELEASED_TEST_PAIRS = 100  # of which the released files hold out 100 as test


def planning_test_pairs(config: DataConfig, largest: bool = False) -> int:
    """Test pairs per language (the fewest, or with `largest` the most), for what is planned
    before a run starts: its expected precision, a sweep's cost. Counted from the files when this
    machine can read them. Otherwise the released sizes: a run's pods read the data themselves
    (a volume, the hub), and the machine that submits the run may hold no copy of it."""
    try:
        source = resolve_source(config)
    except (FileNotFoundError, DataUnavailable):
        return RELEASED_TEST_PAIRS
    if source.startswith("hf:"):
        return RELEASED_PAIRS_PER_LANGUAGE - config.train_size
    sizes = load_directory(Path(source)).query("split == 'test'").groupby("lang").size()
    return int(sizes.max() if largest else sizes.min())


def load_pairs(config: DataConfig) -> pd.DataFrame:
    """Load every language found in the configured source (see `resolve_source`), with each
    pair's `role` (see `assign_roles`)."""
    source = resolve_source(config)
    if source.startswith("hf:"):
        dataset_id, _, revision = source[3:].partition("@")
        pairs = _load_hf(dataset_id, revision or None, config.split_seed, config.train_size)
    else:
        pairs = load_directory(Path(source))
    return assign_roles(pairs, config.judge_share)


def assign_roles(pairs: pd.DataFrame, judge_share: float) -> pd.DataFrame:
    """A `role` column: test pairs are `test`; of each language's train pairs, the first
    `judge_share` (by row, the released files are already shuffled) are `judge`, the rest
    `adapter`. Disjoint by construction, and the same for every run on the same files."""
    table = pairs.copy()
    row = table.groupby(["lang", "split"]).cumcount()
    n_train = table.groupby(["lang", "split"])["pair_id"].transform("size")
    is_train = table["split"] == "train"
    table["role"] = np.where(~is_train, "test", np.where(row < (n_train * judge_share).round(), "judge", "adapter"))
    return table


def load_directory(directory: Path) -> pd.DataFrame:
    """Pair `{lang}_{split}_toxic.csv` row i with `{lang}_{split}_neutral.csv` row i."""
    files: dict[tuple[str, str], dict[str, Path]] = {}
    for path in sorted(directory.iterdir()):
        match = _FILE_PATTERN.match(path.name)
        if match:
            files.setdefault((match["lang"], match["split"]), {})[match["kind"]] = path
    if not files:
        raise FileNotFoundError(
            f"no files named {{lang}}_{{train|test}}_{{toxic|neutral}}.csv in {directory}"
        )
    frames = [_load_pair_files(lang, split, paths) for (lang, split), paths in sorted(files.items())]
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def _read_column(path: Path | None) -> tuple[list[str] | None, bool]:
    """One-column CSV -> (texts, decoded_as_utf8). texts is None when the file can't be read."""
    if path is None:
        return None, True
    try:
        raw = path.read_bytes()
    except OSError:
        return None, True
    try:
        text, utf8_ok = raw.decode("utf-8"), True
    except UnicodeDecodeError:
        text, utf8_ok = raw.decode("utf-8", errors="replace"), False
    try:
        # Some fields are quoted and hold line breaks: parse as CSV, never line by line.
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error:
        return None, utf8_ok
    return [",".join(row) for row in rows], utf8_ok


def _load_pair_files(lang: str, split: str, paths: dict[str, Path]) -> pd.DataFrame:
    toxic, toxic_utf8 = _read_column(paths.get("toxic"))
    neutral, neutral_utf8 = _read_column(paths.get("neutral"))
    names = {kind: (paths[kind].name if kind in paths else f"{lang}_{split}_{kind}.csv (missing)") for kind in ("toxic", "neutral")}
    readable = toxic is not None and neutral is not None
    toxic, neutral = toxic or [], neutral or []
    n_rows = max(len(toxic), len(neutral), 1 if not readable else 0)
    return pd.DataFrame(
        {
            "lang": lang,
            "split": split,
            "pair_id": [f"{lang}-{split}-{i:04d}" for i in range(n_rows)],
            # A shorter file leaves None on its side: validation reports the misalignment.
            "toxic": [toxic[i] if i < len(toxic) else None for i in range(n_rows)],
            "neutral": [neutral[i] if i < len(neutral) else None for i in range(n_rows)],
            "toxic_file": names["toxic"],
            "neutral_file": names["neutral"],
            "utf8_ok": toxic_utf8 and neutral_utf8,
            "readable": readable,
        }
    )


def split_indices(n_rows: int, seed: int, train_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The one deterministic split: a seeded permutation, first `train_size` rows train.

    This is `datasets.Dataset.shuffle(seed=seed)` followed by rows [0, train_size) and
    [train_size, n): the split the released files were made with.
    """
    order = np.random.default_rng(seed).permutation(n_rows)
    return order[:train_size], order[train_size:]


def _load_hf(dataset_id: str, revision: str | None, seed: int, train_size: int) -> pd.DataFrame:
    try:
        import datasets
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("loading from the HF hub needs `pip install datasets`") from error
    dataset = datasets.load_dataset(dataset_id, revision=revision)
    frames = []
    for lang in sorted(dataset.keys()):
        table = dataset[lang].to_pandas()
        for split, rows in zip(SPLITS, split_indices(len(table), seed, train_size)):
            part = table.iloc[rows]
            frames.append(
                pd.DataFrame(
                    {
                        "lang": lang,
                        "split": split,
                        "pair_id": [f"{lang}-{split}-{i:04d}" for i in range(len(part))],
                        "toxic": part["toxic_sentence"].tolist(),
                        "neutral": part["neutral_sentence"].tolist(),
                        "toxic_file": f"hf:{dataset_id}[{lang}]",
                        "neutral_file": f"hf:{dataset_id}[{lang}]",
                        "utf8_ok": True,
                        "readable": True,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def select(
    pairs: pd.DataFrame,
    split: str,
    languages: list[str] | None = None,
    fraction: float = 1.0,
    max_per_language: int | None = None,
    seed: int = 42,
    role: str | None = None,
) -> pd.DataFrame:
    """Rows of one split for some languages; `fraction` samples each language with `seed`.
    `role` (`judge`, `adapter`) keeps only the pairs of that part of the split."""
    rows = pairs[pairs["split"] == split]
    if role is not None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; known: {list(ROLES)}")
        rows = rows[rows["role"] == role]
    if languages is not None:
        missing = sorted(set(languages) - set(rows["lang"]))
        if missing:
            raise ValueError(f"no {split} data for language(s) {missing}; present: {sorted(set(rows['lang']))}")
        rows = rows[rows["lang"].isin(languages)]
    parts = []
    for _, group in rows.groupby("lang", sort=True):
        n_rows = len(group)
        if fraction < 1.0:
            n_rows = max(1, round(n_rows * fraction))
            group = group.sample(n=n_rows, random_state=seed).sort_values("pair_id")
        if max_per_language is not None:
            group = group.head(max_per_language)
        parts.append(group)
    return pd.concat(parts, ignore_index=True) if parts else rows.iloc[0:0]


if __name__ == "__main__":  # `python -m mbad.data`: where the data comes from, or how to provide it (exit 2)
    import sys

    try:
        print(f"data: {resolve_source(DataConfig())}")
    except (DataUnavailable, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
