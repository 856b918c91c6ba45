"""Evaluation datasets: typed JSONL rows, loading with file:line errors, gold resolution,
and the SciFact claims converter.

The format is defined in eval/datasets/README.md: one JSON object per line with ``id``,
``question``, ``gold_titles``, optional ``gold_ids``, ``facts``, ``reference``, ``type``,
``named`` and optional ``labels``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rag_papers import QUESTION_TYPES
from rag_papers.core.papers import normalise_title
from rag_papers.core.specs import QuestionType  # not exported by rag_papers (yet)

if TYPE_CHECKING:
    from rag_papers import Paper

__all__ = [
    "QUESTION_TYPES",
    "Dataset",
    "DatasetError",
    "EvalQuestion",
    "GoldResolution",
    "PaperSource",
    "QuestionType",
    "load_dataset",
    "resolve_gold",
    "scifact_to_dataset",
    "write_dataset",
]


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message names file:line and the field."""


class EvalQuestion(BaseModel):
    """One question of an evaluation dataset (see eval/datasets/README.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    gold_titles: list[str] = Field(default_factory=list)
    gold_ids: list[str] = Field(default_factory=list)
    labels: dict[str, Literal["SUPPORT", "CONTRADICT"]] = Field(default_factory=dict)
    facts: list[str]
    reference: str
    type: QuestionType
    named: bool

    @field_validator("id", "question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EvalQuestion:
        has_gold = bool(self.gold_titles or self.gold_ids)
        if self.type == "unanswerable" and (has_gold or self.facts):
            raise ValueError("an unanswerable question has no gold_titles, gold_ids or facts")
        if self.type != "unanswerable" and not has_gold:
            raise ValueError("an answerable question needs gold_titles or gold_ids")
        if unknown := sorted(set(self.labels) - set(self.gold_ids)):
            raise ValueError(f"labels name ids that are not in gold_ids: {', '.join(unknown)}")
        return self

    @property
    def answerable(self) -> bool:
        return self.type != "unanswerable"


@dataclass(slots=True)
class Dataset:
    """The questions of one file, with where they came from."""

    questions: list[EvalQuestion]
    path: Path | None = None
    sha256: str = ""

    @property
    def name(self) -> str:
        return self.path.stem if self.path else "dataset"

    def __len__(self) -> int:
        return len(self.questions)

    def __iter__(self) -> Iterator[EvalQuestion]:
        return iter(self.questions)

    def head(self, n: int | None) -> Dataset:
        """The first ``n`` questions (all when None), same path and hash."""
        if n is None:
            return self
        return Dataset(self.questions[:n], self.path, self.sha256)


def _describe(error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error.get("loc", ())) or "record"
    return f"field {where!r}: {error.get('msg', 'invalid')}"


def load_dataset(path: Path | str) -> Dataset:
    """Read and validate a dataset file; the first bad line raises DatasetError (file:line)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    questions: list[EvalQuestion] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except UnicodeDecodeError:
            raise DatasetError(f"{path}:{number}: not UTF-8") from None
        except ValueError as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise DatasetError(f"{path}:{number}: invalid JSON: {msg}") from None
        if not isinstance(record, dict):
            got = type(record).__name__
            raise DatasetError(f"{path}:{number}: expected a JSON object, got {got}")
        try:
            question = EvalQuestion.model_validate(record)
        except ValidationError as exc:
            problems = "; ".join(_describe(e) for e in exc.errors())
            raise DatasetError(f"{path}:{number}: {problems}") from None
        if question.id in first_line:
            raise DatasetError(
                f"{path}:{number}: field 'id': duplicate id {question.id!r} "
                f"(first on line {first_line[question.id]})"
            )
        first_line[question.id] = number
        questions.append(question)
    if not questions:
        raise DatasetError(f"{path}: no questions")
    return Dataset(questions, path, hashlib.sha256(data).hexdigest())


def write_dataset(questions: Iterable[EvalQuestion], path: Path | str) -> int:
    """Write questions as JSONL (compact, key order of the model); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for q in questions:
            record = q.model_dump(exclude_defaults=False)
            if not record["labels"]:
                record.pop("labels")
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


# --- gold resolution ---------------------------------------------------------------------
class _Page(Protocol):
    @property
    def papers(self) -> Sequence[Paper]: ...


class PaperSource(Protocol):
    """Where gold is looked up: PaperQA's ``papers`` and ``list_papers`` (or a stand-in)."""

    def papers(self, ids: Sequence[str]) -> Mapping[str, Paper]: ...

    def list_papers(self, *, limit: int | None = None, offset: int = 0) -> _Page: ...


