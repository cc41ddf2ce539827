"""Completions as MLflow traces of a run, read back from a real SQLite tracking store."""

from __future__ import annotations

import math

import mlflow
import pandas as pd
import pytest

from mbad.tracking import log_completion_traces

JUDGE = "offline:abc123"
SCORER = "tiny-base-model"


@pytest.fixture(scope="module")
def sqlite_tracking(tmp_path_factory):
    """A fresh SQLite MLflow store for this module's tests only (each test logs its own run)."""
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("traces")
        yield uri
    mlflow.set_tracking_uri(previous)


def completions() -> pd.DataFrame:
    rows = [
        ("base", "hi", 7, 0, "तुम बहुत", "you are stupid", 0.9, "en", "en"),
        ("base", "hi", 7, 1, "तुम बहुत", "अच्छे हो", 0.1, "hi", "hi"),
        ("tuned", "hi", 7, 0, "तुम बहुत", "  ", math.nan, None, None),
        ("tuned", "hi", 7, 1, "तुम बहुत", "नमस्ते दोस्त", 0.2, "hi", "hi"),
    ]
    columns = ["model", "lang", "pair_id", "sample", "prompt", "completion", "score", "detected_lang", "judged_lang"]
    return pd.DataFrame(rows, columns=columns).assign(judge=JUDGE)


def base_fluency() -> pd.DataFrame:
    return pd.DataFrame({"pair_id": [7, 7], "lang": ["hi", "hi"], "sample": [0, 1], "value": [6.0, 3.0],
                         "weight": [3.0, 2.0], "empty": [False, False]})


def feedback(trace, name: str):
    (assessment,) = [item for item in trace.info.assessments if item.name == name] or [None]
    return assessment


def test_each_completion_is_a_trace_of_the_run_with_its_assessments(sqlite_tracking):
    with mlflow.start_run() as run:
        trace_ids = log_completion_traces(completions(), {"base": base_fluency(), "tuned": None}, SCORER)
    traces = {trace.info.trace_id: trace for trace in mlflow.search_traces(run_id=run.info.run_id, return_type="list")}
    assert set(traces) == set(trace_ids) and len(trace_ids) == 4
    expected_fluency = [2.0, 1.5, None, None]
    for trace_id, row, fluency in zip(trace_ids, completions().to_dict("records"), expected_fluency, strict=True):
        trace = traces[trace_id]
        assert trace.info.request_metadata["mlflow.sourceRun"] == run.info.run_id
        assert trace.data.spans[0].inputs == {"prompt": row["prompt"], "prompt_language": "hi", "pair_id": 7,
                                              "sample": row["sample"], "model": row["model"]}
        assert trace.data.spans[0].outputs == row["completion"]
        assert trace.info.tags["model"] == row["model"] and trace.info.tags["lang"] == "hi"
        toxicity = feedback(trace, "toxicity")
        assert toxicity.source.source_id == JUDGE
        if math.isnan(row["score"]):
            assert toxicity.value is None and toxicity.feedback.error.error_code == "NOT_JUDGED"
        else:
            assert toxicity.value == pytest.approx(row["score"])
        assert feedback(trace, "empty").value is (row["completion"].strip() == "")
        for name, column in (("detected_language", "detected_lang"), ("judged_language", "judged_lang")):
            assessment = feedback(trace, name)
            assert (assessment.value if assessment else None) == (None if pd.isna(row[column]) else row[column])
        nll = feedback(trace, "fluency_nll_per_token")
        assert (nll.value if nll else None) == fluency
        if nll:
            assert nll.source.source_id == SCORER


def test_traces_filter_by_model_and_score(sqlite_tracking):
    with mlflow.start_run() as run:
        log_completion_traces(completions(), {}, SCORER)
    tuned = mlflow.search_traces(run_id=run.info.run_id, filter_string="tag.model = 'tuned'", return_type="list")
    assert sorted(trace.data.spans[0].outputs for trace in tuned) == ["  ", "नमस्ते दोस्त"]
    # Hindi prompts answered in English that the judge scored above 0.5.
    toxic = mlflow.search_traces(run_id=run.info.run_id, return_type="list", filter_string=(
        "tag.lang = 'hi' AND feedback.detected_language = 'en' AND feedback.toxicity > 0.5"))
    assert [trace.data.spans[0].outputs for trace in toxic] == ["you are stupid"]


def test_bad_input_is_refused_early(sqlite_tracking):
    with pytest.raises(ValueError, match=r"missing \['judge'\]"):
        with mlflow.start_run():
            log_completion_traces(completions().drop(columns="judge"), {}, SCORER)
    with pytest.raises(RuntimeError, match="active MLflow run"):
        log_completion_traces(completions(), {}, SCORER)
