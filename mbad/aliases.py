"""Moving the registry aliases (`champion`, `previous`) without ever leaving them half-updated.

MLflow has neither transactions nor compare-and-set, so a move is made safe in four parts:

1. A lock. `create_registered_model` is atomic (a registered model's name is unique in the
   backing database), so the model `<name>.alias-lock` exists for one writer at a time. A second
   promotion or rollback waits for it (`lock_wait_s`), then gives up with a clear error.
2. A journal. The lock is created, in the same call, with the aliases before and after the move
   as its tags: whoever finds the lock of a writer that died knows what to restore.
3. Compare-and-set under the lock. The caller decided against aliases it read earlier (the gate
   compared with the champion of that moment); if they differ now, another promotion won the
   race and this move is refused. Two concurrent promotions therefore end with one winner,
   `previous` pointing at the champion both were compared with, and one clear error.
4. Verify, else restore. After writing, the aliases are read back; on any failure (MLflow gone,
   a call rejected, a callback failing) they are written back to `before`, retrying while MLflow
   is unreachable (`restore_attempts` x `restore_wait_s`), then the lock is removed. If MLflow
   stays away longer, the lock and its journal stay: the next move restores `before` first once
   the lock is older than `lock_stale_s`, or at once with `python scripts/rollback.py --recover`.

Readers never see an invalid state: `models:/<name>@champion` always names a registered version.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mbad.config import StrictConfig

logger = logging.getLogger(__name__)

ALIASES = ("champion", "previous")
JOURNAL = {"acquired_at", "before", "after"}  # the lock's tags that describe its move
Aliases = dict[str, str | None]


class AliasMoveConfig(StrictConfig):
    """How long a move waits for another one, and how hard it tries to undo a failed one."""

    lock_wait_s: float = 120.0
    # A lock older than this belongs to a writer that died: its journal is restored.
    lock_stale_s: float = 900.0
    restore_attempts: int = 12
    restore_wait_s: float = 5.0
    poll_s: float = 0.5


class RegistryUnavailableError(RuntimeError):
    """MLflow could not be reached (or refused a call) before anything was changed."""


def unavailable(client: MlflowClient, action: str, error: Exception) -> RegistryUnavailableError:
    return RegistryUnavailableError(f"cannot {action} (MLflow at {client.tracking_uri}): {error}")


class AliasConflictError(RuntimeError):
    """The aliases changed since the caller decided, or another move holds the lock too long."""


class AliasMoveError(RuntimeError):
    """A move failed midway; the message says whether the aliases were restored."""

    def __init__(self, message: str, restored: bool = True):
        super().__init__(message)
        self.restored = restored


def lock_name(model_name: str) -> str:
    return f"{model_name}.alias-lock"


def describe(aliases: Aliases) -> str:
    return ", ".join(f"{alias}={'v' + version if version else '(none)'}" for alias, version in aliases.items())


def read_aliases(client: MlflowClient, model_name: str) -> Aliases:
    """The current `champion` and `previous` versions (None when an alias, or the model, is not set)."""
    try:
        registered = client.get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return dict.fromkeys(ALIASES)
        raise unavailable(client, f"read registered model '{model_name}'", error) from error
    return _complete(registered.aliases)


def move_aliases(
    client: MlflowClient,
    model_name: str,
    expected: Aliases,
    target: Aliases,
    config: AliasMoveConfig,
    on_moved: Callable[[], None] | None = None,
) -> None:
    """Set the aliases to `target` if they still are `expected` (see the module docstring).

    `on_moved` runs under the lock once the new aliases are verified (the ZenML stage moves
    there); if it raises, the aliases are restored.
    """
    expected, target = _complete(expected), _complete(target)
    with _locked(client, model_name, expected, target, config):
        current = read_aliases(client, model_name)
        if current != expected:
            raise AliasConflictError(
                f"the aliases of '{model_name}' changed since the decision was taken: expected {describe(expected)}, "
                f"found {describe(current)} (another promotion or rollback ran). Nothing was changed; run it again."
            )
        step = "writing"
        try:
            # `champion` last: a reader sees the new champion only once `previous` is in place.
            for alias in ("previous", "champion"):
                step = f"setting {alias}"
                write_alias(client, model_name, alias, target[alias])
            step = "verifying"
            written = read_aliases(client, model_name)
            if written != target:
                raise AliasMoveError(f"read back {describe(written)} instead of {describe(target)}")
            if on_moved:
                step = "finishing (after the aliases were set)"
                on_moved()
        except Exception as error:
            _fail_and_restore(client, model_name, expected, config, step, error)


def recover(client: MlflowClient, model_name: str, config: AliasMoveConfig, force: bool = False) -> str | None:
    """Finish a move whose writer died: restore its journal's `before` aliases, remove its lock.

    Without `force`, only a lock older than `config.lock_stale_s` is touched. Returns what was
    done, or None when there is no (stale) lock.
    """
    try:
        lock = client.get_registered_model(lock_name(model_name))
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise unavailable(client, f"read the lock of '{model_name}'", error) from error
    if not JOURNAL <= lock.tags.keys():
        # MLflow reads a registered model and its tags in two queries: a lock being released (or
        # taken) between them reads without its tags. That is no stale lock; the caller polls again.
        if not force:
            return None
        raise AliasMoveError(
            f"the lock '{lock_name(model_name)}' has no journal (tags: {sorted(lock.tags)}): another move is taking "
            "or releasing it, or it was made by hand. Nothing was changed; run again.", restored=False,
        )
    age = time.time() - float(lock.tags["acquired_at"])
    if not force and age < config.lock_stale_s:
        return None
    before, after = json.loads(lock.tags["before"]), json.loads(lock.tags["after"])
    current = read_aliases(client, model_name)
    if current == after:
        done = f"the interrupted move had completed ({describe(after)}); removed its lock"
    else:
        _write_all(client, model_name, before)
        if read_aliases(client, model_name) != before:
            raise AliasMoveError(f"could not restore {describe(before)} for '{model_name}'")
        done = f"restored {describe(before)} (found {describe(current)}) and removed the lock of an interrupted move"
    _release(client, model_name, lock.tags.get("owner", ""))
    logger.warning("%s: %s", model_name, done)
    return done


@contextmanager
def _locked(client: MlflowClient, model_name: str, before: Aliases, after: Aliases, config: AliasMoveConfig) -> Iterator[None]:
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + config.lock_wait_s
    while True:
        try:
            client.create_registered_model(
                lock_name(model_name),
                tags={"owner": owner, "acquired_at": str(time.time()), "before": json.dumps(before), "after": json.dumps(after)},
                description=f"Held while the aliases of '{model_name}' move; its tags are the journal of that move.",
            )
            break
        except MlflowException as error:
            # RESOURCE_DOES_NOT_EXIST: the lock existed when our create collided with it and was
            # released before the server could name it; contended like ALREADY_EXISTS, so poll again.
            if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise unavailable(client, f"lock the aliases of '{model_name}' (nothing was changed)", error) from error
        if recover(client, model_name, config):
            continue
        if time.monotonic() > deadline:
            raise AliasConflictError(
                f"another promotion or rollback of '{model_name}' has held the lock '{lock_name(model_name)}' for more than "
                f"{config.lock_wait_s:.0f} s. Nothing was changed. If no other promotion is running, "
                "`python scripts/rollback.py --recover` restores what it journaled."
            )
        time.sleep(config.poll_s)
    half_updated = False
    try:
        yield
    except AliasMoveError as error:
        half_updated = not error.restored  # then the lock keeps the journal for `recover`
        raise
    finally:
        if not half_updated:
            try:
                _release(client, model_name, owner)
            except MlflowException as error:
                logger.warning("could not remove the lock '%s' (%s); the next move removes it", lock_name(model_name), error)


def _complete(aliases: Aliases) -> Aliases:
    return {alias: None if aliases.get(alias) is None else str(aliases[alias]) for alias in ALIASES}


def _release(client: MlflowClient, model_name: str, owner: str) -> None:
    try:
        lock = client.get_registered_model(lock_name(model_name))
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return
        raise
    if lock.tags.get("owner") == owner:  # never remove a lock someone else took since
        client.delete_registered_model(lock_name(model_name))


def write_alias(client: MlflowClient, model_name: str, alias: str, version: str | None) -> None:
    """Point one alias at `version` (None removes it): every alias write of a move or a restore."""
    if version is None:
        client.delete_registered_model_alias(model_name, alias)
    else:
        client.set_registered_model_alias(model_name, alias, version)


def _write_all(client: MlflowClient, model_name: str, aliases: Aliases) -> None:
    for alias in ("previous", "champion"):
        write_alias(client, model_name, alias, aliases.get(alias))


def _fail_and_restore(
    client: MlflowClient, model_name: str, before: Aliases, config: AliasMoveConfig, step: str, error: Exception
) -> None:
    """Write `before` back, retrying while MLflow is away; always raises AliasMoveError."""
    for attempt in range(1, config.restore_attempts + 1):
        try:
            _write_all(client, model_name, before)
            if read_aliases(client, model_name) == before:
                raise AliasMoveError(
                    f"moving the aliases of '{model_name}' failed while {step}: {error}. "
                    f"They were restored to {describe(before)}: the registry is as it was before."
                ) from error
        except (MlflowException, RegistryUnavailableError) as retry_error:
            logger.warning("restoring %s of '%s' (attempt %d): %s", describe(before), model_name, attempt, retry_error)
        if attempt < config.restore_attempts:
            time.sleep(config.restore_wait_s)
    raise AliasMoveError(
        f"moving the aliases of '{model_name}' failed while {step}: {error}; MLflow at {client.tracking_uri} stayed "
        f"unreachable while restoring {describe(before)}, so the aliases may be half-updated. The lock "
        f"'{lock_name(model_name)}' keeps the journal: the next promotion or rollback restores it after "
        f"{config.lock_stale_s:.0f} s, or run `python scripts/rollback.py --recover` once MLflow is back.",
        restored=False,
    ) from error
