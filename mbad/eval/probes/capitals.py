"""`capitals_accuracy`: which city is the capital of a country, asked in every language.

Facts come from Babel's CLDR data at run time: the localized country name
(`Locale.territories`) and the localized name of its capital, for capitals that are a time
zone's exemplar city (`Locale.time_zones`). Only the list of those time zones is written here.
A fact is dropped in a language where the capital's name is part of the country's (Tunis,
Tunisia) or the other way round, or where CLDR has no name for the city in the language's
script. Each question has 4 options: the capital and 3 other capitals of the same language,
drawn with the config's seed.

Scored as pointwise mutual information, as in multiple-choice evaluation of small LMs: an
option's score is log p(option | prompt about the country) minus log p(option | the same
prompt about "this country"), so a city that is likely in any sentence (a frequent name, a
short one) does not win for that alone. The argmax is the model's answer; value 1 if right.
Chance is 1/4.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from babel import Locale

from mbad.config import KnowledgeConfig
from mbad.eval.probes.indomain import ITEM_COLUMNS
from mbad.eval.probes.scoring import continuation_nll
from mbad.languages import script_share
from mbad.models import LoadedModel

OPTIONS_PER_QUESTION = 4

# Country (ISO 3166) -> the time zone whose exemplar city is its capital (capitals that are not
# an exemplar city, and countries whose CLDR name contains the capital's, are not listed).
CAPITAL_TIME_ZONES = {
    "AF": "Asia/Kabul", "AL": "Europe/Tirane", "AM": "Asia/Yerevan", "AO": "Africa/Luanda",
    "AR": "America/Buenos_Aires", "AT": "Europe/Vienna", "AZ": "Asia/Baku", "BA": "Europe/Sarajevo",
    "BD": "Asia/Dhaka", "BE": "Europe/Brussels", "BF": "Africa/Ouagadougou", "BG": "Europe/Sofia",
    "BJ": "Africa/Porto-Novo", "BS": "America/Nassau", "BT": "Asia/Thimphu", "BW": "Africa/Gaborone",
    "BY": "Europe/Minsk", "CF": "Africa/Bangui", "CL": "America/Santiago", "CO": "America/Bogota",
    "CU": "America/Havana", "CY": "Asia/Nicosia", "CZ": "Europe/Prague", "DE": "Europe/Berlin",
    "DK": "Europe/Copenhagen", "DO": "America/Santo_Domingo", "DZ": "Africa/Algiers", "EE": "Europe/Tallinn",
    "EG": "Africa/Cairo", "ER": "Africa/Asmera", "ES": "Europe/Madrid", "ET": "Africa/Addis_Ababa",
    "FI": "Europe/Helsinki", "FR": "Europe/Paris", "GA": "Africa/Libreville", "GB": "Europe/London",
    "GE": "Asia/Tbilisi", "GH": "Africa/Accra", "GM": "Africa/Banjul", "GN": "Africa/Conakry", "GQ": "Africa/Malabo",
    "GR": "Europe/Athens", "HN": "America/Tegucigalpa", "HR": "Europe/Zagreb", "HT": "America/Port-au-Prince",
    "HU": "Europe/Budapest", "ID": "Asia/Jakarta", "IE": "Europe/Dublin", "IQ": "Asia/Baghdad", "IR": "Asia/Tehran",
    "IS": "Atlantic/Reykjavik", "IT": "Europe/Rome", "JO": "Asia/Amman", "JP": "Asia/Tokyo", "KE": "Africa/Nairobi",
    "KG": "Asia/Bishkek", "KH": "Asia/Phnom_Penh", "KP": "Asia/Pyongyang", "KR": "Asia/Seoul", "LA": "Asia/Vientiane",
    "LB": "Asia/Beirut", "LI": "Europe/Vaduz", "LR": "Africa/Monrovia", "LS": "Africa/Maseru", "LT": "Europe/Vilnius",
    "LV": "Europe/Riga", "LY": "Africa/Tripoli", "MD": "Europe/Chisinau", "ME": "Europe/Podgorica",
    "MG": "Indian/Antananarivo", "MH": "Pacific/Majuro", "MK": "Europe/Skopje", "ML": "Africa/Bamako",
    "MN": "Asia/Ulaanbaatar", "MR": "Africa/Nouakchott", "MY": "Asia/Kuala_Lumpur", "MZ": "Africa/Maputo",
    "NA": "Africa/Windhoek", "NE": "Africa/Niamey", "NI": "America/Managua", "NL": "Europe/Amsterdam",
    "NO": "Europe/Oslo", "NP": "Asia/Katmandu", "OM": "Asia/Muscat", "PE": "America/Lima",
    "PG": "Pacific/Port_Moresby", "PH": "Asia/Manila", "PL": "Europe/Warsaw", "PT": "Europe/Lisbon",
    "PY": "America/Asuncion", "RO": "Europe/Bucharest", "RS": "Europe/Belgrade", "RU": "Europe/Moscow",
    "RW": "Africa/Kigali", "SA": "Asia/Riyadh", "SD": "Africa/Khartoum", "SE": "Europe/Stockholm",
    "SI": "Europe/Ljubljana", "SK": "Europe/Bratislava", "SL": "Africa/Freetown", "SN": "Africa/Dakar",
    "SO": "Africa/Mogadishu", "SR": "America/Paramaribo", "SS": "Africa/Juba", "SY": "Asia/Damascus",
    "SZ": "Africa/Mbabane", "TD": "Africa/Ndjamena", "TG": "Africa/Lome", "TH": "Asia/Bangkok", "TJ": "Asia/Dushanbe",
    "TL": "Asia/Dili", "TM": "Asia/Ashgabat", "TN": "Africa/Tunis", "TT": "America/Port_of_Spain",
    "TV": "Pacific/Funafuti", "UA": "Europe/Kiev", "UG": "Africa/Kampala", "UY": "America/Montevideo",
    "UZ": "Asia/Tashkent", "VE": "America/Caracas", "WS": "Pacific/Apia", "ZM": "Africa/Lusaka",
    "ZW": "Africa/Harare",
}


@dataclass(frozen=True)
class CapitalTemplate:
    """A native sentence start that the capital's name completes.

    `prompt` holds `{country}`, filled with `country` (itself holding `{name}`, for languages
    whose grammar wants a word around the name) or, for the neutral prompt, with `placeholder`.
    `separator` goes between the prompt and the option (none in Chinese)."""

    prompt: str
    placeholder: str
    country: str = "{name}"
    separator: str = " "

    def about(self, country_name: str) -> str:
        return self.prompt.format(country=self.country.format(name=country_name))

    def neutral(self) -> str:
        return self.prompt.format(country=self.placeholder)


TEMPLATES = {
    "en": CapitalTemplate("The capital of {country} is", "this country"),
    "es": CapitalTemplate("La capital de {country} es", "este país"),
    "de": CapitalTemplate("Die Hauptstadt von {country} ist", "diesem Land"),
    # Russian and Ukrainian decline a name after "capital of": "of the country <name>" keeps it nominative.
    "ru": CapitalTemplate("Столица {country} — город", "этой страны", country="страны {name}"),
    "uk": CapitalTemplate("Столиця {country} — місто", "цієї країни", country="країни {name}"),
    "zh": CapitalTemplate("{country}的首都是", "这个国家", separator=""),
    "ar": CapitalTemplate("عاصمة {country} هي", "هذا البلد"),
    # Hindi and Amharic put the verb last: the capital ends the sentence start ("France's capital [is] Paris").
    "hi": CapitalTemplate("{country} की राजधानी", "इस देश"),
    "am": CapitalTemplate("የ{country} ዋና ከተማ", "ዚህ አገር"),
}


@dataclass(frozen=True)
class CapitalFact:
    country_code: str
    country: str
    capital: str


@dataclass(frozen=True)
class CapitalQuestion:
    """One multiple-choice item: `options[answer]` is the capital of `country`."""

    country_code: str
    country: str
    options: tuple[str, ...]
    answer: int


def _city_name(locale: Locale, time_zone: str, country: str) -> str | None:
    city = locale.time_zones.get(time_zone, {}).get("city")
    if city:
        return str(city)
    # CLDR leaves out a city spelled as in the zone id; that spelling is Latin, so only Latin-script locales may use it.
    from_id = time_zone.rsplit("/", 1)[-1].replace("_", " ")
    return from_id if script_share(country, "Latin") == 1.0 else None


def capital_facts(lang: str) -> list[CapitalFact]:
    """The usable country -> capital facts of one language, sorted by country code."""
    if lang not in TEMPLATES:
        raise ValueError(f"no capitals template for language {lang!r}: add one to TEMPLATES in {__name__}, "
                         "or drop capitals_accuracy from knowledge.probes")
    locale = Locale.parse(lang)
    facts = []
    for code, time_zone in sorted(CAPITAL_TIME_ZONES.items()):
        country = locale.territories.get(code)
        capital = _city_name(locale, time_zone, country) if country else None
        if not country or not capital:
            continue
        if capital.casefold() in country.casefold() or country.casefold() in capital.casefold():
            continue  # the question would give its answer away
        facts.append(CapitalFact(code, str(country), capital))
    capitals = [fact.capital for fact in facts]
    return [fact for fact in facts if capitals.count(fact.capital) == 1]


def _rng(seed: int, *labels: str) -> np.random.Generator:
    digest = hashlib.sha256("\0".join([str(seed), *labels]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def capital_questions(lang: str, seed: int, max_questions: int | None = None) -> list[CapitalQuestion]:
    """Questions for one language: its facts in a seeded order (the first `max_questions`), each
    with 3 distractors drawn from the language's other capitals and the 4 options shuffled."""
    facts = capital_facts(lang)
    if len(facts) < OPTIONS_PER_QUESTION:
        raise ValueError(f"only {len(facts)} capital facts for {lang!r}; a question needs {OPTIONS_PER_QUESTION}")
    order = _rng(seed, "capitals", lang).permutation(len(facts))[:max_questions]
    questions = []
    for index in order:
        fact = facts[index]
        rng = _rng(seed, "capitals", lang, fact.country_code)
        others = [other.capital for other in facts if other.country_code != fact.country_code]
        options = [fact.capital, *rng.choice(others, size=OPTIONS_PER_QUESTION - 1, replace=False).tolist()]
        shuffled = rng.permutation(OPTIONS_PER_QUESTION)
        questions.append(CapitalQuestion(
            fact.country_code, fact.country, tuple(options[i] for i in shuffled), int(np.flatnonzero(shuffled == 0)[0])
        ))
    return questions


