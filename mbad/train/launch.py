"""Training on several GPUs of one machine: `train.num_processes` processes started by torchrun,
each running `python -m mbad.train job.json`; they train one adapter data-parallel and the
first one saves it. A process that is already one of several (started by `accelerate launch`
or `torchrun`, so WORLD_SIZE is set) trains in place instead."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mbad.adapters import read_adapter_meta
from mbad.config import ModelConfig, TrainConfig
from mbad.train.loop import TrainSummary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingJob:
    """What every launched process trains: a method by its name, the lists of texts its training
    function takes first (`data`), and the arguments every method's function takes after them."""

    method: str
    data: list[list[str]]
    model_config: ModelConfig
    config: TrainConfig
    output_dir: Path
    checkpoint_dir: Path | None

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({
            "method": self.method, "data": self.data, "model": self.model_config.model_dump(),
            "train": self.config.model_dump(), "output_dir": str(self.output_dir),
            "checkpoint_dir": str(self.checkpoint_dir) if self.checkpoint_dir else None,
        }))

    @classmethod
    def read(cls, path: Path) -> TrainingJob:
        spec = json.loads(path.read_text())
        return cls(spec["method"], spec["data"], ModelConfig(**spec["model"]), TrainConfig(**spec["train"]),
                   Path(spec["output_dir"]), Path(spec["checkpoint_dir"]) if spec["checkpoint_dir"] else None)


def needs_launch(config: TrainConfig) -> bool:
    """True when the config asks for several processes and this process is not one of them."""
    return config.num_processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1


def launch_processes(job: TrainingJob) -> TrainSummary:
    """`job.config.num_processes` training processes on this machine (one per GPU), started by
    torchrun; returns the summary of the adapter they trained."""
    processes = job.config.num_processes
    with tempfile.TemporaryDirectory(prefix="mbad-train-") as scratch:
        job_file = Path(scratch) / "job.json"
        job.write(job_file)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", "-m", "mbad.train", str(job_file)]
        logger.info("training with %d processes: %s", processes, " ".join(command))
        finished = subprocess.run(command, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"multi-process training ({processes} processes) failed with exit "
                           f"code {finished.returncode}; its processes' errors are above")
    return TrainSummary(**read_adapter_meta(job.output_dir)["summary"])
