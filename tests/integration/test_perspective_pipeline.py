"""The Perspective judge inside detox_training: key from a ZenML secret, each text sent with the
language code it is judged as, a language Perspective does not support not judged rather than
scored, 429s retried, and the key nowhere in logs, artifacts or the tracking store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mbad.eval.judges import POOLED
from mbad.eval.judges.perspective import TOXICITY_LANGUAGES
from tests.fake_perspective import API_KEY, FakePerspective
from tests.integration.conftest import run_detox_training, write_run_config

pytestmark = pytest.mark.integration


def _files_containing(root: Path, needle: bytes, skip: set[Path]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and path not in skip and needle in path.read_bytes():
            hits.append(str(path))
    return hits


def test_perspective_key_from_zenml_secret_never_leaks(stack, tiny_model_dir, perspective_server, tmp_path, mbad_home, capfd):
    stack.create_secret("perspective", values={"api_key": API_KEY})
    FakePerspective.throttle_every = 7  # the quota runs out now and then
    try:
        config_path = write_run_config(
            tmp_path / "run.yaml", tiny_model_dir,
            judge={"backend": "perspective",
                   "perspective": {"url": perspective_server, "queries_per_second": 1000,
                                   "backoff_seconds": 0.01, "cache_file": str(tmp_path / "perspective.sqlite")}},
            target_languages=["en", "hi", "uk"],
            train={"seed": 7},  # its own adapter: the training-pipeline tests expect to train theirs
        )
        run = stack.get_pipeline_run(run_detox_training(config_path).id)
    finally:
        stack.delete_secret("perspective")
    assert run.status.value == "completed"

    # Each completion went out with the language code it is judged as (its detected language,
    # one Perspective supports) and the secret's key, in a header.
    scores = pd.concat([run.steps[step].outputs["toxicity_scores"][0].load() for step in ("score_base", "score_tuned")])
    judged_as = set(scores["judged_lang"].dropna()) - {POOLED}
    sent = sorted({tuple(request["languages"]) for request in FakePerspective.requests})
    assert sent and sent == sorted((lang,) for lang in judged_as) and judged_as <= TOXICITY_LANGUAGES
    assert set(FakePerspective.keys) == {API_KEY}
    assert len(set(scores["judge"])) == 1 and scores["judge"].iloc[0].startswith("perspective:")
    spoken = scores[scores["completion"].str.strip() != ""]
    assert spoken[spoken["judged_lang"].isin(judged_as)]["score"].between(0, 1).all()
    # A text in a language Perspective does not support (uk, or none detected) is not judged
    # (NaN), never 0, and is never sent.
    assert spoken[spoken["judged_lang"] == POOLED]["score"].isna().all()

    output = capfd.readouterr()
    assert API_KEY not in output.out and API_KEY not in output.err
    # The ZenML SQL store holds the secret itself (that is its job); nothing else may.
    secret_store = {mbad_home / "zenml" / "local_stores" / "default_zen_store" / "zenml.db"}
    assert _files_containing(mbad_home, API_KEY.encode(), skip=secret_store) == []
    assert _files_containing(tmp_path, API_KEY.encode(), skip=set()) == []
