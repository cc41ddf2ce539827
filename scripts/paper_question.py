"""The paper's question on the within-language measure: does an adapter trained on one language's
neutral text lower toxicity in *text* of other languages, and does it follow script?

    python scripts/paper_question.py [--prompts 100] [--samples 1] [--methods sft dpo] [--out FILE]

Runs the quickstart's pipeline (`configs/quickstart.yaml`: gemma-3-270m, adapter trained on
English, targets en es ru hi) once per training method, on `--prompts` test prompts per target
language (100 is all of them) under the default prompt protocol, registered as
`mbad-detox-paper-question` so that `make promote` never sees these versions. Then prints, per
method, the quickstart's table (total, within-language and switching changes, in-language shares),
the means of those changes over targets that share the source's script or do not (intervals from
one prompt resample per target, `mbad.sweep.aggregate_by_script`), and DPO against SFT on the same
prompts. ZenML caches the base model's steps, so the second method reuses them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from mbad.config import DetoxConfig  # noqa: E402
from mbad.eval.compare import ModelEvidence, compare_models  # noqa: E402
from mbad.eval.decomposition import DECOMPOSED, SWITCHING, WITHIN  # noqa: E402
from mbad.languages import LanguageRegistry  # noqa: E402
from mbad.paths import mbad_home  # noqa: E402
from mbad.report import format_table  # noqa: E402
from mbad.sweep import aggregate_by_script  # noqa: E402

REGISTERED_AS = "mbad-detox-paper-question"


def run_config(method: str, prompts: int, samples: int, run_name: str) -> Path:
    """configs/quickstart.yaml with the method, the prompt count and the registry name replaced."""
    spec = yaml.safe_load((REPO_ROOT / "configs" / "quickstart.yaml").read_text())
    spec["run_name"] = run_name
    config = spec["parameters"]["config"]
    config["train"]["method"] = method
    config["generation"].update(max_prompts_per_language=prompts, num_samples=samples)
    config.setdefault("registry", {})["model_name"] = REGISTERED_AS
    path = mbad_home() / "paper_question" / f"{run_name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def evidence(run, role: str) -> ModelEvidence:
    """A model's evaluation in a detox_training run: its steps are `<kind>_base` and `<kind>_tuned`."""
    return ModelEvidence.from_outputs(lambda step, output: run.steps[step].outputs[output][0].load(),
                                      lambda kind: f"{kind}_{role}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=100, help="test prompts per target language (100: all)")
    parser.add_argument("--samples", type=int, default=1, help="completions per prompt")
    parser.add_argument("--methods", nargs="+", default=["sft", "dpo"])
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    from zenml.client import Client

    runs = {}
    for method in args.methods:
        run_name = f"paper_question_{method}_{time.strftime('%Y%m%d_%H%M%S')}"
        config_path = run_config(method, args.prompts, args.samples, run_name)
        subprocess.run([str(Path(sys.executable).parent / "zenml"), "pipeline", "run", "pipelines.training.detox_training",
                        "-c", str(config_path)], check=True, cwd=REPO_ROOT)
        runs[method] = Client().get_pipeline_run(run_name)

    config = DetoxConfig.model_validate(yaml.safe_load(config_path.read_text())["parameters"]["config"])
    threshold, statistics = config.judge.threshold, config.statistics
    registry = LanguageRegistry.from_yaml(config.data.languages_file)
    source = config.train.source_languages[0]
    base = evidence(runs[args.methods[0]], "base")
    lines = [f"Adapter trained on {source}; targets {', '.join(config.target_languages)}; {args.prompts} test prompts per "
             f"language x {args.samples} sample(s); protocol {config.generation.protocol}; judge {base.judge}; "
             f"paired 95 % intervals, {statistics.n_resamples} resamples."]
    tuned = {}
    for method, run in runs.items():
        tuned[method] = evidence(run, "tuned")
        comparison = compare_models(base, tuned[method], threshold, statistics)
        aggregates = [aggregate_by_script(comparison.base, {source: comparison.tuned}, registry, figure=figure,
                                          config=statistics).assign(figure=figure) for figure in (DECOMPOSED, WITHIN)]
        by_script = pd.concat(aggregates, ignore_index=True).query("by == 'script'")
        lines += [f"\n== {method.upper()} (ZenML run {run.name}) ==", format_table(comparison.estimates),
                  "\nMean % change over targets, by script relative to the source:",
                  by_script[["figure", "group", "mean", "ci_low", "ci_high", "count", "prompts"]].round(1).to_string(index=False)]
    if len(tuned) == 2:
        first, second = args.methods
        versus = compare_models(tuned[first], tuned[second], threshold, statistics).estimates
        rows = versus[versus["metric"].isin([DECOMPOSED, WITHIN, SWITCHING])]
        lines += [f"\n== {second.upper()} vs {first.upper()} (change in % of {first.upper()}'s value, same prompts) ==",
                  rows[["target", "metric", "base", "tuned", "change_pct", "change_pct_low", "change_pct_high", "n"]]
                  .round(3).to_string(index=False)]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
