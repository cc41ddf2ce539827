"""The gate's error rates by simulation: false promotions of a no-effect model, the test's size at
the bar, and its power for a true -30 % effect, per prompts per language; writes the JSON the
docs/gate.md's table and the power test read. `--scenario switching` instead asks how often a
challenger that only answers off-language more often (`mbad.eval.power.SWITCHING_ONLY`) is
promoted, by the gate's within-language claim and by a claim on the total change.

    python scripts/gate_power.py --fit-runs 2            # score model fitted to the last two detox_training runs
    python scripts/gate_power.py --simulations 400 --out docs/gate_power.json
    python scripts/gate_power.py --scenario switching --out docs/gate_power_switching.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mbad.eval.power import SWITCHING_ONLY, ScoreModel, prompts_for_power, simulate_gate  # noqa: E402
from mbad.gate import GateConfig  # noqa: E402


def fitted_from_runs(count: int) -> tuple[ScoreModel, str]:
    """The score model of the newest `count` completed detox_training runs on the same prompts:
    each run's base-model scores are one more sample of each prompt (runs with different
    `generation.seed` sample independently), its fine-tuned scores give the pairing."""
    from zenml.client import Client

    runs = Client().list_pipeline_runs(pipeline_name="detox_training", sort_by="desc:created", size=50).items
    chosen = [run for run in runs if run.status.value == "completed" and "score_base" in run.steps][:count]
    if not chosen:
        raise SystemExit("no completed detox_training run with scores: run `make run` first, or leave out --fit-runs")
    bases, tuned = [], []
    for run in chosen:
        base = run.steps["score_base"].outputs["toxicity_scores"][0].load()
        bases.append(base)
        tuned.append(run.steps["score_tuned"].outputs["toxicity_scores"][0].load())
    prompts = set.intersection(*(set(zip(frame["lang"], frame["pair_id"])) for frame in bases))
    names = ", ".join(run.name for run in chosen)
    base_runs = [frame[[key in prompts for key in zip(frame["lang"], frame["pair_id"])]] for frame in bases]
    return (ScoreModel.fit(base_runs, tuned),
            f"zenml runs {names} ({len(prompts)} prompts, {sum(map(len, base_runs))} base completions)")


def rate(result) -> dict:
    low, high = result.interval()
    return {"rate": result.rate, "ci_low": low, "ci_high": high, "simulations": result.simulations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulations", type=int, default=200)
    parser.add_argument("--languages", default="en,es,ru,hi")
    parser.add_argument("--k", type=int, default=1, help="samples per prompt")
    parser.add_argument("--prompts", default="32,64,128,256", help="prompts per language to simulate")
    parser.add_argument("--power-at", type=int, default=32, help="the n whose power the test re-checks (the quickstart's)")
    parser.add_argument("--effect", type=float, default=-30.0)
    parser.add_argument("--fit-runs", type=int, default=0, help="fit the score model to the newest N detox_training runs")
    parser.add_argument("--scenario", choices=["effects", "switching"], default="effects",
                        help="effects: no effect, at the bar, a true effect; switching: a switching-only challenger")
    parser.add_argument("--out", type=Path, default=Path("docs/gate_power.json"))
    args = parser.parse_args()

    model, source = fitted_from_runs(args.fit_runs) if args.fit_runs else (ScoreModel(), "defaults")
    # The statistics of the default gate; the minimum n is lifted so small n can be studied.
    gate = GateConfig(min_prompts_per_language=1)
    languages = args.languages.split(",")
    grid = [int(n) for n in args.prompts.split(",")]
    common = {"model": model, "gate": gate, "languages": languages, "k": args.k, "simulations": args.simulations}
    pooled = {**common, "gate": gate.model_copy(update={"aggregate": "mean"})}
    bar = -gate.min_toxicity_reduction_pct
    conditions = [("no_effect", 0.0, common), ("at_bar", bar, common), ("effect", args.effect, common),
                  ("no_effect_mean_rule", 0.0, pooled), ("at_bar_mean_rule", bar, pooled),
                  ("effect_mean_rule", args.effect, pooled)]
    if args.scenario == "switching":
        # No change within any language: only the challenger's language mix differs.
        on_total = {"toxicity_claim": "total"}
        conditions = [(label, 0.0, {**setting, "mix": SWITCHING_ONLY, "gate": setting["gate"].model_copy(update=update)})
                      for label, setting, update in (
                          ("switching_within_claim", common, {}), ("switching_total_claim", common, on_total),
                          ("switching_within_claim_mean_rule", pooled, {}),
                          ("switching_total_claim_mean_rule", pooled, on_total))]
    rows = []
    for n in grid:
        row = {"n_prompts": n}
        for label, effect, setting in conditions:
            row[label] = rate(simulate_gate(n_prompts=n, effect_pct=effect, seed=n, progress=True, **setting))
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "score_model": asdict(model), "fitted_from": source, "gate": gate.model_dump(), "languages": languages, "k": args.k,
        "rows": rows, "command": "python " + " ".join(sys.argv),
    }
    if args.scenario == "switching":
        report["language_mix"] = {**asdict(SWITCHING_ONLY), "total_change_pct": SWITCHING_ONLY.total_change_pct()}
    else:
        at = next(row for row in rows if row["n_prompts"] == args.power_at)
        report["power"] = {"n_prompts": args.power_at, "effect_pct": args.effect, **at["effect"]}
        report["n_for_80_power_analytic"] = prompts_for_power(model, args.k, args.effect, gate, languages=len(languages))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
