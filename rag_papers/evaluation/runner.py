"""Run an evaluation dataset through the engine (PaperQA.ask, the same call as `ask`).

Questions run in parallel threads; each finished question is appended to results.jsonl at
once (one flushed line), so an interrupted run resumes: rows already there with the same
question id, question text and settings fingerprint are not asked again. At the end the
metrics are computed from results.jsonl and summary.json, report.md and report.html written.
Everything goes through PaperQA's public methods.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_papers.evaluation.datasets import Dataset, EvalQuestion, load_dataset, resolve_gold
from rag_papers.evaluation.judge import LLMJudge, judge_prompt_hashes
from rag_papers.evaluation.metrics import default_metrics, evaluate_rows
from rag_papers.evaluation.reports import write_reports
from rag_papers.evaluation.rows import EvalRow
from rag_papers.evaluation.summary import RESULTS, RETRIEVAL_DEPTH, RunSummary

if TYPE_CHECKING:
    from rag_papers import PaperQA, Settings

__all__ = [
    "current_rows",
    "load_results",
    "run_eval",
    "run_fingerprint",
    "summarise",
]

Progress = Callable[[int, int, EvalRow | None], None]


def run_fingerprint(settings: Settings, *, llm: str | None, k: int | None) -> str:
    """The settings fingerprint of what this run asks: --llm and -k folded in."""
    update: dict[str, Any] = {}
    if llm is not None:
        update["llm"] = llm
    if k is not None:
        update["top_k"] = k
    return settings.model_copy(update=update).fingerprint()


def load_results(path: Path) -> list[EvalRow]:
    """Rows of a results.jsonl; a torn last line (killed mid-write) is ignored."""
    rows: list[EvalRow] = []
    if not path.is_file():
        return rows
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(EvalRow.model_validate_json(line))
        except ValueError:
            if number == len(lines):
                continue  # interrupted while writing: that question is simply asked again
            raise ValueError(f"{path}:{number}: not a results row") from None
    return rows


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (a write killed midway) before appending."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _ask_one(
    qa: PaperQA,
    q: EvalQuestion,
    gold: list[str],
    unresolved: list[str],
    titles: dict[str, str],
    *,
    fingerprint: str,
    llm: str | None,
    k: int | None,
    judge: LLMJudge | None,
) -> EvalRow:
    row = EvalRow(
        id=q.id,
        type=q.type,
        question=q.question,
        named=q.named,
        gold_ids=gold,
        gold_titles={pid: titles[pid] for pid in gold if pid in titles},
        gold_unresolved=unresolved,
        facts=list(q.facts),
        reference=q.reference,
        fingerprint=fingerprint,
    )
    t = time.perf_counter()
    try:
        answer = qa.ask(q.question, k=k, llm=llm)
        row.wall_s = round(time.perf_counter() - t, 4)
        row.answer = answer
        depth = max(RETRIEVAL_DEPTH, k or qa.settings.top_k)
        row.retrieved = [r.paper.id for r in qa.search(q.question, k=depth)]
    except Exception as exc:  # recorded, not raised: one bad question must not stop a run
        row.wall_s = round(time.perf_counter() - t, 4)
        row.error = f"{type(exc).__name__}: {exc}"
    if judge is not None:
        _judge_row(qa, row, judge)
    row.finished_at = _now()
    return row


def _judge_row(qa: PaperQA, row: EvalRow, judge: LLMJudge) -> EvalRow:
    """Judge an answered row against the abstracts that were shown to the answerer."""
    if row.ok and row.answer is not None:
        shown = [s.paper_id for s in row.answer.sources if s.marker is not None]
        papers = qa.papers(shown)
        contexts = [f"{papers[p].title}. {papers[p].abstract}" for p in shown if p in papers]
        row.judge = judge.judge(row, contexts)
        row.finished_at = _now()
    return row


def run_eval(
    qa: PaperQA,
    dataset: Dataset | Path | str,
    *,
    out_dir: Path | str,
    jobs: int = 1,
    llm: str | None = None,
    k: int | None = None,
    judge: LLMJudge | Any = None,
    limit: int | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Ask every question (in ``jobs`` threads), record, score and report; resumable.

    ``judge`` scores faithfulness/correctness: an LLMJudge (make_judge), an LLM backend
    (``qa.backend(spec)``), or None. ``progress(done, total, row)`` is called once before
    the first question (row None) and after each one.
    """
    from rag_papers import __version__

    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset)
    dataset = dataset.head(limit)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / RESULTS
    fingerprint = run_fingerprint(qa.settings, llm=llm, k=k)
    judge_obj = judge if judge is None or isinstance(judge, LLMJudge) else LLMJudge(judge)

    started = time.perf_counter()
    qa.open()  # opens (or first fills) the index before the threads start
    backend = qa.backend(llm)  # fail early on a bad --llm, before anything is written
    gold = resolve_gold(dataset.questions, qa)
    wanted = sorted({i for ids in gold.ids.values() for i in ids})
    titles = {pid: p.title for pid, p in qa.papers(wanted).items()}

    previous = {
        r.id: r for r in load_results(results_path) if r.fingerprint == fingerprint and r.ok
    }
    todo = [q for q in dataset if not (q.id in previous and previous[q.id].question == q.question)]
    # Answers kept from an earlier run without this judge: judged now, not asked again.
    unjudged: list[EvalRow] = []
    if judge_obj is not None:
        asked = {q.id for q in todo}
        unjudged = [
            previous[q.id]
            for q in dataset
            if q.id not in asked
            and getattr(previous[q.id].judge, "model", None) != judge_obj.model_id
        ]
    done = len(dataset) - len(todo) - len(unjudged)
    if progress:
        progress(done, len(dataset), None)

    if todo or unjudged:
        _drop_torn_tail(results_path)
        with results_path.open("a", encoding="utf-8") as fh:
            pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="eval")
            pending: set[Future[EvalRow]] = set()
            try:
                for q in todo:
                    pending.add(
                        pool.submit(
                            _ask_one,
                            qa,
                            q,
                            gold.ids.get(q.id, []),
                            gold.unresolved.get(q.id, []),
                            titles,
                            fingerprint=fingerprint,
                            llm=llm,
                            k=k,
                            judge=judge_obj,
                        )
                    )
                if judge_obj is not None:
                    for row in unjudged:
                        pending.add(pool.submit(_judge_row, qa, row, judge_obj))
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        row = fut.result()
                        fh.write(row.model_dump_json() + "\n")
                        fh.flush()  # what is on disk survives an interruption
                        done += 1
                        if progress:
                            progress(done, len(dataset), row)
            finally:
                # Ctrl-C: drop what has not started, let running questions finish, and keep
                # their rows too.
                pool.shutdown(wait=True, cancel_futures=True)
                for fut in pending:
                    if fut.done() and not fut.cancelled() and fut.exception() is None:
                        fh.write(fut.result().model_dump_json() + "\n")
                        fh.flush()

    rows = current_rows(out, dataset, fingerprint)
    summary = summarise(
        qa,
        dataset,
        rows,
        fingerprint=fingerprint,
        llm_model=backend.model_id if backend else "extractive",
        judge_model=judge_obj.model_id if judge_obj else None,
        k=k,
        jobs=jobs,
        n_resumed=len(dataset) - len(todo),
        wall_s=time.perf_counter() - started,
        warnings=gold.warnings(),
        version=__version__,
    )
    write_reports(out, summary, rows)
    return summary


