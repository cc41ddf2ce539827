"""A durable copy of a training's checkpoint, so that a training that starts over on another
machine (a Kubernetes pod rescheduled onto a new node, with an empty /tmp) resumes where the
last one stopped.

Training writes its checkpoint (`state.pt`, replaced atomically) into a local directory. A
`CheckpointMirror` copies it to durable storage (the pipeline's artifact store: a bucket on
Kubernetes, a folder locally) whenever it changes, brings it back before training starts when
the local directory has none, and removes the copy once the adapter is saved. It works the same
for one training process and for N (the processes only ever write the local file), and it
needs nothing but a few file operations of the storage: `Storage` below, which
`zenml.io.fileio` provides for every artifact store.

    with CheckpointMirror(local_dir, remote_dir, storage):   # restore, then copy while training
        train(..., checkpoint_dir=local_dir)                 # on success the copy is removed
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

STATE = "state.pt"


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