def pmi_choice(conditional: Sequence[float], unconditional: Sequence[float]) -> int:
    """The option with the highest log p(option | question) - log p(option | neutral prompt)
    (the first such option on a tie)."""
    if len(conditional) != len(unconditional) or not len(conditional):
        raise ValueError(f"need one conditional and one unconditional log-probability per option, got "
                         f"{len(conditional)} and {len(unconditional)}")
    return int(np.argmax(np.asarray(conditional, dtype=float) - np.asarray(unconditional, dtype=float)))


def capitals_accuracy(loaded: LoadedModel, test_pairs: pd.DataFrame, config: KnowledgeConfig) -> pd.DataFrame:
    """One row per question in each language of `test_pairs`: value 1.0 if the PMI choice is the
    capital, else 0.0; weight 1; item = the country code (the same country in every language)."""
    rows = []
    for lang in sorted(test_pairs["lang"].unique()):
        questions = capital_questions(str(lang), config.seed, config.max_facts_per_language)
        template = TEMPLATES[str(lang)]
        cities = sorted({option for question in questions for option in question.options})
        contexts = [template.about(q.country) for q in questions for _ in q.options] + [template.neutral()] * len(cities)
        options = [option for q in questions for option in q.options] + cities
        scores = continuation_nll(loaded, contexts, [template.separator + option for option in options],
                                  config.batch_size, desc=f"capitals_accuracy {lang}")
        log_probs = [-nll for nll, _ in scores]
        unconditional = dict(zip(cities, log_probs[len(log_probs) - len(cities):], strict=True))
        for number, question in enumerate(questions):
            conditional = log_probs[number * OPTIONS_PER_QUESTION:(number + 1) * OPTIONS_PER_QUESTION]
            choice = pmi_choice(conditional, [unconditional[option] for option in question.options])
            rows.append((str(lang), question.country_code, float(choice == question.answer), 1.0))
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)
