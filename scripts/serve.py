"""`make serve`: serve a registered mbad-detox version with `mlflow models serve` on 127.0.0.1.

    python scripts/serve.py [--alias champion] [--port 5001]
    curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \
         -d '{"inputs": ["Complete the sentence: you are such an"]}'

The model loads on the CPU (MBAD_SERVE_DEVICE, default cpu) whatever device it was trained on,
in this environment (`--env-manager local`; the logged model pins the same versions).
Without a version under the alias it says so and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mbad.tracking import tracking_uri  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mbad-detox")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MBAD_SERVE_PORT", "5001")))
    args = parser.parse_args()
    uri = tracking_uri()
    try:
        version = MlflowClient(uri).get_model_version_by_alias(args.model, args.alias)
    except MlflowException:
        print(f"error: no version of {args.model!r} carries the alias {args.alias!r} in {uri}. "
              "Train one (`make run`) and promote it (`make promote`) first.", file=sys.stderr)
        return 1
    print(f"serving {args.model} v{version.version} (@{args.alias}, {version.tags.get('method', 'sft')}) "
          f"on http://{args.host}:{args.port}/invocations", flush=True)
    # The scoring server is uvicorn from this environment, whether or not it is activated.
    env = os.environ | {"MLFLOW_TRACKING_URI": uri, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.setdefault("MBAD_SERVE_DEVICE", "cpu")
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli), "models", "serve", "-m", f"models:/{args.model}@{args.alias}", "--host", args.host,
               "--port", str(args.port), "--env-manager", "local", "--workers", "1"]
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main())
