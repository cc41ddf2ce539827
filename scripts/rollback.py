"""Move `champion` back to `previous` (`make rollback`); `--recover` finishes an interrupted move.

The rolled-back version is tagged `validation_status=rolled_back`, the ZenML Model version of the
restored champion goes back to stage production, and `previous` moves one step further back
(to the version the restored champion had replaced), or is removed.

    python scripts/rollback.py [--model mbad-detox] [--recover]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlflow import MlflowClient  # noqa: E402

from mbad.aliases import AliasMoveConfig, describe, move_aliases, read_aliases, recover  # noqa: E402
from mbad.promotion import rollback_target, set_version_tags  # noqa: E402
from mbad.tracking import tracking_uri  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mbad-detox", help="registered model name")
    parser.add_argument("--recover", action="store_true",
                        help="restore the aliases journaled by an interrupted promotion or rollback (only when none is running)")
    args = parser.parse_args(argv)
    client, config = MlflowClient(tracking_uri()), AliasMoveConfig()
    if args.recover:
        print(recover(client, args.model, config, force=True) or f"no interrupted move of '{args.model}': nothing to recover")
        return
    before = read_aliases(client, args.model)
    target = rollback_target(client, args.model, before)

    def record() -> None:  # under the registry lock, once the aliases are verified
        from steps.promotion import set_production_stage  # ZenML (and the steps' imports) only here

        set_version_tags(client, args.model, before["champion"],
                         {"validation_status": "rolled_back", "rolled_back_at": datetime.now(UTC).isoformat(timespec="seconds")})
        set_production_stage(client.get_model_version(args.model, target["champion"]).tags)

    move_aliases(client, args.model, before, target, config, on_moved=record)
    print(f"{args.model}: {describe(target)} (was {describe(before)})")


if __name__ == "__main__":
    main()