@dataclass(slots=True)
class GoldResolution:
    """Gold paper ids per question id, and what could not be resolved."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    unresolved: dict[str, list[str]] = field(default_factory=dict)  # qid -> titles/ids
    ambiguous: dict[str, list[str]] = field(default_factory=dict)  # qid -> titles

    def warnings(self) -> list[str]:
        out = [
            f"{qid}: gold not in the index: {', '.join(items)}"
            for qid, items in sorted(self.unresolved.items())
        ]
        out += [
            f"{qid}: gold title matches several papers: {', '.join(items)}"
            for qid, items in sorted(self.ambiguous.items())
        ]
        return out


def resolve_gold(questions: Sequence[EvalQuestion], index: PaperSource) -> GoldResolution:
    """Map each question's gold to paper ids of the index (a PaperQA).

    ``gold_ids`` are used as they are. When a record has no ``gold_ids``, its
    ``gold_titles`` are matched on the normalised title (case, accents, punctuation).
    A title that matches several papers keeps all of them, in id order (and is reported).
    """
    by_title: dict[str, list[str]] = {}
    need_titles = any(q.gold_titles and not q.gold_ids for q in questions)
    if need_titles:
        for paper in index.list_papers().papers:
            by_title.setdefault(normalise_title(paper.title), []).append(paper.id)
        for same_title in by_title.values():
            same_title.sort()
    wanted_ids = sorted({pid for q in questions for pid in q.gold_ids})
    present = set(index.papers(wanted_ids)) if wanted_ids else set()
    out = GoldResolution()
    for q in questions:
        ids: list[str] = []
        missing: list[str] = []
        if q.gold_ids:
            ids = list(dict.fromkeys(q.gold_ids))
            missing = [pid for pid in ids if pid not in present]
        else:
            for title in q.gold_titles:
                found = by_title.get(normalise_title(title), [])
                if not found:
                    missing.append(title)
                elif len(found) > 1:
                    out.ambiguous.setdefault(q.id, []).append(title)
                ids.extend(pid for pid in found if pid not in ids)
        out.ids[q.id] = ids
        if missing:
            out.unresolved[q.id] = missing
    return out


# --- SciFact --------------------------------------------------------------------------------
def _corpus_titles(corpus: Path) -> dict[str, str]:
    """BEIR corpus id -> title, read with the project's own BEIR loader."""
    from rag_papers import LoaderError, load_papers

    try:
        result = load_papers(corpus, format="beir")
    except LoaderError as exc:
        raise DatasetError(str(exc)) from None
    if result.rejected:
        raise DatasetError(str(result.rejected[0]))
    return {p.id: p.title for p in result.papers}


def scifact_to_dataset(
    claims_jsonl: Path | str,
    corpus: Path | str | None = None,
    *,
    id_prefix: str = "scifact-",
) -> list[EvalQuestion]:
    """Turn SciFact claims (claims_dev.jsonl) into evaluation questions.

    - question = the claim; gold_ids = the doc ids with evidence (BEIR corpus ``_id``
      strings), labels = SUPPORT/CONTRADICT per evidence doc.
    - Claims without evidence (SciFact's NOT ENOUGH INFO, 112 of the 300 dev claims) are
      kept, with gold_ids = their ``cited_doc_ids`` and no labels: the cited abstract is the
      paper the claim was written about, so it is the right retrieval target (BEIR's
      SciFact qrels do the same), but it neither supports nor refutes the claim. They are
      *not* typed "unanswerable": in this format that means the corpus does not cover the
      topic, which is untrue here. An empty ``labels`` marks them.
    - type = "single" or "multi" by the number of gold docs; facts = [] and
      reference = "" (SciFact gives rationale sentence indices, not answer text).
    - When ``corpus`` (BEIR corpus.jsonl) is given, every gold id must be in it and the
      exact corpus titles are filled into gold_titles.

    Difference from BEIR's qrels: for 13 dev claims BEIR also counts cited docs without
    evidence as relevant; here only the evidence docs are gold.
    """
    claims_path = Path(claims_jsonl)
    titles = _corpus_titles(Path(corpus)) if corpus is not None else None
    out: list[EvalQuestion] = []
    with claims_path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{claims_path}:{number}"
            try:
                claim = json.loads(line)
                evidence: dict[str, list[dict[str, Any]]] = claim.get("evidence") or {}
                labels: dict[str, str] = {}
                for doc_id, sets in evidence.items():
                    kinds = {s["label"] for s in sets}
                    if len(kinds) != 1 or not kinds <= {"SUPPORT", "CONTRADICT"}:
                        raise DatasetError(f"{where}: doc {doc_id}: labels {sorted(kinds)}")
                    labels[str(doc_id)] = kinds.pop()
                gold = list(labels) or [str(d) for d in claim.get("cited_doc_ids") or []]
                text = str(claim["claim"]).strip()
                qid = f"{id_prefix}{claim['id']}"
            except (ValueError, KeyError, TypeError) as exc:
                if isinstance(exc, DatasetError):
                    raise
                raise DatasetError(f"{where}: not a SciFact claim record ({exc})") from None
            if not gold:
                raise DatasetError(f"{where}: claim {claim['id']} has no evidence or cited docs")
            gold_titles: list[str] = []
            if titles is not None:
                unknown = [d for d in gold if d not in titles]
                if unknown:
                    raise DatasetError(f"{where}: doc ids not in {corpus}: {', '.join(unknown)}")
                gold_titles = [titles[d] for d in gold]
            try:
                out.append(
                    EvalQuestion(
                        id=qid,
                        question=text,
                        gold_titles=gold_titles,
                        gold_ids=gold,
                        labels=labels,  # type: ignore[arg-type]
                        facts=[],
                        reference="",
                        type="multi" if len(gold) > 1 else "single",
                        named=False,
                    )
                )
            except ValidationError as exc:
                problems = "; ".join(_describe(e) for e in exc.errors())
                raise DatasetError(f"{where}: {problems}") from None
    return out
