"""Sampling with one random stream per (prompt, sample): paired and batch-independent."""

from __future__ import annotations

import pytest
import torch

from mbad.adapters import load_adapter
from mbad.config import GenerationConfig, ModelConfig, TrainConfig
from mbad.data import select
from mbad.generation import TopKTopPSampler, generate_completions, generate_for_targets, in_dtype, stream_uniforms
from mbad.models import load_base_model
from mbad.train.sft import train_sft_adapter


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_base_model(ModelConfig(name_or_path=str(tiny_model_dir)))


def test_streams_depend_on_their_key_and_seed_only():
    both = stream_uniforms(["a\0" + "0", "b\0" + "0"], steps=5, seed=1)
    alone = stream_uniforms(["b\0" + "0"], steps=5, seed=1)
    assert torch.equal(both[1], alone[0])
    assert not torch.equal(both[0], both[1])
    assert not torch.equal(stream_uniforms(["a\0" + "0"], 5, seed=2)[0], both[0])
    assert ((both >= 0) & (both < 1)).all()


def test_inverse_cdf_draws_follow_the_candidate_distribution():
    scores = torch.tensor([[2.0, 1.0, 0.5, -1.0]]).repeat(20_000, 1)
    sampler = TopKTopPSampler(temperature=1.0, top_k=0, top_p=1.0)
    sampler.start(stream_uniforms([str(i) for i in range(20_000)], steps=1, seed=0))
    drawn = sampler.draw(scores)
    frequencies = torch.bincount(drawn, minlength=4).double() / len(drawn)
    torch.testing.assert_close(frequencies, torch.softmax(scores[0].double(), -1), atol=0.01, rtol=0)


def test_a_completion_does_not_depend_on_batch_size_or_the_other_prompts(loaded, pairs):
    prompts = select(pairs, "test", ["en", "ru", "zh"], max_per_language=4)
    config = GenerationConfig(max_new_tokens=8, num_samples=2, batch_size=24, temperature=1.0, top_k=0, top_p=1.0, seed=5)
    together = generate_for_targets(loaded, prompts, config)
    one_at_a_time = generate_for_targets(loaded, prompts, config.model_copy(update={"batch_size": 1}))
    russian_only = generate_for_targets(loaded, prompts[prompts["lang"] == "ru"], config.model_copy(update={"batch_size": 3}))
    assert together["completion"].tolist() == one_at_a_time["completion"].tolist()
    merged = russian_only.merge(together, on=["pair_id", "sample"], suffixes=("_alone", "_together"))
    assert len(merged) == 8 and (merged["completion_alone"] == merged["completion_together"]).all()
    # Samples of one prompt differ (their streams do), and another seed changes them.
    assert together.groupby("pair_id")["completion"].nunique().max() == 2
    reseeded = generate_for_targets(loaded, prompts, config.model_copy(update={"seed": 6}))
    assert (reseeded["completion"] != together["completion"]).any()


def test_base_and_fine_tuned_models_share_random_streams(loaded, tiny_model_dir, pairs, tmp_path):
    """Common random numbers: an adapter that barely changes the model barely changes the
    completions, because both models draw each token with the same uniform number."""
    texts = select(pairs, "train", ["en"], max_per_language=8, role="adapter")["neutral"].tolist()
    train = TrainConfig(epochs=1, batch_size=4, learning_rate=1e-6, checkpoint_every=0)
    train_sft_adapter(texts, ModelConfig(name_or_path=str(tiny_model_dir)), train, tmp_path / "adapter")
    prompts = [f"Complete the sentence: {text}" for text in select(pairs, "test", ["en"], max_per_language=6)["toxic"]]
    config = GenerationConfig(max_new_tokens=8, num_samples=2, temperature=1.0, top_k=0, top_p=1.0, seed=9)
    base = generate_completions(loaded, prompts, config)
    tuned = generate_completions(load_adapter(load_base_model(ModelConfig(name_or_path=str(tiny_model_dir))), tmp_path / "adapter"),
                                 prompts, config)
    same = sum(a == b for prompt_a, prompt_b in zip(base, tuned) for a, b in zip(prompt_a, prompt_b))
    assert same >= 10, f"only {same} of 12 completions agree under common random numbers"
    # Unpaired (another seed for the tuned model) they would not.
    unpaired = generate_completions(loaded, prompts, config.model_copy(update={"seed": 10}))
    assert sum(a == b for prompt_a, prompt_b in zip(base, unpaired) for a, b in zip(prompt_a, prompt_b)) < same


def test_bfloat16_generation_samples_a_copy_and_leaves_the_callers_model_alone(loaded, tiny_model_dir, pairs, tmp_path):
    weights = {name: value.clone() for name, value in loaded.model.state_dict().items()}
    prompts = select(pairs, "test", ["en", "ru"], max_per_language=4)
    config = GenerationConfig(max_new_tokens=8, num_samples=2, batch_size=8, temperature=1.0, top_k=0, top_p=1.0, seed=5)
    as_loaded = generate_for_targets(loaded, prompts, config)
    bf16 = generate_for_targets(loaded, prompts, config.model_copy(update={"dtype": "bfloat16"}))
    assert len(bf16) == len(as_loaded) == 16 and bf16["completion"].str.len().gt(0).all()
    assert bf16[["pair_id", "sample"]].equals(as_loaded[["pair_id", "sample"]])
    # The caller's float32 model is untouched: same dtype, same weights, same completions again.
    assert loaded.model.dtype == torch.float32
    assert all(torch.equal(value, weights[name]) for name, value in loaded.model.state_dict().items())
    assert generate_for_targets(loaded, prompts, config)["completion"].tolist() == as_loaded["completion"].tolist()
    assert generate_for_targets(loaded, prompts, config.model_copy(update={"dtype": "float32"})).equals(as_loaded)
    # A fine-tuned model (base + LoRA adapter) is copied with its adapter.
    texts = select(pairs, "train", ["en"], max_per_language=4, role="adapter")["neutral"].tolist()
    train_sft_adapter(texts, ModelConfig(name_or_path=str(tiny_model_dir)), TrainConfig(epochs=1, batch_size=4, checkpoint_every=0),
                       tmp_path / "adapter")
    tuned = load_adapter(load_base_model(ModelConfig(name_or_path=str(tiny_model_dir))), tmp_path / "adapter")
    tuned_bf16 = in_dtype(tuned, "bfloat16")
    assert tuned_bf16.model.dtype == torch.bfloat16 and tuned.model.dtype == torch.float32
    assert any("lora_" in name for name, _ in tuned_bf16.model.named_parameters())
    assert len(generate_for_targets(tuned, prompts, config.model_copy(update={"dtype": "bfloat16"}))) == 16