def current_rows(out: Path, dataset: Dataset, fingerprint: str) -> list[EvalRow]:
    """The latest row per question of ``dataset`` with this fingerprint, in dataset order."""
    latest: dict[str, EvalRow] = {}
    for row in load_results(out / RESULTS):
        if row.fingerprint == fingerprint:
            latest[row.id] = row  # a retried question: its last row counts
    return [latest[q.id] for q in dataset if q.id in latest]


def summarise(
    qa: PaperQA,
    dataset: Dataset,
    rows: Sequence[EvalRow],
    *,
    fingerprint: str,
    llm_model: str,
    judge_model: str | None,
    k: int | None,
    jobs: int,
    n_resumed: int,
    wall_s: float,
    warnings: Sequence[str],
    version: str,
) -> RunSummary:
    """Score the rows (current_rows) and record how the run was made."""
    scored = [r for r in rows if r.ok]
    metrics = evaluate_rows(scored, default_metrics(judge=judge_model is not None))
    n_by_type: dict[str, int] = {}
    for q in dataset:
        n_by_type[q.type] = n_by_type.get(q.type, 0) + 1
    stats = qa.stats()
    s = qa.settings
    warn = list(warnings)
    if missing := len(dataset) - len(rows):
        warn.append(f"{missing} question(s) have no result yet (interrupted run)")
    if errors := [r for r in rows if not r.ok]:
        warn.append(f"{len(errors)} question(s) failed with an error; see the failures table")
    return RunSummary(
        dataset=dataset.name,
        dataset_path=str(dataset.path) if dataset.path else "",
        dataset_sha256=dataset.sha256,
        date=_now(),
        package_version=version,
        settings_fingerprint=fingerprint,
        engine_settings_fingerprint=s.fingerprint(),
        prompt_hashes=qa.prompt_hashes(),
        judge_prompt_hashes=judge_prompt_hashes() if judge_model else {},
        llm=llm_model,
        embed_model=str(stats.get("embed_model", "")),
        judge_model=judge_model,
        retrieval_mode=s.retrieval_mode,
        top_k=k or s.top_k,
        index=str(stats.get("store", "")),
        index_papers=int(stats.get("papers") or 0),
        n_questions=len(dataset),
        n_answered=len(scored),
        n_errors=len(rows) - len(scored),
        n_by_type=n_by_type,
        n_resumed=n_resumed,
        wall_s=round(wall_s, 3),
        jobs=jobs,
        warnings=warn,
        metrics=metrics,
    )
