"""A generator of varied English sentences for the synthesized corpus.

Statements, questions, imperatives, numbers, names, dates and times, with subject-verb agreement
(``the dog runs``, ``the dogs run``, ``does the dog run``), tense (past, present, progressive,
future) and verbs that take only sensible objects. Each sentence comes in two forms:

- ``spoken``: what the synthesizer reads (with punctuation, so questions get question intonation);
- ``text``: the transcript, normalised as LibriSpeech is (upper case, words and apostrophes only).

Numbers are written as words in both forms, so the speech says exactly what the transcript says.
Everything is drawn from a ``random.Random`` the caller seeds, so a seed fixes the corpus.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from engine.data import lexicon as L


@dataclass(frozen=True)
class Sentence:
    spoken: str
    text: str
    template: str


@dataclass(frozen=True)
class Tier:
    """How much of each word list a corpus size draws on (the lists are ordered core-first)."""

    nouns_per_class: int
    transitive_verbs: int
    intransitive_verbs: int
    adjectives: int
    adverbs: int
    names: int
    cities: int
    max_number: int  # largest cardinal spoken
    ordinals: int


TIERS: dict[str, Tier] = {
    # A few hundred words: learnable by a small transducer in minutes on two cores.
    "demo": Tier(nouns_per_class=10, transitive_verbs=20, intransitive_verbs=8, adjectives=20,
                 adverbs=6, names=12, cities=6, max_number=20, ordinals=10),
    # Everything: well over a thousand distinct words.
    "full": Tier(nouns_per_class=10_000, transitive_verbs=10_000, intransitive_verbs=10_000,
                 adjectives=10_000, adverbs=10_000, names=10_000, cities=10_000, max_number=99,
                 ordinals=20),
}


@dataclass(frozen=True)
class Noun:
    singular: str
    plural: str
    cls: str


@dataclass(frozen=True)
class Verb:
    base: str
    past: str
    participle: str
    ing: str
    objects: tuple[str, ...] = ()

    @property
    def third(self) -> str:
        """Third person singular present: goes, watches, carries, has."""
        b = self.base
        if b == "have":
            return "has"
        if re.search(r"(s|sh|ch|x|z|o)$", b):
            return b + "es"
        if re.search(r"[^aeiou]y$", b):
            return b[:-1] + "ies"
        return b + "s"


def _plural(word: str) -> str:
    if re.search(r"(s|sh|ch|x|z)$", word):
        return word + "es"
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    return word + "s"


def _parse_verb(spec: str, objects: tuple[str, ...] = ()) -> Verb:
    base, past, participle, ing = spec.split()
    return Verb(base, past, past if participle == "-" else participle, ing, objects)


def number_words(n: int) -> str:
    """0..999 as spoken English words ("one hundred and five")."""
    assert 0 <= n < 1000, n
    if n < 20:
        return L.ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return L.TENS[tens] + ("" if ones == 0 else " " + L.ONES[ones])
    hundreds, rest = divmod(n, 100)
    head = L.ONES[hundreds] + " hundred"
    return head if rest == 0 else head + " and " + number_words(rest)


def year_words(year: int) -> str:
    """A year as people say it: nineteen eighty four, two thousand and nine, twenty twelve."""
    hi, lo = divmod(year, 100)
    if year == 2000:
        return "two thousand"
    if 2000 < year < 2010:
        return "two thousand and " + L.ONES[lo]
    if lo == 0:
        return number_words(hi) + " hundred"
    if lo < 10:
        return number_words(hi) + " oh " + L.ONES[lo]
    return number_words(hi) + " " + number_words(lo)


class SentenceGenerator:
    """Draws sentences from the grammar for one corpus tier ("demo" or "full")."""

    def __init__(self, tier: str = "full") -> None:
        if tier not in TIERS:
            raise ValueError(f"unknown sentence tier {tier!r}; expected one of {sorted(TIERS)}")
        t = TIERS[tier]
        self.tier = tier
        self.nouns: dict[str, list[Noun]] = {}
        for cls, block in L.NOUNS.items():
            items = []
            for spec in block.split()[: t.nouns_per_class]:
                sing, _, plur = spec.partition("/")
                items.append(Noun(sing, plur or _plural(sing), cls))
            self.nouns[cls] = items
        self.transitive = [_parse_verb(s, o) for s, o in L.VERBS_TRANSITIVE[: t.transitive_verbs]]
        self.intransitive = [_parse_verb(s) for s in L.VERBS_INTRANSITIVE[: t.intransitive_verbs]]
        self.adjectives = L.ADJECTIVES.split()[: t.adjectives]
        self.adverbs = L.ADVERBS.split()[: t.adverbs]
        self.names = L.NAMES.split()[: t.names]
        self.cities = L.PLACES_PROPER.split()[: t.cities]
        self.months = L.MONTHS.split()
        self.weekdays = L.WEEKDAYS.split()
        self.max_number = t.max_number
        self.ordinals = L.ORDINALS[: t.ordinals]
        self._proper = frozenset(self.names + self.cities + self.months + self.weekdays)
        self._templates = [
            (4, self._transitive_statement),
            (2, self._intransitive_statement),
            (2, self._yes_no_question),
            (1, self._wh_question),
            (1, self._how_many_question),
            (1, self._quantity_statement),
            (1, self._date_statement),
            (1, self._time_statement),
            (1, self._copula_statement),
            (1, self._reported_speech),
            (1, self._imperative),
            (1, self._travel_statement),
        ]

    # ----- building blocks -------------------------------------------------------------------
    def _noun(self, rng: random.Random, classes: tuple[str, ...]) -> Noun:
        cls = rng.choice([c for c in classes if self.nouns.get(c)])
        return rng.choice(self.nouns[cls])

    def _count(self, rng: random.Random) -> int:
        return rng.randint(2, self.max_number)

    def _noun_phrase(self, rng: random.Random, classes: tuple[str, ...], plural: bool | None = None
                     ) -> tuple[str, bool]:
        """Returns (phrase, is_plural)."""
        noun = self._noun(rng, classes)
        plural = rng.random() < 0.35 if plural is None else plural
        adj = rng.choice(self.adjectives) + " " if rng.random() < 0.45 else ""
        if plural:
            det = rng.choice(["the", "the", "some", "these", "those", "my", "our", "their",
                              number_words(self._count(rng))])
            return f"{det} {adj}{noun.plural}", True
        det = rng.choice(["the", "the", "the", "a", "this", "that", "my", "your", "her", "his"])
        if det == "a" and (adj or noun.singular)[0] in "aeiou":
            det = "an"
        return f"{det} {adj}{noun.singular}", False

    def _subject(self, rng: random.Random, animals: bool = True) -> tuple[str, str]:
        """Returns (subject, person) with person in {"1s", "2", "3s", "3p", "1p"}."""
        r = rng.random()
        if r < 0.25:
            return rng.choice(self.names), "3s"
        if r < 0.33:
            a, b = rng.sample(self.names, 2)
            return f"{a} and {b}", "3p"
        if r < 0.45:
            pron, person = rng.choice([("i", "1s"), ("you", "2"), ("he", "3s"), ("she", "3s"),
                                       ("we", "1p"), ("they", "3p")])
            return pron, person
        np, plural = self._noun_phrase(rng, ("person", "person", "animal") if animals else ("person",))
        return np, "3p" if plural else "3s"

    def _verb_phrase(self, rng: random.Random, verb: Verb, person: str) -> str:
        """A tensed verb agreeing with the subject."""
        tense = rng.choice(["present", "past", "past", "progressive", "future", "perfect"])
        if tense == "present":
            return verb.third if person == "3s" else verb.base
        if tense == "past":
            return verb.past
        if tense == "progressive":
            be = {"1s": "am", "3s": "is"}.get(person, "are")
            if rng.random() < 0.4:
                be = {"1s": "was", "3s": "was"}.get(person, "were")
            return f"{be} {verb.ing}"
        if tense == "future":
            return f"will {verb.base}"
        return f"{'has' if person == '3s' else 'have'} {verb.participle}"

    def _adjunct(self, rng: random.Random) -> str:
        r = rng.random()
        if r < 0.3:
            place = self._noun(rng, ("place",)).singular
            prep = rng.choice(["in the", "near the", "behind the", "at the", "outside the"])
            return f" {prep} {place}"
        if r < 0.45:
            return " " + rng.choice(self.adverbs)
        if r < 0.55:
            return " on " + rng.choice(self.weekdays)
        if r < 0.62:
            return " " + rng.choice(["yesterday", "today", "last night", "this morning",
                                     "every day", "after lunch"])
        return ""

    # ----- templates -------------------------------------------------------------------------
    def _transitive_statement(self, rng):
        subj, person = self._subject(rng)
        verb = rng.choice(self.transitive)
        obj, _ = self._noun_phrase(rng, verb.objects)
        return f"{subj} {self._verb_phrase(rng, verb, person)} {obj}{self._adjunct(rng)}.", "transitive"

    def _intransitive_statement(self, rng):
        subj, person = self._subject(rng)
        verb = rng.choice(self.intransitive)
        adjunct = self._adjunct(rng) or " " + rng.choice(self.adverbs)
        return f"{subj} {self._verb_phrase(rng, verb, person)}{adjunct}.", "intransitive"

    def _yes_no_question(self, rng):
        subj, person = self._subject(rng)
        verb = rng.choice(self.transitive)
        obj, _ = self._noun_phrase(rng, verb.objects)
        aux = rng.choice(["did", "will", "can", "should",
                          "does" if person == "3s" else "do"])
        return f"{aux} {subj} {verb.base} {obj}?", "yes-no question"

    def _wh_question(self, rng):
        subj, person = self._subject(rng)
        verb = rng.choice(self.transitive)
        wh = rng.choice(["where", "when", "why", "how"])
        obj, _ = self._noun_phrase(rng, verb.objects)
        if rng.random() < 0.5:
            return f"{wh} did {subj} {verb.base} {obj}?", "wh question"
        np, plural = self._noun_phrase(rng, verb.objects)
        who = rng.choice(["who", "which " + ("teacher" if "person" in verb.objects else "one")])
        return f"{who} {verb.past} {np}?", "wh question"

    def _how_many_question(self, rng):
        subj, person = self._subject(rng)
        noun = self._noun(rng, ("animal", "thing", "food"))
        aux = "does" if person == "3s" else "do"
        if rng.random() < 0.5:
            aux = "did"
        return f"how many {noun.plural} {aux} {subj} have?", "how many"

    def _quantity_statement(self, rng):
        subj, person = self._subject(rng, animals=False)
        n = self._count(rng)
        noun = self._noun(rng, ("food", "thing", "animal"))
        price = self._count(rng)
        currency = rng.choice(["dollars", "pounds", "euros", "cents"])
        verb = rng.choice(["bought", "sold", "ordered", "counted"])
        if rng.random() < 0.5:
            place = self._noun(rng, ("place",)).singular
            be = "is" if n == 1 else "are"
            return f"there {be} {number_words(n)} {noun.plural} in the {place}.", "quantity"
        return (f"{subj} {verb} {number_words(n)} {noun.plural} for {number_words(price)} "
                f"{currency}.", "quantity")

    def _date_statement(self, rng):
        subj, person = self._subject(rng)
        month = rng.choice(self.months)
        day = rng.choice(self.ordinals)
        r = rng.random()
        if r < 0.4:
            verb = rng.choice(self.transitive)
            obj, _ = self._noun_phrase(rng, verb.objects)
            return f"on the {day} of {month} {subj} {verb.past} {obj}.", "date"
        if r < 0.7:
            year = rng.randint(1900, 2030)
            was = "were" if person in ("2", "1p", "3p") else "was"
            return f"{subj} {was} born in {month} {year_words(year)}.", "date"
        event = rng.choice(["meeting", "party", "concert", "wedding", "market", "race"])
        return f"the {event} is on {rng.choice(self.weekdays)} the {day} of {month}.", "date"

    def _time_statement(self, rng):
        hour = number_words(rng.randint(1, 12))
        minute = rng.choice(["", " fifteen", " thirty", " forty five", " o'clock", " ten"])
        vehicle = self._noun(rng, ("vehicle",)).singular
        city = rng.choice(self.cities)
        verb = rng.choice(["leaves", "arrives", "stops", "returns"])
        part = rng.choice(["in the morning", "in the evening", "at night", "tomorrow", ""])
        return f"the {vehicle} to {city} {verb} at {hour}{minute} {part}".rstrip() + ".", "time"

    def _copula_statement(self, rng):
        np, plural = self._noun_phrase(rng, tuple(self.nouns))
        past = rng.random() < 0.5
        be = ("were" if plural else "was") if past else ("are" if plural else "is")
        adv = rng.choice(["", "very ", "quite ", "too ", "not "])
        question = rng.random() < 0.3
        adj = rng.choice(self.adjectives)
        if question:
            return f"{be} {np} {adv}{adj}?", "copula"
        return f"{np} {be} {adv}{adj}.", "copula"

    def _reported_speech(self, rng):
        speaker = rng.choice(self.names)
        verb = rng.choice(["said", "thought", "told me", "heard", "knew"])
        inner, _ = self._transitive_statement(rng)
        return f"{speaker} {verb} that {inner}", "reported"

    def _imperative(self, rng):
        verb = rng.choice(self.transitive)
        obj, _ = self._noun_phrase(rng, verb.objects)
        head = rng.choice(["please ", "", "don't ", "never ", "always "])
        return f"{head}{verb.base} {obj}{self._adjunct(rng)}.", "imperative"

    def _travel_statement(self, rng):
        subj, person = self._subject(rng)
        city = rng.choice(self.cities)
        vehicle = self._noun(rng, ("vehicle",)).singular
        verb = _parse_verb("travel travelled - travelling")
        return f"{subj} {self._verb_phrase(rng, verb, person)} to {city} by {vehicle}.", "travel"

    # ----- public ----------------------------------------------------------------------------
    def sentence(self, rng: random.Random) -> Sentence:
        weights = [w for w, _ in self._templates]
        fn = rng.choices([f for _, f in self._templates], weights=weights)[0]
        spoken, template = fn(rng)
        spoken = spoken[0].upper() + spoken[1:]
        spoken = re.sub(r"\bi\b", "I", spoken)
        spoken = re.sub(r"\b[a-z]+\b", lambda m: m[0].capitalize() if m[0] in self._proper else m[0], spoken)
        return Sentence(spoken=spoken, text=normalize_text(spoken), template=template)

    def unique_sentences(self, n: int, seed: int) -> list[Sentence]:
        """``n`` sentences with distinct transcripts, deterministic in ``seed``."""
        rng = random.Random(seed)
        seen: set[str] = set()
        out: list[Sentence] = []
        tries = 0
        while len(out) < n:
            tries += 1
            if tries > 50 * n + 1000:
                raise RuntimeError(f"tier {self.tier!r} cannot make {n} distinct sentences")
            s = self.sentence(rng)
            if s.text not in seen:
                seen.add(s.text)
                out.append(s)
        return out


def normalize_text(text: str) -> str:
    """LibriSpeech-style transcript: upper case, letters, apostrophes and single spaces."""
    text = text.upper().replace("-", " ")
    text = re.sub(r"[^A-Z' ]+", " ", text)
    return " ".join(text.split())
