"""Rich rendering of answers, sources, search results, papers, stats and ingest reports.

Shared by the CLI and the chat REPL, so every front end in a terminal shows an answer the
same way. Everything is built from ``rich.text.Text`` objects, never markup strings: titles
and answers contain brackets ("[1]", "[CLS]") that rich would take for markup tags.

Only rich is imported here; the library types are for annotations, so importing this module
stays cheap (no numpy, Chroma or llama-index).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rag_papers import answer_label, format_authors

if TYPE_CHECKING:
    from rag_papers import Answer, IngestReport, Paper, ScoredPaper, Source

__all__ = [
    "TRUNCATED_WARNING",
    "format_bytes",
    "format_timings",
    "format_usage",
    "render_abstention",
    "render_answer",
    "render_answer_text",
    "render_ingest_report",
    "render_paper",
    "render_papers",
    "render_quotes",
    "render_removed",
    "render_search",
    "render_settings",
    "render_sources",
    "render_stats",
    "render_support",
    "safe_text",
    "stream_writer",
]

UNSUPPORTED_MARK = "✗"
TRUNCATED_WARNING = "the model stopped at max_tokens: the answer may be cut off"
_CLOSEST = 5  # papers listed under an abstention
# C0/C1 control characters other than newline and tab: an LLM's output must never move the
# cursor or recolour the user's terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe_text(text: str) -> str:
    """``text`` without terminal control characters (escape sequences included)."""
    return _CONTROL.sub("", text)


def stream_writer(console: Console) -> Callable[[str], None]:
    """An ``on_delta`` callback that writes answer text to ``console`` as it arrives.

    Writes straight to the console's file (no rich processing, so a "[" split across two
    pieces cannot be misread as markup) and flushes after each piece.
    """

    def write(delta: str) -> None:
        console.file.write(safe_text(delta))
        console.file.flush()

    return write


# --- answers ---------------------------------------------------------------------------------
def render_answer_text(console: Console, answer: Answer) -> None:
    """The answer text, each unsupported claim sentence in red and followed by ✗."""
    if not answer.sentences:
        console.print(Text(safe_text(answer.text)))
        return
    text = Text()
    for i, verdict in enumerate(answer.sentences):
        if i:
            text.append(" ")
        if verdict.claim and not verdict.supported:
            text.append(safe_text(verdict.text), style="red")
            text.append(f" {UNSUPPORTED_MARK}", style="bold red")
        else:
            text.append(safe_text(verdict.text))
    console.print(text)


def _paper_cell(title: str, year: int | None, pid: str, url: str | None) -> Text:
    cell = Text(safe_text(title), style="bold")
    if year:
        cell.append(f" ({year})")
    cell.append(f"\n{pid}", style="dim")
    if url and url != pid:
        cell.append(f"  {url}", style="blue")
    return cell


def _grid(console: Console, rows: Iterable[tuple[Text | str, Text]]) -> None:
    """Rows of (label, body): a wrapped body stays indented under its first line."""
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", no_wrap=True)
    table.add_column(overflow="fold")
    for label, body in rows:
        table.add_row(label, body)
    console.print(table)


def render_sources(console: Console, answer: Answer) -> None:
    """The numbered sources the answer cites: marker, title, year, id and URL."""
    if not answer.citations:
        console.print(Text("Sources: none cited", style="yellow"))
        return
    console.print(Text("Sources:", style="bold"))
    _grid(
        console,
        (
            (
                Text(f"  [{c.marker}]", style="bold cyan"),
                _paper_cell(c.title, c.year, c.paper_id, c.url),
            )
            for c in answer.citations
        ),
    )


def render_support(console: Console, answer: Answer) -> None:
    """'Supported: 3/4 claim sentences', then each unsupported sentence with its reason."""
    style = "green" if answer.supported == answer.claims else "yellow"
    console.print(
        Text(f"Supported: {answer.supported}/{answer.claims} claim sentences", style=style)
    )
    rows = []
    for v in answer.sentences:
        if v.claim and not v.supported:
            body = Text(safe_text(v.text))
            body.append(f" — {v.reason}", style="dim")
            rows.append((Text(f"  {UNSUPPORTED_MARK}", style="bold red"), body))
    if rows:
        _grid(console, rows)


def render_removed(console: Console, answer: Answer) -> None:
    """One line per citation marker that was dropped because no shown source had it."""
    for marker in answer.removed_markers:
        console.print(
            Text(f"removed citation [{marker}]: not among the shown sources", style="yellow")
        )


def render_abstention(console: Console, answer: Answer) -> None:
    """Why the answer abstained, and the closest papers."""
    if answer.abstain_reason:
        console.print(Text(f"Reason: {answer.abstain_reason}", style="yellow"))
    closest: Sequence[Source] = answer.sources[:_CLOSEST]
    if not closest:
        console.print(Text("Closest papers: none retrieved", style="dim"))
        return
    console.print(Text("Closest papers:", style="bold"))
    rows = []
    for s in closest:
        cell = _paper_cell(s.title, s.year, s.paper_id, s.url)
        cell.append(f"  score {s.score:.3f}", style="dim")
        rows.append((Text("  •"), cell))
    _grid(console, rows)


def format_usage(answer: Answer) -> str:
    """'usage: 812 prompt + 64 completion tokens · $0.000160 · counted by api'."""
    u = answer.usage
    if u.counted_by == "none" and not u.total_tokens:
        return "usage: no LLM call"
    return (
        f"usage: {u.prompt_tokens:,} prompt + {u.completion_tokens:,} completion tokens"
        f" · ${u.cost_usd:.6f} · counted by {u.counted_by}"
    )


def format_timings(timings: Mapping[str, float]) -> str:
    """'timings: retrieve 40 ms · generate 0.71 s · total 1.20 s'."""
    parts = []
    for name, secs in timings.items():
        parts.append(f"{name} {secs * 1000:.0f} ms" if secs < 1 else f"{name} {secs:.2f} s")
    return "timings: " + " · ".join(parts) if parts else "timings: —"


def render_answer(console: Console, answer: Answer, *, streamed: bool = False) -> None:
    """A whole answer: text (unless it was already streamed), label, sources, support
    verdict, removed markers, or for an abstention the reason and closest papers; then
    usage and timings.
    """
    if streamed:
        console.print()  # end the streamed line
    else:
        render_answer_text(console, answer)
    if answer.truncated:
        console.print(Text(f"warning: {TRUNCATED_WARNING}", style="bold yellow"))
    console.print()
    console.print(Text(answer_label(answer), style="dim italic"))
    if answer.abstained:
        render_abstention(console, answer)
    else:
        render_sources(console, answer)
        render_support(console, answer)
        render_removed(console, answer)
    console.print(Text(format_usage(answer), style="dim"))
    console.print(Text(format_timings(answer.timings), style="dim"))


_MARKERS = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")


def render_quotes(console: Console, answer: Answer) -> None:
    """Each claim's verified quotes, ``[n] "quote" (abstract, chars start–end)``, and the
    claims left out of a grounded answer (dim, "not shown: reason"). An extractive answer's
    sentences are themselves quotes of their sources."""
    if answer.abstained:
        return
    console.print(Text("Quotes:", style="bold"))
    shown = False
    for verdict in answer.sentences:
        if answer.mode == "extractive":
            if verdict.markers:
                quote = _MARKERS.sub("", verdict.text).strip()
                line = Text(f"  [{verdict.markers[0]}] ", style="bold cyan")
                line.append(f'"{safe_text(quote)}"')
                line.append(" (the sentence is quoted from the abstract)", style="dim")
                console.print(line)
                shown = True
            continue
        if not verdict.quotes:
            continue
        console.print(Text(f"  {safe_text(_MARKERS.sub('', verdict.text).strip())}"))
        for q in verdict.quotes:
            line = Text(f"    [{q.marker}] ", style="bold cyan")
            line.append(f'"{safe_text(q.text)}"')
            line.append(f" ({q.field}, chars {q.start}–{q.end})", style="dim")
            console.print(line)
        shown = True
    if not shown:
        console.print(Text("  none: this answer carries no verified quotes", style="dim"))
    for dropped in answer.dropped_claims:
        line = Text(f'  not shown: {dropped.reason}: "{safe_text(dropped.text)}"', style="dim")
        console.print(line)


# --- search ----------------------------------------------------------------------------------
def render_search(console: Console, results: Sequence[ScoredPaper]) -> None:
    """Rank, score, year and title of each paper, its id, and its best-matching sentence
    (``ScoredPaper.best_sentence``, filled by ``PaperQA.search(..., sentences=True)``)."""
    if not results:
        console.print(Text("No papers matched.", style="yellow"))
        return
    rows = []
    for r in results:
        cell = Text(f"{r.score:.3f}", style="cyan")
        cell.append(f"  {r.paper.year or '----'}  ")
        cell.append(safe_text(r.paper.title), style="bold")
        cell.append(f"\n{r.paper.id}", style="dim")
        if r.best_sentence:
            cell.append(f"\n“{safe_text(r.best_sentence)}”", style="italic")
        rows.append((Text(f"{r.rank}.", style="bold"), cell))
    _grid(console, rows)


# --- papers ----------------------------------------------------------------------------------
def render_papers(console: Console, papers: Sequence[Paper], *, total: int, offset: int) -> None:
    """Numbered papers (title, year, id, authors) and a 'showing a–b of n' line."""
    if not papers:
        console.print(Text(f"No papers at offset {offset} ({total} in the index).", style="yellow"))
        return
    rows = []
    for i, p in enumerate(papers, start=offset + 1):
        cell = _paper_cell(p.title, p.year, p.id, None)
        if p.authors:
            cell.append(f"  {format_authors(p.authors)}")
        rows.append((Text(f"{i}.", style="bold"), cell))
    _grid(console, rows)
    console.print(
        Text(f"showing {offset + 1}–{offset + len(papers)} of {total} papers", style="dim")
    )


def render_paper(console: Console, paper: Paper) -> None:
    """One paper in full: title, id, year, authors, categories, links, origin, abstract."""
    console.print(Text(safe_text(paper.title), style="bold"))
    rows: list[tuple[str, str]] = [
        ("id", paper.id),
        ("year", str(paper.year or "—")),
        ("authors", ", ".join(paper.authors) or "—"),
        ("categories", ", ".join(paper.categories) or "—"),
        ("url", paper.url or "—"),
        ("doi", paper.doi or "—"),
        ("source", f"{paper.source}:{paper.line}" if paper.source else "—"),
    ]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, Text(safe_text(value)))
    console.print(table)
    console.print()
    console.print(Text(safe_text(paper.abstract)))


# --- index -----------------------------------------------------------------------------------
def format_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def render_stats(console: Console, stats: Mapping[str, Any]) -> None:
    """PaperQA.stats() as a two-column table (sizes human-readable)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in stats.items():
        if key == "size_on_disk_bytes":
            table.add_row("size on disk", f"{format_bytes(int(value))} ({int(value):,} bytes)")
        else:
            table.add_row(key.replace("_", " "), Text(str(value)))
    console.print(table)


