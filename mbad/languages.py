"""The language registry (`configs/languages.yaml`) and Unicode script detection."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from mbad.paths import REPO_ROOT

# The registry shipped with the code (relative to it): `DataConfig.languages_file`'s default.
DEFAULT_LANGUAGES_FILE = "configs/languages.yaml"

# Prefix of a character's Unicode name -> the script name used in the registry.
_SCRIPT_PREFIXES = {
    "LATIN": "Latin",
    "CYRILLIC": "Cyrillic",
    "CJK": "Han",
    "ARABIC": "Arabic",
    "DEVANAGARI": "Devanagari",
    "ETHIOPIC": "Ethiopic",
    "GREEK": "Greek",
    "HEBREW": "Hebrew",
    "BENGALI": "Bengali",
    "TAMIL": "Tamil",
    "THAI": "Thai",
    "HANGUL": "Hangul",
    "HIRAGANA": "Japanese",
    "KATAKANA": "Japanese",
    "GEORGIAN": "Georgian",
    "ARMENIAN": "Armenian",
}


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    script: str
    resource: str = "unknown"


class LanguageRegistry:
    """Known languages, loaded from a YAML file; adding a language is one line there."""

    def __init__(self, languages: list[Language], source: str = "<memory>"):
        self.source = source
        self._by_code = {language.code: language for language in languages}

    @classmethod
    def from_yaml(cls, path: str | Path) -> LanguageRegistry:
        path = Path(path)
        if not path.is_absolute():
            path = REPO_ROOT / path
        if not path.exists():
            raise FileNotFoundError(f"language registry {path} does not exist")
        entries = yaml.safe_load(path.read_text(encoding="utf-8")).get("languages", [])
        for entry in entries:
            if entry.get("script") not in set(_SCRIPT_PREFIXES.values()):
                raise ValueError(
                    f"{path}: language {entry.get('code')!r} has unknown script "
                    f"{entry.get('script')!r}; known: {sorted(set(_SCRIPT_PREFIXES.values()))}"
                )
        return cls([Language(**entry) for entry in entries], source=str(path))

    @property
    def codes(self) -> list[str]:
        return list(self._by_code)

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __getitem__(self, code: str) -> Language:
        if code not in self._by_code:
            raise KeyError(
                f"language {code!r} is not in the registry {self.source}: add a line "
                f"'- {{code: {code}, name: ..., script: ...}}' there"
            )
        return self._by_code[code]

    def script(self, code: str) -> str:
        return self[code].script

    def codes_with_script(self, script: str | None) -> list[str]:
        """The registry's languages written in `script`, in registry order."""
        return [code for code, language in self._by_code.items() if language.script == script]


@lru_cache(maxsize=65536)
def char_script(char: str) -> str | None:
    """The script of one letter, or None for characters without one."""
    try:
        name = unicodedata.name(char)
    except ValueError:
        return None
    for prefix, script in _SCRIPT_PREFIXES.items():
        if name.startswith(prefix):
            return script
    return None


def script_share(text: str, script: str) -> float:
    """Share of the letters of `text` written in `script`; 1.0 when it has no letters."""
    letters = [char for char in text if unicodedata.category(char).startswith("L")]
    if not letters:
        return 1.0
    return sum(char_script(char) == script for char in letters) / len(letters)


def letters_by_script(text: str) -> dict[str | None, int]:
    """How many letters of `text` each script has (None: letters of scripts not in the table)."""
    counts: dict[str | None, int] = {}
    for char in text:
        if unicodedata.category(char).startswith("L"):
            script = char_script(char)
            counts[script] = counts.get(script, 0) + 1
    return counts
