"""The Perspective API judge (attribute TOXICITY).

Sends each text with its real language code, paces requests to the quota, retries 429 and
5xx answers with exponential backoff, and caches scores on disk so that reruns send
nothing twice. The key travels in a request header, never in a URL, and is never logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from mbad.config import PerspectiveJudgeConfig, mbad_home

logger = logging.getLogger(__name__)
RETRIABLE = {429, 500, 502, 503, 504}


class PerspectiveError(RuntimeError):
    pass


class PerspectiveJudge:
    name = "perspective"

    def __init__(self, api_key: str, config: PerspectiveJudgeConfig):
        self._api_key = api_key
        self.config = config
        cache_file = Path(config.cache_file) if config.cache_file else mbad_home() / "cache" / "perspective.sqlite"
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        self._cache = sqlite3.connect(cache_file)
        self._cache.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL)")
        self._last_request = 0.0
        self.requests_sent = 0

    def __repr__(self) -> str:  # never show the key
        return f"PerspectiveJudge(url={self.config.url!r}, qps={self.config.queries_per_second})"

    @staticmethod
    def _cache_key(text: str, lang: str) -> str:
        return hashlib.sha256(f"{lang}\0{text}".encode()).hexdigest()

    def score(self, texts: Sequence[str], langs: Sequence[str]) -> list[float]:
        scores: list[float] = []
        for text, lang in tqdm(list(zip(texts, langs)), desc="perspective", unit="text", leave=False):
            key = self._cache_key(text, lang)
            row = self._cache.execute("SELECT score FROM scores WHERE key = ?", (key,)).fetchone()
            if row is None:
                value = self._request(text, lang)
                self._cache.execute("INSERT OR REPLACE INTO scores VALUES (?, ?)", (key, value))
                self._cache.commit()
            else:
                value = row[0]
            scores.append(float(value))
        return scores

    def _pace(self) -> None:
        wait = 1.0 / self.config.queries_per_second - (time.monotonic() - self._last_request)
        if wait > 0:
            time.sleep(wait)
        self._last_request = time.monotonic()

    def _request(self, text: str, lang: str) -> float:
        body = json.dumps(
            {
                "comment": {"text": text},
                "languages": [lang],
                "requestedAttributes": {"TOXICITY": {}},
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
                return float(payload["attributeScores"]["TOXICITY"]["summaryScore"]["value"])
            except urllib.error.HTTPError as error:
                detail = error.read()[:300].decode("utf-8", errors="replace")
                if error.code not in RETRIABLE or attempt == self.config.max_retries:
                    raise PerspectiveError(f"Perspective API answered {error.code} for a '{lang}' text: {detail}") from None
                retry_after = error.headers.get("Retry-After")
                delay = float(retry_after) if retry_after else self.config.backoff_seconds * 2**attempt
                logger.warning("Perspective API answered %s; retrying in %.1f s", error.code, delay)
                time.sleep(delay)
            except urllib.error.URLError as error:
                if attempt == self.config.max_retries:
                    raise PerspectiveError(f"Perspective API unreachable: {error.reason}") from None
                time.sleep(self.config.backoff_seconds * 2**attempt)
        raise AssertionError("unreachable")
