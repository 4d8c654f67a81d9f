import random
import re

from engine.data.sentences import SentenceGenerator, normalize_text, number_words, year_words


def test_full_tier_has_over_a_thousand_words_and_demo_a_few_hundred():
    full = SentenceGenerator("full").unique_sentences(20_000, seed=0)
    demo = SentenceGenerator("demo").unique_sentences(3_000, seed=0)
    full_vocab = {w for s in full for w in s.text.split()}
    demo_vocab = {w for s in demo for w in s.text.split()}
    assert len(full_vocab) >= 1000, len(full_vocab)
    assert 200 <= len(demo_vocab) <= 600, len(demo_vocab)
    assert len({s.text for s in full}) == 20_000


def test_deterministic_in_seed():
    g = SentenceGenerator("full")
    a = [s.text for s in g.unique_sentences(200, seed=3)]
    assert a == [s.text for s in g.unique_sentences(200, seed=3)]
    assert a != [s.text for s in g.unique_sentences(200, seed=4)]


def test_varied_templates_questions_numbers_dates():
    sents = SentenceGenerator("full").unique_sentences(3000, seed=1)
    templates = {s.template for s in sents}
    assert {"yes-no question", "wh question", "how many", "quantity", "date", "time",
            "reported", "imperative"} <= templates
    assert any(s.spoken.endswith("?") for s in sents)
    assert any(" BORN IN " in s.text for s in sents)


def test_subject_verb_agreement():
    g = SentenceGenerator("full")
    rng = random.Random(0)
    for _ in range(2000):
        s = g.sentence(rng)
        t = s.text
        # third person singular pronouns never take the bare plural auxiliaries, and vice versa
        assert not re.match(r"^(HE|SHE) (HAVE|ARE|WERE|DO) ", t), t
        assert not re.match(r"^(THEY|WE|YOU) (HAS|IS|WAS|DOES) ", t), t
        assert not re.match(r"^I (IS|ARE|HAS) ", t), t
        assert not re.search(r"^(DOES|DO) (HE|SHE) \w+S ", t) or t.split()[2].endswith("SS"), t


def test_numbers_and_years_as_words():
    assert number_words(0) == "zero"
    assert number_words(42) == "forty two"
    assert number_words(105) == "one hundred and five"
    assert year_words(1984) == "nineteen eighty four"
    assert year_words(2009) == "two thousand and nine"
    assert year_words(1905) == "nineteen oh five"
    assert year_words(2000) == "two thousand"


def test_normalize_text_is_librispeech_style():
    assert normalize_text("Did Anna's dog run, at seven o'clock?") == "DID ANNA'S DOG RUN AT SEVEN O'CLOCK"
