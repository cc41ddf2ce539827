"""Training, generation and knowledge probes on a tiny Gemma 3 built from a config."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from mbad.adapters import load_adapter, read_adapter_meta
from mbad.config import GenerationConfig, KnowledgeConfig, ModelConfig, TrainConfig
from mbad.data import select
from mbad.eval.probes import run_probes, summarise_probes
from mbad.generation import generate_completions, generate_for_targets
from mbad.model_files import resolve_model_path
from mbad.models import load_base_model, load_tokenizer
from mbad.train.data import shard_batches
from mbad.train.sft import train_sft_adapter

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_base_model(ModelConfig(name_or_path=str(tiny_model_dir)))


def test_generation_returns_only_the_completion(loaded, pairs):
    prompts = select(pairs, "test", ["en", "zh"], max_per_language=3)
    config = GenerationConfig(max_new_tokens=6, num_samples=2, batch_size=4, protocol="paper_instruction")
    completions = generate_for_targets(loaded, prompts, config)
    assert len(completions) == 6 * 2
    assert set(completions.groupby("pair_id")["sample"].nunique()) == {2}
    assert not completions["completion"].str.startswith("Complete the sentence").any()
    # Greedy: each completion equals decoding only the tokens generated after the prompt.
    prompt = "Complete the sentence: " + prompts["toxic"].iloc[0]
    ours = generate_completions(loaded, [prompt], GenerationConfig(max_new_tokens=6, temperature=0))[0][0]
    ids = loaded.tokenizer(prompt, return_tensors="pt")["input_ids"]
    output = loaded.model.generate(ids, do_sample=False, max_new_tokens=6, pad_token_id=loaded.tokenizer.pad_token_id)
    assert ours == loaded.tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()
    # The CPU output-layer shortcut is gone once generation is over.
    assert "forward" not in vars(loaded.model.get_output_embeddings())


def test_generation_is_seeded_and_independent_of_batch_order(loaded):
    prompts = ["Complete the sentence: a", "Complete the sentence: a much longer prompt than the first one"]
    config = GenerationConfig(max_new_tokens=5, batch_size=2, seed=3)
    assert generate_completions(loaded, prompts, config) == generate_completions(loaded, prompts, config)
    greedy = GenerationConfig(max_new_tokens=5, batch_size=1, temperature=0)
    batched = GenerationConfig(max_new_tokens=5, batch_size=2, temperature=0)
    # Left padding must not change what a prompt completes to.
    assert generate_completions(loaded, prompts, greedy) == generate_completions(loaded, prompts, batched)


def test_batched_generation_completes_prompts_as_generate_does_one_at_a_time(loaded, pairs):
    """Prompts of many lengths in one left-padded batch, one of them longer than the sliding window."""
    texts = select(pairs, "test", ["en", "ru", "zh"], max_per_language=4)["toxic"].tolist()
    prompts = [f"Complete the sentence: {text}" for text in texts] + ["Complete the sentence: " + " ".join(texts)]
    lengths = [len(loaded.tokenizer(prompt)["input_ids"]) for prompt in prompts]
    assert len(set(lengths)) > 4 and max(lengths) > loaded.model.config.sliding_window
    config = GenerationConfig(max_new_tokens=6, temperature=0, batch_size=len(prompts))
    expected = []
    for prompt in prompts:
        ids = loaded.tokenizer(prompt, return_tensors="pt")["input_ids"]
        output = loaded.model.generate(ids, do_sample=False, max_new_tokens=6, pad_token_id=loaded.tokenizer.pad_token_id)
        expected.append([loaded.tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()])
    assert generate_completions(loaded, prompts, config) == expected


def test_lora_training_lowers_the_loss_and_saves_an_adapter(tiny_model_dir, pairs, tmp_path):
    texts = select(pairs, "train", ["en"], max_per_language=16)["neutral"].tolist()
    model_config = ModelConfig(name_or_path=str(tiny_model_dir))
    config = TrainConfig(epochs=8, batch_size=4, learning_rate=5e-3, checkpoint_every=0)
    summary = train_sft_adapter(texts, model_config, config, tmp_path / "adapter")
    assert summary.steps == 8 * 4
    assert sum(summary.losses[-4:]) < sum(summary.losses[:4])
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {p.name for p in (tmp_path / "adapter").iterdir()}
    assert read_adapter_meta(tmp_path / "adapter")["base_model"]["name_or_path"] == str(tiny_model_dir)
    # The adapter changes the model: perplexity on its own training text falls.
    base = load_base_model(model_config)
    frame = pd.DataFrame({"lang": "en", "neutral": texts})
    in_domain = KnowledgeConfig(probes=["indomain_perplexity"])
    before = summarise_probes(run_probes(base, frame, in_domain))["indomain_perplexity"]["en"]
    after = summarise_probes(run_probes(load_adapter(base, tmp_path / "adapter"), frame, in_domain))["indomain_perplexity"]["en"]
    assert after < before


def test_batches_are_shared_out_evenly_between_processes():
    batches = [[i] for i in range(5)]
    shards = [shard_batches(batches, index, 2) for index in range(2)]
    assert shards == [[[0], [2], [4]], [[1], [3], [0]]]  # same length; the last round wraps around
    assert shard_batches(batches, 0, 1) == batches


def test_training_with_two_processes_shares_the_batches(tiny_model_dir, pairs, tmp_path):
    """`num_processes: 2` starts two data-parallel processes (gloo on CPU, NCCL on GPUs)."""
    texts = select(pairs, "train", ["en"], max_per_language=16)["neutral"].tolist()
    model_config = ModelConfig(name_or_path=str(tiny_model_dir))
    config = TrainConfig(epochs=6, batch_size=4, learning_rate=5e-3, checkpoint_every=0, num_processes=2)
    summary = train_sft_adapter(texts, model_config, config, tmp_path / "adapter")
    # 4 batches a epoch, 2 for each process: 2 optimizer steps a epoch, every sentence seen once.
    assert summary.steps == 6 * 2
    tokenizer = load_base_model(model_config).tokenizer
    assert summary.tokens == 6 * sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"])
    assert sum(summary.losses[-3:]) < sum(summary.losses[:3])
    assert read_adapter_meta(tmp_path / "adapter")["summary"]["steps"] == summary.steps
    base = load_base_model(model_config)
    frame = pd.DataFrame({"lang": "en", "neutral": texts})
    in_domain = KnowledgeConfig(probes=["indomain_perplexity"])
    before = summarise_probes(run_probes(base, frame, in_domain))["indomain_perplexity"]["en"]
    after = summarise_probes(run_probes(load_adapter(base, tmp_path / "adapter"), frame, in_domain))["indomain_perplexity"]["en"]
    assert after < before


def test_two_processes_follow_the_schedule_and_weights_of_one_on_the_same_global_batch(tiny_model_dir, pairs, tmp_path):
    """N data-parallel processes of batch B must train what one process does with batch B and N
    accumulation steps: the same learning rate at every optimizer step (linear decay to 0 at the
    end, not N times faster) and, within float tolerance, the same adapter."""
    from safetensors.torch import load_file

    texts = select(pairs, "train", ["en"], max_per_language=16)["neutral"].tolist()
    model_config = ModelConfig(name_or_path=str(tiny_model_dir))
    common = {"epochs": 3, "batch_size": 4, "learning_rate": 5e-3, "checkpoint_every": 0, "lora": {"dropout": 0.0}}
    two = train_sft_adapter(texts, model_config, TrainConfig(**common, num_processes=2), tmp_path / "two")
    one = train_sft_adapter(texts, model_config, TrainConfig(**common, gradient_accumulation_steps=2), tmp_path / "one")

    total = 3 * 2  # 4 batches an epoch, 2 in each optimizer step
    assert one.steps == two.steps == total
    expected = [5e-3 * (1 - step / total) for step in range(total)]
    assert one.learning_rates == pytest.approx(expected)
    assert two.learning_rates == pytest.approx(expected)
    assert two.losses == pytest.approx(one.losses, rel=1e-3)
    weights = [load_file(tmp_path / name / "adapter_model.safetensors") for name in ("two", "one")]
    assert weights[0].keys() == weights[1].keys()
    difference = sum(float((weights[0][key] - weights[1][key]).norm()) ** 2 for key in weights[1]) ** 0.5
    lora_b = sum(float(weights[1][key].norm()) ** 2 for key in weights[1] if "lora_B" in key) ** 0.5  # 0 at the start
    assert lora_b > 0 and difference < 0.01 * lora_b, (difference, lora_b)


def start_training(texts: list[str], model_dir: Path, config: TrainConfig, adapter: Path, checkpoints: Path,
                   tmp_path: Path) -> subprocess.Popen:
    """`train_sft_adapter` in a process of its own, which a test may kill."""
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    script = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, %r)\n"
        "from mbad.config import ModelConfig, TrainConfig\nfrom mbad.train.sft import train_sft_adapter\n"
        "train_sft_adapter(json.loads(Path(%r).read_text()), ModelConfig(name_or_path=%r), "
        "TrainConfig(**json.loads(%r)), Path(%r), Path(%r))\n"
    ) % (str(REPO_ROOT), str(tmp_path / "texts.json"), str(model_dir), config.model_dump_json(), str(adapter),
         str(checkpoints))
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(path: Path, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while not path.exists():
        assert process.poll() is None and time.time() < deadline, f"training ended before {path} appeared"
        time.sleep(0.01)


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_killed_training_resumes_from_its_checkpoint(tiny_model_dir, pairs, tmp_path):
    texts = select(pairs, "train", ["en"])["neutral"].tolist()
    config = TrainConfig(epochs=2, batch_size=2, checkpoint_every=1)
    process = start_training(texts, tiny_model_dir, config, tmp_path / "adapter", tmp_path / "ckpt", tmp_path)
    wait_for(tmp_path / "ckpt" / "state.pt", process)
    time.sleep(0.3)
    kill(process)
    assert not (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    saved_step = torch.load(tmp_path / "ckpt" / "state.pt", weights_only=False)["step"]
    assert saved_step >= 1

    summary = train_sft_adapter(texts, ModelConfig(name_or_path=str(tiny_model_dir)), config,
                                 tmp_path / "adapter", tmp_path / "ckpt")
    assert summary.resumed_from_step == saved_step
    assert summary.steps == 2 * 150
    assert not (tmp_path / "ckpt" / "state.pt").exists()


def test_a_training_started_over_on_another_machine_resumes_from_the_durable_copy(tiny_model_dir, pairs, tmp_path):
    """A pod killed mid-training and rescheduled onto a node with an empty disk: the mirror's
    copy in the artifact store brings the checkpoint back, and training goes on from it."""
    from zenml.io import fileio

    from mbad.train.checkpoints import CheckpointMirror

    texts = select(pairs, "train", ["en"])["neutral"].tolist()
    config = TrainConfig(epochs=2, batch_size=2, checkpoint_every=1)
    durable, first, second = str(tmp_path / "artifact-store" / "ckpt"), tmp_path / "pod-1", tmp_path / "pod-2"
    mirror = CheckpointMirror(first / "ckpt", durable, fileio, interval_s=0.02).start()
    process = start_training(texts, tiny_model_dir, config, first / "adapter", first / "ckpt", tmp_path)
    wait_for(Path(durable) / "state.pt", process)
    kill(process)
    mirror.finish(trained=False)  # the last local checkpoint, copied
    copied = torch.load(Path(durable) / "state.pt", weights_only=False)["step"]
    assert copied == torch.load(first / "ckpt" / "state.pt", weights_only=False)["step"] >= 1
    shutil.rmtree(first)  # the node and its disk are gone

    restarted = CheckpointMirror(second / "ckpt", durable, fileio, interval_s=0.02)
    assert restarted.restore() and not restarted.restore()  # once; a local checkpoint is never overwritten
    restarted.start()
    summary = train_sft_adapter(texts, ModelConfig(name_or_path=str(tiny_model_dir)), config,
                                 second / "adapter", second / "ckpt")
    restarted.finish(trained=True)
    assert summary.resumed_from_step == copied and summary.steps == 2 * 150
    assert (second / "adapter" / "adapter_model.safetensors").exists()
    assert not Path(durable, "state.pt").exists()  # done: the adapter is the result


def test_perplexity_is_per_language_and_finite(loaded, pairs):
    config = KnowledgeConfig(probes=["indomain_perplexity"], batch_size=2)
    results = summarise_probes(run_probes(loaded, select(pairs, "test", ["en", "am"], max_per_language=5), config))
    assert set(results["indomain_perplexity"]) == {"en", "am"}
    assert all(1 < value < float("inf") for value in results["indomain_perplexity"].values())


def test_unknown_probe_and_cpu_qlora_are_clear_errors(loaded, pairs, tiny_model_dir):
    with pytest.raises(ValueError, match="unknown knowledge probe"):
        run_probes(loaded, pairs.head(2), KnowledgeConfig(probes=["mmlu"]))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs CUDA"):
            load_base_model(ModelConfig(name_or_path=str(tiny_model_dir), quantization="4bit"))


def test_the_tokenizer_is_read_once_per_process_and_again_when_its_files_change(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    left, right = load_tokenizer(str(model_dir)), load_tokenizer(str(model_dir), padding_side="right")
    assert left.backend_tokenizer is right.backend_tokenizer  # parsed once
    pad = left.pad_token_id
    assert left.pad({"input_ids": [[5], [5, 6]]})["input_ids"][0] == [pad, 5]
    assert right.pad({"input_ids": [[5], [5, 6]]})["input_ids"][0] == [5, pad]  # each its own side

    vocabulary = len(left)
    time.sleep(0.01)  # a later modification time even on coarse clocks
    changed = AutoTokenizer.from_pretrained(model_dir)
    changed.add_tokens(["<brand-new-token>"])
    changed.save_pretrained(model_dir)
    reread = load_tokenizer(str(model_dir))
    assert reread.backend_tokenizer is not left.backend_tokenizer
    assert len(reread) == vocabulary + 1


def test_model_paths(tmp_path):
    assert resolve_model_path("CohereForAI/aya-expanse-8b") == "CohereForAI/aya-expanse-8b"
    with pytest.raises(ValueError, match="unknown packaged model"):
        resolve_model_path("packaged:nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model_path(str(tmp_path / "empty"))
