"""Does the retrieved text contain what the question asks for?

Similarity says a paper is on topic; it cannot say the abstract states the learning rate,
the BLEU score or the number of GPU hours a question asks for. Two checks look at the
words themselves, so an on-topic question the abstracts cannot answer is declined:

- the *ask*: "how many GPU hours", "what BLEU score", "what peak learning rate" name a
  quantity. Some retrieved sentence must hold a number and the ask's terms
  (``ask_answered``); "how many X" and "what ... <metric>" are recognised.
- the *subject*: the question's content words that no retrieved abstract contains and the
  whole collection has never seen ("diarization", "tokamak") mean the question is about
  something the papers do not cover (``unseen_terms``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from rag_papers.core.text import STOPWORDS, split_sentences, words

__all__ = [
    "Ask",
    "Evidence",
    "ask_answered",
    "asks_for_one_paper",
    "assess",
    "common_words",
    "content_terms",
    "has_number",
    "papers_asked_for",
    "parse_ask",
    "stem_terms",
    "unseen_terms",
]

# Words of the question's frame, not of its subject.
QUESTION_WORDS = frozenset(
    """which what who whom whose when where why how paper papers work works study studies
    propose proposes proposed introduce introduces introduced use uses used using does
    do did is are was were the of in on for to and or with by from that this these those
    their its it as at be been can could would should any some many much most more there
    than into about between over under among one describe describes described present
    presents presented show shows shown find finds found report reports reported method
    methods approach approaches framework paper's authors author way ways kind kinds
    type types collection""".split()
)
# Heads that name a quantity: "what <...> score" asks for a number.
METRIC_HEADS = frozenset(
    """score scores rate rates accuracy error errors size sizes number numbers percentage
    speedup speed-up improvement improvements gain gains f1 bleu rouge perplexity
    r-squared auc latency throughput hours budget parameters count epochs steps tokens
    dimension dimensions value values ratio recall precision""".split()
)
# Parts of an ask that any number-bearing sentence satisfies.
GENERIC_ASK = frozenset(
    """score scores value values number numbers amount size sizes total""".split()
)
_NUMBER_WORDS = frozenset(
    """two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty
    hundred hundreds thousand thousands million millions billion billions trillion dozen
    dozens twofold threefold""".split()
)
_DIGIT = re.compile(r"\d")
_HOW_MANY = re.compile(r"\bhow\s+many\s+((?:[\w\-]+\s+){0,3}[\w\-]+)", re.I)
# "how much training time / data / memory": a measurable noun; "how much prior structure" is not.
_HOW_MUCH = re.compile(
    r"\bhow\s+much\s+((?:[\w\-]+\s+){0,2}(?:time|data|memory|compute|computation|energy|money|"
    r"speedup|improvement|gain|faster|larger|smaller|more|less|higher|lower))\b",
    re.I,
)
_WHAT_METRIC = re.compile(
    r"\bwhat\s+((?:[\w\-]+\s+){0,3}?(?:" + "|".join(sorted(METRIC_HEADS)) + r"))\b", re.I
)
_STOP_ASK = frozenset(
    """were was are is did does do has have had in on for to of by from with needed used
    can could would will than per and the a an it they""".split()
)


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer  # PyStemmer, as the BM25 index uses

    return Stemmer.Stemmer("english")


def stem_terms(terms: Iterable[str]) -> list[str]:
    """Snowball stems, hyphens dropped ('speed-up' and 'speedup' meet)."""
    return [s.replace("-", "") for s in _stemmer().stemWords([t.lower() for t in terms])]


def content_terms(question: str) -> list[str]:
    """The question's subject words: no stop words, no question frame, 3+ letters."""
    return [
        w
        for w in words(question)
        if w not in STOPWORDS and w not in QUESTION_WORDS and len(w) > 2 and not w.isdigit()
    ]


def has_number(sentence: str) -> bool:
    return bool(_DIGIT.search(sentence)) or any(w in _NUMBER_WORDS for w in words(sentence))


@dataclass(frozen=True, slots=True)
class Ask:
    """A quantity the question asks for: alternatives ("R-squared or MAE"), each a list of
    stemmed terms a sentence with a number must contain."""

    phrase: str
    alternatives: tuple[tuple[str, ...], ...]


def parse_ask(question: str) -> Ask | None:
    """The quantity a question asks for, or None when it asks for no number."""
    m = _HOW_MANY.search(question) or _HOW_MUCH.search(question) or _WHAT_METRIC.search(question)
    if m is None:
        return None
    phrase = m.group(1)
    kept: list[str] = []
    for i, w in enumerate(phrase.split()):
        low = w.lower()
        # "how many human labelers provided": a verb ends the noun phrase.
        if low in _STOP_ASK or (i and low.endswith("ed")):
            break
        kept.append(low)
    alternatives = []
    for part in " ".join(kept).split(" or "):
        terms = [t for t in part.split() if t not in GENERIC_ASK and t not in STOPWORDS]
        if terms:
            alternatives.append(tuple(stem_terms(terms)))
    return Ask(phrase=" ".join(kept), alternatives=tuple(alternatives))


