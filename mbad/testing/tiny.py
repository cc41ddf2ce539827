"""Tiny models built from a config, for tests and benchmarks of the machinery.

They have the shapes of the real ones (Gemma 3 layers, a byte-level BPE tokenizer trained
on the given texts) but a few hundred thousand weights, so that a whole pipeline runs on
a CPU in seconds. Their numbers mean nothing.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    PreTrainedTokenizerFast,
)


def train_tiny_tokenizer(texts: list[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<pad>", "<bos>", "<eos>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    from tokenizers.processors import TemplateProcessing

    tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


def build_tiny_causal_lm(output_dir: Path, texts: list[str], seed: int = 0, head_dim: int = 16) -> Path:
    """A 2-layer Gemma 3 text model with a tokenizer trained on `texts`, saved to `output_dir`."""
    import torch

    torch.manual_seed(seed)
    tokenizer = train_tiny_tokenizer(texts)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=head_dim, max_position_embeddings=512,
        sliding_window=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    model = Gemma3ForCausalLM(config)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return Path(output_dir)


def build_tiny_classifier(output_dir: Path, texts: list[str], seed: int = 0) -> Path:
    """A 1-layer BERT sequence classifier (2 labels), for the `hf` judge backend."""
    import torch

    torch.manual_seed(seed)
    tokenizer = train_tiny_tokenizer(texts)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=512, num_labels=2, pad_token_id=0,
    )
    BertForSequenceClassification(config).save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return Path(output_dir)
