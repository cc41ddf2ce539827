"""The registry of toxicity-judge backends: each backend module registers itself here with its
settings model, a builder and, for a backend that learns from the judge-role train pairs, a
trainer. `mbad.eval.judges` imports the built-in backends, so importing anything under it fills
the registry; `JudgeConfig` validates `judge.backend` and each backend's settings through it.
Adding a backend is one module and one import line (docs/extending.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError


class JudgeSettings(BaseModel):
    """Base of a backend's settings model: an unknown key is an error, not a default."""

    model_config = ConfigDict(extra="forbid")


class SharedStorage(Protocol):
    """The few file operations on a folder shared between machines (`zenml.io.fileio` for any
    artifact store)."""

    def exists(self, path: str) -> bool: ...
    def listdir(self, path: str) -> list[str]: ...
    def copy(self, src: str, dst: str, overwrite: bool = False) -> None: ...
    def rename(self, src: str, dst: str, overwrite: bool = False) -> None: ...
    def makedirs(self, path: str) -> None: ...


@dataclass(frozen=True)
class JudgeContext:
    """What a builder may need from where the judge is built; the score step fills it in, so it
    needs no case for any backend. Outside a pipeline the defaults hold: no trained judge, no
    secrets, nothing shared."""

    # The trained offline judge (the train_judge step's `toxicity_judge`); backends with a trainer need it.
    fitted: Any = None
    # A secret's values by the secret's name (ZenML's secrets store in a step).
    secret_store: Callable[[str], Mapping[str, Any]] | None = None
    # Where a secret may also be set when the store has none (the step passes os.environ).
    environ: Mapping[str, str] = field(default_factory=dict)
    # A folder every machine of a run sees (under the artifact store in a step, where pods start
    # with empty disks); a backend keeps its shared cache in a subfolder named after itself.
    shared_dir: str | None = None
    storage: SharedStorage | None = None  # the file operations on `shared_dir`

    def secret(self, name: str, key: str, env: str) -> str | None:
        """`key` of the secret `name` in the secret store, else the environment variable `env`."""
        if self.secret_store is not None:
            try:
                return str(self.secret_store(name)[key])
            except Exception:  # no such secret or key: fall back to the environment
                pass
        return self.environ.get(env)


# builder(settings, context) -> the judge (a `base.ToxicityJudge`); trainer(judge-role train pairs
# as a DataFrame, settings) -> the fitted judge (a `base.FittedJudge`).
Builder = Callable[[Any, JudgeContext], Any]
Trainer = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class JudgeBackend:
    name: str
    builder: Builder
    # The backend's settings (the `judge.<name>` section of a config); None: it has none.
    settings: type[BaseModel] | None = None
    # How it learns from the judge-role train pairs; None: it does not train (online or fixed).
    trainer: Trainer | None = None


# By name, in registration order (the order of the backends' sections in a dumped config).
JUDGES: dict[str, JudgeBackend] = {}


def register_judge(name: str, settings: type[BaseModel] | None = None,
                   trainer: Trainer | None = None) -> Callable[[Builder], Builder]:
    """Decorator of a backend's builder: registers the backend `name` with its settings model
    (validating `judge.<name>` of a config) and, for an offline backend, its trainer."""

    def register(builder: Builder) -> Builder:
        if name in JUDGES:
            raise ValueError(f"a judge backend named {name!r} is already registered ({JUDGES[name].builder.__module__})")
        JUDGES[name] = JudgeBackend(name, builder, settings, trainer)
        return builder

    return register


def judge_backend(name: str) -> JudgeBackend:
    """The registered backend `name`; a ValueError naming the registered ones if there is none."""
    if name not in JUDGES:
        raise ValueError(f"judge.backend {name!r} is not a registered judge backend; registered: {', '.join(sorted(JUDGES))} "
                         "(a backend registers itself with mbad.eval.judges.registry.register_judge, see docs/extending.md)")
    return JUDGES[name]


def offline_backends() -> tuple[str, ...]:
    """The backends that learn from the judge-role train pairs (the train_judge step fits them)."""
    return tuple(name for name, backend in JUDGES.items() if backend.trainer is not None)


def backend_settings(sections: Mapping[str, Any]) -> dict[str, BaseModel]:
    """Every registered backend's settings, in registration order: a section of `sections`
    (a dict or the settings object) validated by the backend's settings model, else its defaults.
    A section for no backend, or for a backend without settings, is a ValueError."""
    for name in sections:
        if name not in JUDGES:
            raise ValueError(f"judge.{name} is not a setting of the judge: its keys are backend, threshold and the settings "
                             f"of a registered backend ({', '.join(sorted(n for n, b in JUDGES.items() if b.settings))})")
        if JUDGES[name].settings is None:
            raise ValueError(f"judge.{name}: the {name} backend has no settings")
    settings: dict[str, BaseModel] = {}
    for name, backend in JUDGES.items():
        if backend.settings is None:
            continue
        try:
            settings[name] = backend.settings.model_validate(sections.get(name, {}))
        except ValidationError as error:
            raise ValueError("; ".join(_problem(name, problem) for problem in error.errors())) from None
    return settings


def _problem(section: str, problem: Any) -> str:
    """One error of a settings model as `judge.<section>.<field>: <message>, got <value>`."""
    where = ".".join(["judge", section, *(str(part) for part in problem["loc"])])
    got = "" if problem["type"] == "missing" else f", got {problem['input']!r}"
    return f"{where}: {problem['msg']}{got}"
