"""DPO on a tiny Gemma 3: preferences from the train pairs, the loss against its closed form,
training that prefers the neutral continuation, and kill-and-resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from mbad.adapters import load_adapter, read_adapter_meta
from mbad.config import DetoxConfig, ModelConfig, TrainConfig
from mbad.data import select
from mbad.lm_head import split_lm_head
from mbad.models import load_base_model
from mbad.train.dpo import (
    collate_preferences,
    dpo_loss,
    preference_margins,
    preference_pairs,
    sequence_logps,
    tokenize_preferences,
    train_dpo_adapter,
)
from tests.conftest import REPO_ROOT


def test_preferences_cut_both_sentences_at_the_same_place_and_use_the_evaluation_prompt():
    pairs = preference_pairs(["you are a damn fool today", "短句子很坏", "same same"], ["you are wrong today", "短句子不好", "same same"],
                             ["en", "zh", "en"], "paper_instruction")
    assert [pair.prompt for pair in pairs] == ["Complete the sentence: you are a", "Complete the sentence: 短句子"]
    assert pairs[0].rejected == " damn fool today" and pairs[0].chosen == " wrong today"
    assert pairs[1].rejected == "很坏" and pairs[1].chosen == "不好"  # characters where there are no spaces
    assert DetoxConfig(generation={"protocol": "continuation"}).train.dpo.protocol == "continuation"


def test_the_loss_equals_the_closed_form_on_the_same_batch(tiny_model_dir, pairs):
    loaded = load_base_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    train = select(pairs, "train", ["en", "ru"], max_per_language=4)
    preferences = preference_pairs(train["toxic"].tolist(), train["neutral"].tolist(), train["lang"].tolist())
    examples = tokenize_preferences(loaded.tokenizer, preferences, 64)
    batch = collate_preferences(examples, loaded.tokenizer.pad_token_id)
    # The closed form, from the full logits of a plain forward pass.
    logits = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    token_logps = logits[:, :-1].log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    expected = (token_logps * (batch["labels"][:, 1:] != -100)).sum(-1)
    fused = sequence_logps(loaded.model, split_lm_head(loaded.model), batch)
    torch.testing.assert_close(fused.float(), expected, rtol=1e-6, atol=1e-4)  # float32 sums of ~60 in another order
    torch.testing.assert_close(sequence_logps(loaded.model, None, batch).float(), expected, rtol=1e-6, atol=1e-5)
    reference = expected.detach() + torch.linspace(-1, 1, expected.shape[0])
    loss, margins = dpo_loss(expected, reference, beta=0.1)
    half = len(examples)
    closed = -F.logsigmoid(0.1 * ((expected[:half] - reference[:half]) - (expected[half:] - reference[half:]))).mean()
    torch.testing.assert_close(loss, closed, rtol=0, atol=1e-6)
    # The training path (fused log-probabilities) gives the closed-form loss to 1e-5.
    torch.testing.assert_close(dpo_loss(fused.float(), reference, 0.1)[0], closed, rtol=0, atol=1e-5)
    assert margins.shape == (half,)
    # Its gradient through the fused head equals the plain one (for what LoRA trains: the head,
    # tied to the embedding, stays frozen, so compare an attention projection's).
    projection = dict(loaded.model.named_parameters())["model.layers.0.self_attn.q_proj.weight"]
    grads = []
    for head in (split_lm_head(loaded.model), None):
        loaded.model.zero_grad()
        dpo_loss(sequence_logps(loaded.model, head, batch), reference, 0.1)[0].backward()
        grads.append(projection.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-6)
    assert grads[0].abs().sum() > 0


def test_dpo_lowers_its_loss_and_prefers_the_neutral_continuation(tiny_model_dir, pairs, tmp_path):
    train = select(pairs, "train", ["en"], max_per_language=16)
    toxic, neutral, languages = train["toxic"].tolist(), train["neutral"].tolist(), train["lang"].tolist()
    model_config = ModelConfig(name_or_path=str(tiny_model_dir))
    config = TrainConfig(method="dpo", epochs=6, batch_size=4, learning_rate=5e-3, checkpoint_every=0)
    summary = train_dpo_adapter(toxic, neutral, languages, model_config, config, tmp_path / "adapter")
    assert summary.steps == 6 * 4
    assert summary.losses[0] == pytest.approx(0.693, abs=0.01)  # log 2: the adapter starts as the identity
    assert sum(summary.losses[-4:]) < sum(summary.losses[:4])
    assert read_adapter_meta(tmp_path / "adapter")["train"]["method"] == "dpo"
    tuned = load_adapter(load_base_model(model_config), tmp_path / "adapter")
    margins = preference_margins(tuned, toxic, neutral, languages, config)
    # The chosen (neutral) log-ratio now rises above the rejected (toxic) one, pair after pair.
    assert margins.mean() > 0 and (margins > 0).float().mean() > 0.8


def test_killed_dpo_training_resumes_from_its_checkpoint(tiny_model_dir, pairs, tmp_path):
    train = select(pairs, "train", ["en"], max_per_language=80)
    (tmp_path / "pairs.json").write_text(json.dumps([train["toxic"].tolist(), train["neutral"].tolist(), train["lang"].tolist()]))
    config = TrainConfig(method="dpo", epochs=2, batch_size=2, checkpoint_every=1)
    script = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, %r)\n"
        "from mbad.config import ModelConfig, TrainConfig\nfrom mbad.train.dpo import train_dpo_adapter\n"
        "toxic, neutral, languages = json.loads(Path(%r).read_text())\n"
        "train_dpo_adapter(toxic, neutral, languages, ModelConfig(name_or_path=%r), TrainConfig(**json.loads(%r)), Path(%r), Path(%r))\n"
    ) % (str(REPO_ROOT), str(tmp_path / "pairs.json"), str(tiny_model_dir), config.model_dump_json(),
         str(tmp_path / "adapter"), str(tmp_path / "ckpt"))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not (tmp_path / "ckpt" / "state.pt").exists():
        assert process.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
        time.sleep(0.01)
    time.sleep(0.3)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    saved_step = torch.load(tmp_path / "ckpt" / "state.pt", weights_only=False)["step"]
    assert saved_step >= 1

    summary = train_dpo_adapter(train["toxic"].tolist(), train["neutral"].tolist(), train["lang"].tolist(),
                                ModelConfig(name_or_path=str(tiny_model_dir)), config, tmp_path / "adapter", tmp_path / "ckpt")
    assert summary.resumed_from_step == saved_step and summary.steps == 2 * math.ceil(summary.examples / 2)
    assert not (tmp_path / "ckpt" / "state.pt").exists()
