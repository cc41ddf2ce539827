"""A causal LM's output layer taken apart: the backbone, the projection to the vocabulary, and
token NLLs computed from them a chunk of tokens at a time, so that the (tokens, vocab) logits
never exist at once. Training's fused loss and the evaluation's scoring both use it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import PeftModel


@dataclass(frozen=True)
class LMHead:
    """A causal LM split at its output projection: logits = scale * backbone(ids) @ weight.T."""

    backbone: torch.nn.Module
    weight: torch.Tensor
    scale: float = 1.0


# Logit transforms other than a plain multiplier: such models keep the library's own loss.
_UNSUPPORTED_LOGIT_TRANSFORMS = ("final_logit_softcapping", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def split_lm_head(model: torch.nn.Module) -> LMHead | None:
    """The backbone and projection of a causal LM (peft-wrapped or not), or None when its
    logits are more than a scaled projection of the last hidden state (softcapping, a biased
    or trained head, an encoder-decoder): those go through `model(...)` as usual."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    config = base.config
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    text_config = config.get_text_config()
    if (
        config.is_encoder_decoder
        or not isinstance(head, torch.nn.Linear)
        or head.bias is not None
        or any(getattr(text_config, name, None) is not None for name in _UNSUPPORTED_LOGIT_TRANSFORMS)
        or not hasattr(base, base.base_model_prefix)
    ):
        return None
    return LMHead(getattr(base, base.base_model_prefix), head.weight, float(getattr(text_config, "logit_scale", None) or 1.0))


# One chunk of logits holds about this many floats (256 tokens x Gemma's 262k vocabulary, 256 MB in
# float32): bounded memory at any batch size, yet chunks big enough that CPU matmuls stay efficient.
LOGITS_PER_CHUNK = 2**26


@torch.no_grad()
def chunked_token_nll(
    hidden: torch.Tensor, head: LMHead, targets: torch.Tensor, with_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token NLL of `targets` under `hidden @ head.weight.T`, a chunk of tokens at a time,
    so that the (tokens, vocab) float32 logits never exist at once. With `with_grad`, also
    d(sum NLL)/d(hidden), computed in the same pass: (softmax - one_hot) @ weight. Autograd
    records nothing here: the gradient is this one, handed on by the callers' own backward."""
    weight, chunk = head.weight, max(1, LOGITS_PER_CHUNK // head.weight.shape[0])
    nll = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    grad = torch.empty_like(hidden) if with_grad else None
    # Every chunk's logits go into one buffer, and the log-normaliser is computed in it: a new
    # tensor of this size per chunk would be mapped and zeroed by the kernel page by page, each
    # time, which on a CPU costs a large share of the products themselves (docs/performance.md).
    buffer = hidden.new_empty(min(chunk, hidden.shape[0]), weight.shape[0], dtype=weight.dtype)
    for start in range(0, hidden.shape[0], chunk):
        rows = slice(start, start + chunk)
        logits = torch.mm(hidden[rows].to(weight.dtype), weight.T, out=buffer[: min(chunk, hidden.shape[0] - start)]).float()
        if head.scale != 1.0:
            logits.mul_(head.scale)
        target = targets[rows, None]
        target_logit = logits.gather(-1, target)
        if grad is None:
            log_normaliser = _logsumexp_in_place(logits)
        else:
            log_normaliser = logits.logsumexp(dim=-1, keepdim=True)
            probs = logits.sub_(log_normaliser).exp_()  # in place: one chunk of logits alive
            probs.scatter_add_(-1, target, torch.full_like(target, -1.0, dtype=probs.dtype))
            if head.scale != 1.0:
                probs.mul_(head.scale)
            grad[rows] = (probs.to(weight.dtype) @ weight).to(hidden.dtype)
        nll[rows] = (log_normaliser - target_logit).squeeze(-1)
    return nll, grad


def _logsumexp_in_place(logits: torch.Tensor) -> torch.Tensor:
    """`logits.logsumexp(-1, keepdim=True)`, the same operations in the same order (so the same
    numbers), with `logits` itself overwritten instead of a copy of it made."""
    maxes = logits.amax(dim=-1, keepdim=True)
    maxes.masked_fill_(maxes.abs() == float("inf"), 0)
    return logits.sub_(maxes).exp_().sum(dim=-1, keepdim=True).log_().add_(maxes)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Summed NLL whose gradient was computed alongside it: backward only scales it. Costs the
    same two matmuls as logits + cross-entropy, with one chunk of logits in memory. The head
    must be frozen (LoRA trains the backbone only)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, head: LMHead, targets: torch.Tensor) -> torch.Tensor:
        nll, grad = chunked_token_nll(hidden.detach(), head, targets, with_grad=True)
        ctx.save_for_backward(grad)
        return nll.sum()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_output.to(grad.dtype), None, None


def causal_lm_loss(head: LMHead, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token NLL over the labelled positions (what `model(**batch).loss` returns),
    with the output projection applied to those positions only."""
    hidden = head.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    labels = batch["labels"][:, 1:]
    labelled = labels != -100
    total = _FusedLinearCrossEntropy.apply(hidden.last_hidden_state[:, :-1][labelled], head, labels[labelled])
    return total / labelled.sum().clamp(min=1)