def ask_answered(
    ask: Ask,
    sentences: Sequence[str],
    similarity: Callable[[list[str]], Any] | None = None,
    *,
    min_similarity: float = 1.0,
) -> bool:
    """Some sentence holds a number and every term of one alternative ("peak learning
    rate"), or holds a number and the alternative's head noun ("car designs" for "vehicle
    designs") and is close to the question: ``similarity`` gives the cosine of sentences
    to the question, and must reach ``min_similarity``."""
    numbered = [s for s in sentences if has_number(s)]
    if not ask.alternatives:
        return bool(numbered)
    headed: list[str] = []
    for sentence in numbered:
        present = set(stem_terms(words(sentence)))
        for alt in ask.alternatives:
            if all(t in present for t in alt):
                return True
            if alt[-1] in present:
                headed.append(sentence)
                break
    if headed and similarity is not None:
        return bool(max(similarity(headed)) >= min_similarity)
    return False


def unseen_terms(question: str, texts: Sequence[str], vocabulary: set[str]) -> list[str]:
    """The question's subject words found neither in ``texts`` (the retrieved abstracts)
    nor anywhere in the collection (``vocabulary``: stems of every indexed word)."""
    terms = content_terms(question)
    seen = set(stem_terms(w for t in texts for w in words(t)))
    out = []
    for term, stem in zip(terms, stem_terms(terms), strict=True):
        parts = [stem] if "-" not in term else stem_terms(term.split("-"))
        if stem in seen or stem in vocabulary:
            continue
        if all(p in seen or p in vocabulary for p in parts):
            continue  # "small-molecule": both halves are known words
        out.append(term)
    return list(dict.fromkeys(out))


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """Everyday English: the whole words of the bundled MiniLM (BERT) vocabulary. A subject
    word outside it ("diarization", "tokamak") is a technical term."""
    path = resources.files("rag_papers.data").joinpath("minilm/tokenizer.json")
    vocab = json.loads(path.read_text(encoding="utf-8"))["model"]["vocab"]
    return frozenset(w for w in vocab if w.isalpha() and w.islower())


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the retrieved text holds of the question's ask and subject."""

    ask: Ask | None
    ask_answered: bool
    unseen: tuple[str, ...]  # subject words neither retrieved nor in the collection

    @property
    def unseen_technical(self) -> tuple[str, ...]:
        common = common_words()
        return tuple(t for t in self.unseen if not all(p in common for p in t.split("-")))


def assess(
    question: str,
    texts: Sequence[str],
    vocabulary: set[str] | frozenset[str],
    *,
    similarity: Callable[[list[str]], Any] | None = None,
    min_similarity: float = 1.0,
) -> Evidence:
    """Evidence for ``question`` in ``texts`` (the best retrieved abstracts, title first)."""
    ask = parse_ask(question)
    sentences = [s for t in texts for s in split_sentences(t)]
    answered = ask is None or ask_answered(
        ask, sentences, similarity, min_similarity=min_similarity
    )
    unseen = unseen_terms(question, texts, set(vocabulary))
    return Evidence(ask=ask, ask_answered=answered, unseen=tuple(unseen))


# "Which paper ...", "what method ...", "which papers ...": the noun says how many papers the
# user expects. Declared once: the gate and the extractive answerer both read it.
_WHICH = re.compile(
    r"\b(?:which|what)\s+(?:[\w\-]+\s+){0,3}?(?P<noun>papers?|works?|stud(?:y|ies)|methods?|"
    r"approach(?:es)?|frameworks?|models?|systems?|techniques?|benchmarks?|datasets?)\b"
    r"|\bname the (?P<named>paper)\b",
    re.I,
)
_SINGULAR = frozenset(
    "paper work study method approach framework model system technique benchmark dataset".split()
)


def papers_asked_for(question: str) -> Literal["one", "many"] | None:
    """'one' for "which paper/method ...", 'many' for "which papers/methods ...", None when
    the question does not ask for papers by name."""
    m = _WHICH.search(question)
    if m is None:
        return None
    noun = (m["noun"] or m["named"]).lower()
    return "one" if noun in _SINGULAR else "many"


def asks_for_one_paper(question: str) -> bool:
    """'Which paper/method ...' (singular): the user expects one paper to stand out."""
    return papers_asked_for(question) == "one"
