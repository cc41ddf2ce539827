"""Print the latest detox_training run: the results table and where to look."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mbad.report import format_judge_quality, format_table  # noqa: E402
from mbad.tracking import tracking_uri  # noqa: E402


def main(pipeline_name: str = "detox_training") -> None:
    from zenml.client import Client

    client = Client()
    run = client.get_pipeline(pipeline_name).last_run
    report_step = run.steps["report"]
    table = report_step.outputs["detox_results"][0].load()
    metadata = report_step.run_metadata
    print("\nmbad quickstart: toxicity (judge: mean score of completions) and perplexity per target language")
    print(f"n prompts per language, k = {metadata.get('samples_per_prompt', '?')} sample(s) per prompt, "
          "paired 95 % bootstrap intervals in brackets")
    print(format_table(table))
    quality = run.steps["train_judge"].outputs["judge_quality"][0].load()
    print(f"\nThe judge ({metadata.get('judge', '?')}): held-out ROC-AUC on the test pairs, 95 % bootstrap interval")
    print(format_judge_quality(quality, sorted(table["target"].unique())))
    print("\nWhere to look:")
    print(f"  ZenML run:        {run.name} (status {run.status.value}); `zenml pipeline runs list`, dashboard: make ui")
    print(f"  MLflow run:       {metadata.get('mlflow_run_id', '?')} in {tracking_uri()} (experiment '{pipeline_name}')")
    registered = run.steps["register_model"].run_metadata
    print(f"  Registered model: {registered.get('mlflow_model_name', 'mbad-detox')} version {registered.get('mlflow_model_version', '?')}")
    print("  Dashboards:       make ui (ZenML :8237, MLflow :5000); completions per run: completions.json; serve: make serve")


if __name__ == "__main__":
    main(*sys.argv[1:])
