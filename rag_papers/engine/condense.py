"""Condensing a follow-up without an LLM.

A follow-up such as "How does it decide when to retrieve?" cannot be searched on its own.
With an LLM configured, PaperQA.condense asks the model to rewrite it. In extractive mode
(no LLM) it calls :func:`condense_heuristic`, which works like this:

1. A follow-up *refers back* when it contains an anaphor (it, its, they, them, their, this,
   these, those, he, she; "that" only where it cannot be a conjunction: first or last word,
   or after a preposition or auxiliary as in "how does that work"), a phrase such as
   "the paper", "the method", "the model", "the approach", "the authors", or when it opens
   with "what about", "how about", "and", "but", "also", "what else", "tell me more"...
2. It is *short* when it has at most three words, or no key term at all, and names
   nothing of its own (no acronym, CamelCase, digit or capitalised name): "Limitations?",
   "Any numbers?". "What is RAPTOR?" names something and is left alone.
3. Either way it is rewritten by appending, in parentheses, the key terms of the previous
   standalone question (going back at most three turns to find some): runs of content
   words, stop words and question verbs removed, names and acronyms first, at most six,
   terms already in the follow-up skipped. "How does it decide when to retrieve?" after
   "What does Self-RAG add to retrieval-augmented generation?" becomes
   "How does it decide when to retrieve? (Self-RAG, retrieval-augmented generation)".
   Because the previous *standalone* question is used, a subject carries over chains of
   follow-ups. Anything else is returned unchanged. The heuristic never replaces the
   pronoun (which needs a parser to do well); retrieval only needs the terms.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag_papers.core.text import STOPWORDS

__all__ = ["condense_heuristic"]

_ANAPHORA_WORDS = (
    "it its it's itself they them their theirs themselves this these those he she his her"
)
_ANAPHORA = frozenset(_ANAPHORA_WORDS.split())
# "that" is a pronoun (not a conjunction) after these words: "how does that work".
_BEFORE_THAT_WORDS = "about of in on with for from to like behind is was does did do are were than"
_BEFORE_THAT = frozenset(_BEFORE_THAT_WORDS.split())
_REFERRING_NOUNS = (
    "paper|papers|method|methods|model|models|approach|approaches|authors|framework|technique|"
    "system|study|work|results|idea|architecture|dataset|benchmark|same"
)
_REFERRING = re.compile(rf"\b(?:the|that|this|these|those|such)\s+(?:{_REFERRING_NOUNS})\b", re.I)
_OPENERS = re.compile(
    r"^\s*(?:what about|how about|and|but|also|so|what else|anything else|tell me more|"
    r"more about|more on|same for|compared to|compared with|how so|why so)\b",
    re.I,
)
# Words that carry no subject: stop words plus question words and generic question verbs.
_QUESTION_TEXT = (
    "what which who whom whose why how when where whether is are was were be been being do does "
    "did done doing can could would should will shall might must there here you your i me my "
    "add adds added mean means say says said tell explain describe give gives compare differ "
    "differs about any some much many more less else like please vs versus one ones"
)
_GENERIC = STOPWORDS | frozenset(_QUESTION_TEXT.split())
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[.\-'’][A-Za-z0-9]+)*")
_MAX_TERMS = 6


def _is_name(token: str, first: bool) -> bool:
    """Acronyms (RAG), CamelCase or hyphenated names (Self-RAG, LLaMA), digits (GPT-4)."""
    if any(c.isdigit() for c in token):
        return True
    if sum(c.isupper() for c in token) >= 2 or any(c.isupper() for c in token[1:]):
        return True
    return token[:1].isupper() and not first


def _key_terms(text: str) -> list[str]:
    """Runs of adjacent content words (at most four), names first, in order, deduplicated."""
    runs: list[list[tuple[str, bool]]] = [[]]
    last_end = 0
    for i, m in enumerate(_TOKEN.finditer(text)):
        token = m.group(0)
        gap = text[last_end : m.start()]
        last_end = m.end()
        if gap.strip() or token.lower() in _GENERIC or len(token) < 2 or len(runs[-1]) >= 4:
            runs.append([])  # punctuation, a stop word or a long run ends the term
        if token.lower() not in _GENERIC and len(token) >= 2:
            runs[-1].append((token, _is_name(token, first=i == 0)))
    terms: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for run in runs:
        if run and (phrase := " ".join(t for t, _ in run)).lower() not in seen:
            seen.add(phrase.lower())
            terms.append((phrase, any(n for _, n in run)))
    return [t for t, n in terms if n] + [t for t, n in terms if not n]


def _refers_back(question: str) -> bool:
    tokens = [t.lower() for t in _TOKEN.findall(question)]
    if _ANAPHORA & set(tokens) or _REFERRING.search(question) or _OPENERS.match(question):
        return True
    for i, tok in enumerate(tokens):
        if tok == "that" and (i in (0, len(tokens) - 1) or tokens[i - 1] in _BEFORE_THAT):
            return True
    return False


def _is_short(question: str) -> bool:
    tokens = _TOKEN.findall(question)
    names = any(_is_name(t, first=i == 0) for i, t in enumerate(tokens))
    return not names and (len(tokens) <= 3 or not _key_terms(question))


def condense_heuristic(question: str, history: Sequence[tuple[str, str]]) -> str:
    """Rewrite a follow-up into a standalone question without an LLM (see the module doc).

    ``history`` holds (question, answer) pairs, oldest first; the first element is taken as
    the earlier *standalone* question. Returns ``question`` unchanged when it neither refers
    back nor is short, or when there is nothing to add.
    """
    if not history or not question.strip():
        return question
    if not (_refers_back(question) or _is_short(question)):
        return question
    present = {t.lower() for t in _TOKEN.findall(question)}
    for previous, _ in reversed(history[-3:]):
        terms = [
            t
            for t in _key_terms(previous)
            if not all(w.lower() in present for w in _TOKEN.findall(t))
        ][:_MAX_TERMS]
        if terms:
            return f"{question.strip()} ({', '.join(terms)})"
    return question