def render_ingest_report(console: Console, report: IngestReport, *, limit: int = 200) -> None:
    """Counts (read/added/updated/unchanged/rejected/duplicates), then every rejected record
    and duplicate as 'file:line: reason' (the first ``limit`` of each; --json has all)."""
    table = Table(show_edge=False, pad_edge=False, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    counts = [
        ("read", report.read, ""),
        ("added", report.added, "green"),
        ("updated", report.updated, "cyan"),
        ("unchanged", report.unchanged, ""),
        ("rejected", len(report.rejected), "red" if report.rejected else ""),
        ("duplicates", len(report.duplicates), "yellow" if report.duplicates else ""),
    ]
    for name, n, style in counts:
        table.add_row(name, Text(str(n), style=style))
    table.add_row("chunks written", str(report.chunks_written))
    table.add_row("seconds", f"{report.seconds:.1f}")
    console.print(table)
    _list_records(console, "Rejected", report.rejected, "red", limit)
    _list_records(console, "Duplicates", report.duplicates, "yellow", limit)


def _list_records(
    console: Console, heading: str, records: Sequence[Any], style: str, limit: int
) -> None:
    if not records:
        return
    console.print(Text(f"{heading}:", style=f"bold {style}"))
    for r in records[:limit]:
        console.print(Text(f"  {safe_text(str(r))}", style=style))
    if len(records) > limit:
        console.print(Text(f"  … and {len(records) - limit} more (--json lists all)", style="dim"))


# --- settings --------------------------------------------------------------------------------
def render_settings(console: Console, rows: Iterable[tuple[str, str, str]]) -> None:
    """(name, value, source) rows as a table; secrets must already be masked."""
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("setting", style="bold")
    table.add_column("value", overflow="fold")
    table.add_column("from", style="dim")
    for name, value, source in rows:
        table.add_row(name, Text(value), source)
    console.print(table)
