"""The model card of a registered version: markdown, stored as the version's description in the
MLflow registry, as the run artifact `model_card.md`, and as the adapter's README.md."""

from __future__ import annotations

import pandas as pd

from mbad.protocols import get_protocol
from mbad.report import format_table
from mbad.train.methods import METHODS

GEMMA_TERMS = (
    "The packaged base model google/gemma-3-270m is provided under and subject to the Gemma Terms of Use "
    "(https://ai.google.dev/gemma/terms) and its Prohibited Use Policy (https://ai.google.dev/gemma/prohibited_use_policy). "
    "This adapter is a Model Derivative: anyone who uses or distributes it agrees to those terms and must pass them on."
)


def model_card(config: dict, estimates: pd.DataFrame, judge: dict[str, str], data_hash: str, data_source: str,
               run_id: str, zenml_run: str) -> str:
    """Markdown: what was trained on what, how, results with intervals, the judge, limitations, terms."""
    train, generation, model = config["train"], config["generation"], config["model"]
    method = train.get("method", "sft")
    protocol = get_protocol(generation["protocol"])
    objective = METHODS[method].describe(train)
    toxicity = estimates[estimates["metric"] == "toxicity_mean"]
    n_prompts = ", ".join(f"{row.target} {int(row.n)}" for row in toxicity.itertuples()) or "-"
    lines = [
        f"# {config.get('registry', {}).get('model_name', 'mbad-detox')}: LoRA detoxification adapter",
        "",
        f"- **Base model**: `{model['name_or_path']}` "
        f"(dtype {model.get('dtype', 'auto')}, quantization {model.get('quantization', 'none')})",
        f"- **Method**: {method.upper()} — {objective}; LoRA r={train['lora']['r']}, alpha={train['lora']['alpha']}, "
        f"{train['epochs']} epoch(s), learning rate {train['learning_rate']}",
        f"- **Training data**: MultiParaDetox (`{data_source}`, content hash `{data_hash}`), adapter-role train pairs of "
        f"{', '.join(train['source_languages'])}" + (f", at most {train['max_examples_per_language']} per language"
                                                       if train.get("max_examples_per_language") else ""),
        f"- **Evaluated languages**: {', '.join(config['target_languages'])} (test split; prompts per language: {n_prompts}; "
        f"{generation['num_samples']} sample(s) per prompt, T={generation['temperature']}, top-p {generation['top_p']}, "
        f"top-k {generation['top_k']}, {generation['max_new_tokens']} new tokens)",
        f"- **Prompts**: protocol `{protocol.name}`, {protocol.description} — numbers under another protocol are not "
        "comparable with these",
        f"- **Toxicity judge**: `{judge.get('name', '')}` — numbers from another judge are not comparable with these",
        f"- **Lineage**: MLflow run `{run_id}`, ZenML run `{zenml_run}`",
        "",
        "## Results: base vs this adapter, paired 95 % bootstrap intervals (clustered by prompt / probe item)",
        "",
        "```",
        format_table(estimates),
        "```",
        "",
        "## Limitations",
        "",
        "- Toxicity is measured by an offline classifier trained on MultiParaDetox's judge-role pairs; it is not a human "
        "judgement, and its quality (held-out ROC-AUC, style bias) is logged with the run as `judge_auc/<lang>` and "
        "`judge_style_bias/<lang>`.",
        f"- The prompts are the test split's toxic sentences in the form of protocol `{protocol.name}`; other prompt forms, "
        "longer contexts or chat use were not evaluated.",
        "- An interval that includes 0 is no evidence of an effect; promotion to `champion` is decided by the gate on "
        "interval bounds, not by this card.",
        "- Knowledge cost is probed by perplexity (in-domain, UDHR) and a capitals multiple-choice test per language; these "
        "are narrow probes of general ability.",
        "",
        "## Terms of use",
        "",
        GEMMA_TERMS if "gemma" in model["name_or_path"].lower() else
        f"The base model `{model['name_or_path']}` is under its own licence; this adapter inherits its terms.",
        "",
        "## Use",
        "",
        "```python",
        "import mlflow",
        "model = mlflow.pyfunc.load_model('models:/mbad-detox@champion')",
        f"model.predict([{protocol.frame('...', 'en')!r}])  # prompts of protocol `{protocol.name}`, as evaluated",
        "```",
        "",
    ]
    return "\n".join(lines)
