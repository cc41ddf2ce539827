"""A training's resumable state, and a durable copy of it.

The training loop saves a checkpoint (`state.pt`: adapter weights, optimizer, scheduler, step,
losses, RNG) into a local directory every few steps, replacing it atomically, and a rerun with
the same directory (named by `checkpoint_key`) continues from it.

A `CheckpointMirror` keeps a copy of it so that a training that starts over on another machine
(a Kubernetes pod rescheduled onto a new node, with an empty /tmp) resumes where the last one
stopped. It copies the checkpoint to durable storage (the pipeline's artifact store: a bucket on
Kubernetes, a folder locally) whenever it changes, brings it back before training starts when
the local directory has none, and removes the copy once the adapter is saved. It works the same
for one training process and for N (the processes only ever write the local file), and it
needs nothing but a few file operations of the storage: `Storage` below, which
`zenml.io.fileio` provides for every artifact store.

    with CheckpointMirror(local_dir, remote_dir, storage):   # restore, then copy while training
        train(..., checkpoint_dir=local_dir)                 # on success the copy is removed
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from mbad.config import ModelConfig, TrainConfig

logger = logging.getLogger(__name__)

STATE = "state.pt"


def checkpoint_key(model_config: ModelConfig, config: TrainConfig, data_hash: str) -> str:
    """A stable name for one training setting, so that a rerun finds its checkpoint."""
    payload = json.dumps([model_config.model_dump(), config.model_dump(), data_hash], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int, losses: list[float],
                    learning_rates: list[float]) -> None:
    """Adapter weights + optimizer state, written atomically (a kill never leaves half a file)."""
    path.mkdir(parents=True, exist_ok=True)
    state = {
        "adapter": get_peft_model_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "losses": losses,
        "learning_rates": learning_rates,
        "rng": torch.get_rng_state(),
    }
    scratch = path / f"{STATE}.tmp"
    torch.save(state, scratch)
    os.replace(scratch, path / STATE)


def restore_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, list[float], list[float]]:
    """Load the checkpoint in `path` into the adapter, optimizer, scheduler and torch's random
    state; returns the step it was saved at, the losses and the learning rates up to it."""
    state = torch.load(path / STATE, weights_only=False)
    set_peft_model_state_dict(model, state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return state["step"], state["losses"], state.get("learning_rates", [])


class Storage(Protocol):
    def exists(self, path: str) -> bool: ...
    def copy(self, src: str, dst: str, overwrite: bool = False) -> None: ...
    def rename(self, src: str, dst: str, overwrite: bool = False) -> None: ...
    def remove(self, path: str) -> None: ...
    def makedirs(self, path: str) -> None: ...


class CheckpointMirror:
    def __init__(self, local_dir: Path, remote_dir: str, storage: Storage, interval_s: float = 30.0):
        self.local, self.remote, self.storage, self.interval_s = Path(local_dir), remote_dir.rstrip("/"), storage, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._uploaded: int | None = None  # mtime (ns) of the local state last copied

    @property
    def remote_state(self) -> str:
        return f"{self.remote}/{STATE}"

    def restore(self) -> bool:
        """Copy the durable checkpoint here when there is one and no local one. True if it did."""
        local = self.local / STATE
        if local.exists() or not self.storage.exists(self.remote_state):
            return False
        self.local.mkdir(parents=True, exist_ok=True)
        scratch = self.local / f"{STATE}.restoring"
        self.storage.copy(self.remote_state, str(scratch), overwrite=True)
        scratch.replace(local)
        self._uploaded = local.stat().st_mtime_ns
        logger.info("restored the training checkpoint from %s", self.remote_state)
        return True

    def sync(self) -> bool:
        """Copy the local checkpoint to the durable storage if it changed since the last copy."""
        local = self.local / STATE
        try:
            changed = local.stat().st_mtime_ns
        except FileNotFoundError:
            return False
        if changed == self._uploaded:
            return False
        self.storage.makedirs(self.remote)
        scratch = f"{self.remote_state}.uploading"
        # A reader of the durable copy sees the previous checkpoint or this one, never half of one.
        self.storage.copy(str(local), scratch, overwrite=True)
        self.storage.rename(scratch, self.remote_state, overwrite=True)
        self._uploaded = changed
        return True

    def start(self) -> CheckpointMirror:
        """Copy every new checkpoint in the background while training runs."""
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                try:
                    self.sync()
                except Exception as error:  # storage hiccup: the next round tries again
                    logger.warning("could not copy the training checkpoint to %s: %s", self.remote, error)

        self._thread = threading.Thread(target=loop, name="checkpoint-mirror", daemon=True)
        self._thread.start()
        return self

    def finish(self, trained: bool) -> None:
        """Stop copying. When training finished (the adapter is saved), its durable checkpoint is
        removed; otherwise the latest local one is copied a last time."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if trained:
            if self.storage.exists(self.remote_state):
                self.storage.remove(self.remote_state)
        else:
            self.sync()

    def __enter__(self) -> CheckpointMirror:
        self.restore()
        return self.start()

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.finish(trained=exc_type is None)
