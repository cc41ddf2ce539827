"""Under which prompt protocol does the base model answer in the prompt's language?

For N toxic test prompts per language, one completion of each prompt per protocol of
`mbad.protocols` (30 new tokens, the generation config's temperature, top-p, top-k and seed, the
same random stream for a prompt under every protocol), each completion's language detected by
`mbad.eval.fidelity`. Prints per protocol and language the in-language share of the non-empty
completions with its 95 % Wilson interval (one completion per prompt: prompts are the units), n
and the empty completions; writes the same, with every completion, as JSON.

    .venv/bin/python scripts/measure_protocols.py                                  # gemma-3-270m, 24 prompts x 9 languages
    .venv/bin/python scripts/measure_protocols.py --prompts 2 --languages en,hi --out /tmp/protocols.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mbad.config import PAPER_LANGUAGES, DataConfig, GenerationConfig, ModelConfig, StatisticsConfig  # noqa: E402
from mbad.data import load_pairs, select  # noqa: E402
from mbad.eval.fidelity import add_detected_language  # noqa: E402
from mbad.eval.power import PassRate  # noqa: E402
from mbad.generation import generate_for_targets  # noqa: E402
from mbad.models import load_base_model  # noqa: E402
from mbad.protocols import PROTOCOLS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=ModelConfig().name_or_path, help="an HF id, a local directory or packaged:...")
    parser.add_argument("--prompts", type=int, default=24, help="toxic test prompts per language")
    parser.add_argument("--languages", default=",".join(PAPER_LANGUAGES), help="comma-separated language codes")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated protocols of mbad.protocols")
    parser.add_argument("--new-tokens", type=int, default=30)
    parser.add_argument("--data-dir", help="MultiParaDetox directory (default: as DataConfig finds it)")
    parser.add_argument("--out", type=Path, default=Path("protocol_language_shares.json"))
    return parser.parse_args(argv)


def in_language_shares(detected: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Per protocol and language: non-empty completions in the prompt's language, of how many
    non-empty ones (n), the share and its Wilson interval (None where every completion was empty)."""
    rows = []
    for (protocol, lang), group in detected.groupby(["protocol", "lang"], sort=False):
        in_language, n = int(group["in_target_language"].sum()), int(group["non_empty"].sum())
        # A share of n independent prompts is a binomial rate, as the gate simulation's pass rate is.
        low, high = PassRate(in_language, n).interval(confidence) if n else (None, None)
        rows.append({"protocol": protocol, "lang": lang, "in_language": in_language, "n": n,
                     "share": in_language / n if n else None, "low": low, "high": high,
                     "empty": int(group["is_empty"].sum()), "prompts": len(group)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    languages, protocols = args.languages.split(","), args.protocols.split(",")
    generation = {name: GenerationConfig(protocol=name, max_new_tokens=args.new_tokens, num_samples=1) for name in protocols}
    prompts = select(load_pairs(DataConfig(data_dir=args.data_dir)), "test", languages, max_per_language=args.prompts)
    loaded = load_base_model(ModelConfig(name_or_path=args.model))
    completions = pd.concat([generate_for_targets(loaded, prompts, config, desc=name).assign(protocol=name)
                             for name, config in generation.items()], ignore_index=True)
    confidence = StatisticsConfig().confidence
    shares = in_language_shares(add_detected_language(completions), confidence)
    print(f"{args.model}: {args.prompts} prompts per language, 1 completion each of {args.new_tokens} new tokens "
          f"(T={generation[protocols[0]].temperature}); in-language share of non-empty completions, {confidence:.0%} Wilson interval\n")
    print("| protocol | lang | in language [95% CI] | n | empty |\n|---|---|---|---|---|")
    for row in shares.itertuples(index=False):
        share = "-" if row.n == 0 else f"{row.share:.2f} [{row.low:.2f}, {row.high:.2f}]"
        print(f"| {row.protocol} | {row.lang} | {share} | {row.n} | {row.empty} |")
    sampling = generation[protocols[0]].model_dump(exclude={"protocol"})
    args.out.write_text(json.dumps({
        "model": args.model, "prompts_per_language": args.prompts, "languages": languages, "generation": sampling,
        "confidence": confidence, "shares": shares.to_dict(orient="records"),
        "completions": completions[["protocol", "lang", "pair_id", "prompt", "completion"]].to_dict(orient="records"),
    }, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
