"""One of the processes `mbad.train.launch` starts: `python -m mbad.train job.json`."""

import sys
from pathlib import Path

from mbad.train.dpo import train_dpo_adapter
from mbad.train.launch import TrainingJob
from mbad.train.sft import train_sft_adapter

job = TrainingJob.read(Path(sys.argv[1]))
train = train_dpo_adapter if job.method == "dpo" else train_sft_adapter
train(*job.data, job.model_config, job.config, job.output_dir, job.checkpoint_dir)
