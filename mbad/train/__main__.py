"""One of the processes `mbad.train.launch` starts: `python -m mbad.train job.json`."""

import sys
from pathlib import Path

from mbad.train.launch import TrainingJob
from mbad.train.methods import METHODS

job = TrainingJob.read(Path(sys.argv[1]))
METHODS[job.method].train(*job.data, job.model_config, job.config, job.output_dir, job.checkpoint_dir)
