"""The Perspective API judge (attribute TOXICITY).

Sends each text with its real language code, paces requests to the quota, retries 429 and
5xx answers with exponential backoff, and caches scores on disk so that reruns send
nothing twice. A text in a language the attribute does not support (HTTP 400 with
LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE, e.g. uk, am) is not judged: NaN, cached, not retried; a
text judged as `pooled` (its language none of those the API documents, or undetermined) is not
sent at all: NaN, since the API has no pooled model.
Any other failure raises `PerspectiveError`: a failed call is never a score. The key travels
in a request header, never in a URL, and never appears in logs or errors.

The cache is a local SQLite file. With `shared_dir` (the pipeline's artifact store on Kubernetes,
where every pod starts with an empty disk) it is also shared: at start every shard found there is
merged into the local file, and the scores this judge obtained are written there as a new shard
of their own (every `SHARD_EVERY` answers and at the end of each `score` call). Shards are only
ever added, each under a new name, so pods scoring in parallel never overwrite each other; a
score is a fact about (language, text), so merging is a union.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from tqdm.auto import tqdm

from mbad.eval.judges.base import POOLED, JudgeIdentity
from mbad.eval.judges.registry import JudgeContext, JudgeSettings, SharedStorage, register_judge
from mbad.paths import mbad_home

logger = logging.getLogger(__name__)
RETRIABLE = {429, 500, 502, 503, 504}
ATTRIBUTE = "TOXICITY"
# The API's error reason for a language the requested attribute does not cover.
UNSUPPORTED_LANGUAGE = "LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE"
# The languages the API documents for TOXICITY; it refuses others with UNSUPPORTED_LANGUAGE.
TOXICITY_LANGUAGES = frozenset({"ar", "cs", "de", "en", "es", "fr", "hi", "hi-Latn", "id", "it", "ja", "ko", "nl", "pl",
                                "pt", "ru", "sv", "zh"})
SHARD_EVERY = 200  # answers between two shards written to the shared cache


class PerspectiveJudgeConfig(JudgeSettings):
    """`judge.perspective`: the API, its quota and retries, where the key and the cache are."""

    url: str = "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze"
    queries_per_second: float = 1.0
    max_retries: int = 6
    backoff_seconds: float = 2.0
    timeout_seconds: float = 30.0
    # The API key comes from this ZenML secret (key `api_key`) or `PERSPECTIVE_API_KEY`.
    secret_name: str = "perspective"
    cache_file: str | None = None  # the local cache; None: $MBAD_HOME/cache/perspective.sqlite
    # Also keep the answers in the artifact store (<store>/mbad-cache/perspective/, one shard per
    # batch of answers), so that pods, which start with empty disks, never ask twice.
    share_cache: bool = True


class PerspectiveError(RuntimeError):
    """A Perspective call that failed (never turned into a score)."""


class PerspectiveJudge(JudgeIdentity):
    """Perspective API TOXICITY scores; NaN for languages the attribute does not support."""

    def __init__(self, api_key: str, config: PerspectiveJudgeConfig, shared_dir: str | None = None,
                 storage: SharedStorage | None = None):
        self._api_key = api_key
        self.config = config
        cache_file = Path(config.cache_file) if config.cache_file else mbad_home() / "cache" / "perspective.sqlite"
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        self._cache = sqlite3.connect(cache_file)
        # score NULL: the API refused the text's language (not judged, and not asked again).
        self._cache.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL)")
        self._last_request = 0.0
        self.requests_sent = 0
        self._shared_dir = shared_dir.rstrip("/") if shared_dir else None
        self._storage = storage
        self._unshared: dict[str, float | None] = {}  # answers not yet in a shard
        if self._shared_dir:
            if storage is None:
                raise ValueError("a shared Perspective cache needs a storage (zenml.io.fileio)")
            self.merged_shards = self._merge_shared()

    def _merge_shared(self) -> int:
        """Every shard of the shared cache merged into the local file; the number merged."""
        if not self._storage.exists(self._shared_dir):
            return 0
        shards = sorted(name for name in self._storage.listdir(self._shared_dir) if str(name).endswith(".sqlite"))
        with tempfile.TemporaryDirectory() as scratch:
            for name in shards:
                local = Path(scratch) / Path(str(name)).name
                self._storage.copy(f"{self._shared_dir}/{Path(str(name)).name}", str(local), overwrite=True)
                self._cache.execute("ATTACH DATABASE ? AS shard", (str(local),))
                try:
                    self._cache.execute("INSERT OR IGNORE INTO scores SELECT key, score FROM shard.scores")
                    self._cache.commit()
                finally:
                    self._cache.execute("DETACH DATABASE shard")
        if shards:
            logger.info("merged %d shards of the shared Perspective cache %s", len(shards), self._shared_dir)
        return len(shards)

    def share(self) -> str | None:
        """The answers obtained since the last shard, as a new shard in the shared cache."""
        if not self._shared_dir or not self._unshared:
            return None
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.sqlite"
        with tempfile.TemporaryDirectory() as scratch:
            shard = Path(scratch) / name
            with sqlite3.connect(shard) as db:
                db.execute("CREATE TABLE scores (key TEXT PRIMARY KEY, score REAL)")
                db.executemany("INSERT INTO scores VALUES (?, ?)", self._unshared.items())
            db.close()
            self._storage.makedirs(self._shared_dir)
            partial = f"{self._shared_dir}/.{name}.partial"  # not a shard until complete
            self._storage.copy(str(shard), partial, overwrite=True)
            self._storage.rename(partial, f"{self._shared_dir}/{name}", overwrite=False)
        self._unshared = {}
        return name

    @property
    def identity(self) -> dict[str, str]:
        url = urlparse(self.config.url)
        version = next((part for part in url.path.split("/") if part.startswith("v1")), "unknown")
        return {"backend": "perspective", "service": url.netloc, "api_version": version, "attribute": ATTRIBUTE}

    @property
    def languages(self) -> frozenset[str]:
        """The languages the API documents for its TOXICITY attribute."""
        return TOXICITY_LANGUAGES

    def __repr__(self) -> str:  # never show the key
        return f"PerspectiveJudge(url={self.config.url!r}, qps={self.config.queries_per_second})"

    @staticmethod
    def _cache_key(text: str, lang: str) -> str:
        return hashlib.sha256(f"{lang}\0{text}".encode()).hexdigest()

    def score(self, texts: Sequence[str], langs: Sequence[str]) -> list[float]:
        """TOXICITY summary score per text; NaN where the API does not support the text's language.
        Every code is sent as it is (the API refuses those it does not support: NaN, cached);
        `POOLED` is NaN without a request: the API has no pooled model for the languages it
        does not document or text of no known language."""
        scores: list[float] = []
        for text, lang in tqdm(list(zip(texts, langs)), desc="perspective", unit="text", leave=False):
            if lang == POOLED:
                scores.append(math.nan)
                continue
            key = self._cache_key(text, lang)
            row = self._cache.execute("SELECT score FROM scores WHERE key = ?", (key,)).fetchone()
            if row is None:
                value = self._request(text, lang)
                self._cache.execute("INSERT OR REPLACE INTO scores VALUES (?, ?)", (key, value))
                self._cache.commit()
                if self._shared_dir:
                    self._unshared[key] = value
                    if len(self._unshared) >= SHARD_EVERY:
                        self.share()
            else:
                value = row[0]
            scores.append(math.nan if value is None else float(value))
        self.share()
        return scores

    def _pace(self) -> None:
        wait = 1.0 / self.config.queries_per_second - (time.monotonic() - self._last_request)
        if wait > 0:
            time.sleep(wait)
        self._last_request = time.monotonic()

    def _redact(self, message: str) -> str:
        return message.replace(self._api_key, "<redacted>") if self._api_key else message

    def _request(self, text: str, lang: str) -> float | None:
        """The API's score, or None when it refuses the language (HTTP 400 LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE)."""
        body = json.dumps(
            {
                "comment": {"text": text},
                "languages": [lang],
                "requestedAttributes": {ATTRIBUTE: {}},
                "doNotStore": True,
            }
        ).encode()
        for attempt in range(self.config.max_retries + 1):
            self._pace()
            request = urllib.request.Request(
                self.config.url,
                data=body,
                headers={"Content-Type": "application/json", "X-Goog-Api-Key": self._api_key},
                method="POST",
            )
            self.requests_sent += 1
            try:
                with urllib.request.urlopen(request, timeout=self.config.timeout_seconds) as response:
                    payload = json.load(response)
                return float(payload["attributeScores"][ATTRIBUTE]["summaryScore"]["value"])
            except urllib.error.HTTPError as error:
                detail = self._redact(error.read()[:2000].decode("utf-8", errors="replace"))
                if error.code == 400 and UNSUPPORTED_LANGUAGE in detail:
                    logger.info("Perspective does not support %s for language '%s': not judged", ATTRIBUTE, lang)
                    return None
                if error.code not in RETRIABLE or attempt == self.config.max_retries:
                    hint = " (is the API key valid and the API enabled for its project?)" if error.code in (401, 403) else ""
                    raise PerspectiveError(f"Perspective API answered {error.code} for a '{lang}' text{hint}: {detail[:300]}") from None
                retry_after = error.headers.get("Retry-After")
                delay = float(retry_after) if retry_after else self.config.backoff_seconds * 2**attempt
                logger.warning("Perspective API answered %s; retrying in %.1f s", error.code, delay)
                time.sleep(delay)
            except (KeyError, TypeError, ValueError) as error:  # a 200 without a score is a failure, not a 0
                raise PerspectiveError(f"Perspective API gave no {ATTRIBUTE} score for a '{lang}' text ({type(error).__name__})") from None
            except urllib.error.URLError as error:
                if attempt == self.config.max_retries:
                    raise PerspectiveError(self._redact(f"Perspective API unreachable: {error.reason}")) from None
                time.sleep(self.config.backoff_seconds * 2**attempt)
        raise AssertionError("unreachable")


@register_judge("perspective", settings=PerspectiveJudgeConfig)
def build_perspective_judge(config: PerspectiveJudgeConfig, context: JudgeContext) -> PerspectiveJudge:
    """The Perspective judge with the key from the secret store or the environment, sharing its
    cache under `context.shared_dir` when `share_cache` is on and the context has a shared folder."""
    api_key = context.secret(config.secret_name, "api_key", env="PERSPECTIVE_API_KEY")
    if not api_key:
        raise ValueError(
            "judge.backend=perspective needs an API key: create the ZenML secret "
            f"'{config.secret_name}' with key api_key, or set PERSPECTIVE_API_KEY"
        )
    if config.share_cache and context.shared_dir:
        return PerspectiveJudge(api_key, config, shared_dir=f"{context.shared_dir}/perspective", storage=context.storage)
    return PerspectiveJudge(api_key, config)
