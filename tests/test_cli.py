"""The command line, run for real: `python -m rag_papers` in a subprocess over tmp indexes."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from rag_papers import (
    ABSTAIN_PHRASE,
    EXTRACTIVE_LABEL,
    LLM_SPEC_HELP,
    Answer,
    Citation,
    Paper,
    PaperQA,
    ScoredPaper,
    SentenceVerdict,
    Settings,
    Usage,
)
from rag_papers.cli import app as cli_module
from rag_papers.cli.app import app
from rag_papers.cli.config import mask_url
from rag_papers.cli.options import parse_modes
from rag_papers.cli.state import CLIError, is_user_error
from rag_papers.terminal.render import render_answer, render_papers, render_search, safe_text

SELF_RAG_Q = "What does Self-RAG add to retrieval-augmented generation?"
OFF_TOPIC_Q = "How do I bake sourdough bread at high altitude?"
HEAVY = (
    "chromadb",
    "llama_index",
    "onnxruntime",
    "numpy",
    "rag_papers.engine.qa",
    "rag_papers.store.index",
)
# What reading the paper list must not load: the vector store and the embedding model.
# (The engine itself is the door, so its modules may load.)
STORE_AND_MODELS = ("chromadb", "llama_index", "onnxruntime")

TINY = [
    {
        "id": "2401.00001",
        "title": "Sparse Retrieval for Protein Folding",
        "abstract": "We study sparse lexical retrieval applied to protein structure prediction. "
        "Our method improves recall by 12% over dense baselines.",
        "authors": "Ada Lovelace; Alan Turing",
        "year": 2024,
    },
    {
        "id": "2402.00002",
        "title": "Graph Neural Networks for Weather",
        "abstract": "A graph neural network forecasts weather at 0.25 degree resolution. "
        "It beats numerical models at ten day lead times.",
        "authors": "Grace Hopper",
        "year": 2023,
    },
    {
        "id": "2403.00003",
        "title": "Quantum Annealing Schedules",
        "abstract": "We propose adaptive annealing schedules for quantum optimisers. "
        "Experiments on 50 instances show faster convergence.",
        "authors": "Richard Feynman",
        "year": 2025,
    },
    {"id": "2404.00004", "title": "A Record Without Its Abstract"},  # rejected: line 4
]


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m rag_papers ARGS` with the test's isolated environment (tmp HOME/data dir)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rag_papers", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )


def invoke(*args: str | Path) -> tuple[int, str, str]:
    """The CLI in-process (typer's CliRunner): (exit code, stdout, stderr). For fast cases."""
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def loaded_modules(code: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """Run ``code`` (which calls rag_papers.cli.app.main) in a fresh interpreter; the
    ``heavy`` modules it left imported."""
    probe = (
        "import sys\n"
        "from rag_papers.cli.app import main\n"
        f"try:\n    {code}\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        f"print('HEAVY=' + ','.join(m for m in {heavy!r} if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("HEAVY="))
    return [m for m in line.removeprefix("HEAVY=").split(",") if m]


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in TINY), encoding="utf-8")
    return path


# --- help and start-up ------------------------------------------------------------------------
def test_help_lists_commands_and_imports_nothing_heavy() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for command in (
        "ingest",
        "papers",
        "stats",
        "search",
        "ask",
        "chat",
        "serve",
        "eval",
        "config",
    ):
        assert command in proc.stdout
    assert loaded_modules("main(['--help'])") == []
    assert loaded_modules("main(['ask', '--help'])") == []


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str) -> None:
    proc = run_cli(flag)
    assert proc.returncode == 0
    from rag_papers import __version__

    assert proc.stdout.strip() == f"rag-papers {__version__}"


def test_package_is_typed() -> None:
    """PEP 561: the package ships py.typed so type checkers read its annotations."""
    import rag_papers

    assert (Path(rag_papers.__file__).parent / "py.typed").is_file()


def test_eval_is_mounted_lazily() -> None:
    proc = run_cli("eval", "--help")
    if importlib.util.find_spec("rag_papers.cli.eval") is None:
        assert proc.returncode == 3
        assert "not available" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        for command in ("run", "compare", "beir"):
            assert command in proc.stdout


def test_lazy_mount_reaches_a_sub_app_and_shares_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mounting mechanism itself, with a stand-in module in place of the eval harness."""
    module = tmp_path / "stand_in_eval_cli.py"
    module.write_text(
        "import typer\n"
        "from rag_papers.cli.app import get_settings\n"
        "app = typer.Typer()\n"
        "@app.command()\n"
        "def run(ctx: typer.Context) -> None:\n"
        "    print('collection=' + get_settings(ctx).collection)\n"
        "@app.command()\n"
        "def compare() -> None:\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli_module._LAZY_APPS, "eval", ("stand_in_eval_cli", "app", "Evaluate."))
    code, out, err = invoke("--collection", "mine", "eval", "run")
    assert code == 0, err
    assert out.strip() == "collection=mine"
    code, out, _ = invoke("eval", "--help")
    assert code == 0 and "run" in out and "compare" in out


# --- ingest -----------------------------------------------------------------------------------
def test_ingest_reports_rejections_then_skips_unchanged(tmp_path: Path, tiny_file: Path) -> None:
    index = tmp_path / "idx"
    first = run_cli("--index-dir", index, "ingest", tiny_file)
    assert first.returncode == 0, first.stderr
    counts = dict(line.split("│") for line in first.stdout.splitlines() if "│" in line)
    counts = {k.strip(): v.strip() for k, v in counts.items()}
    assert counts["read"] == "3" and counts["added"] == "3" and counts["rejected"] == "1"
    # The bad record is listed as file:line: reason.
    assert f"{tiny_file}:4: field 'abstract'" in first.stdout

    again = run_cli("--index-dir", index, "ingest", tiny_file, "--strict", "--json")
    assert again.returncode == 1  # --strict: something was rejected; the rest is kept
    report = json.loads(again.stdout)
    assert (report["added"], report["updated"], report["unchanged"]) == (0, 0, 3)
    assert len(report["rejected"]) == 1 and report["rejected"][0].startswith(f"{tiny_file}:4:")

    listed = json.loads(run_cli("--index-dir", index, "papers", "list", "--json").stdout)
    assert listed["total"] == 3
    assert {p["id"] for p in listed["papers"]} == {"2401.00001", "2402.00002", "2403.00003"}

    # Year filter: only 2024-2025 papers, whatever the query.
    found = run_cli(
        "--index-dir", index, "search", "weather forecasting", "--year", "2024:2025", "--json"
    )
    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    assert rows and all(2024 <= r["year"] <= 2025 for r in rows)
    assert "2402.00002" not in {r["id"] for r in rows}

    bad_year = run_cli("--index-dir", index, "search", "x", "--year", "soon")
    assert bad_year.returncode == 2 and "year range" in bad_year.stderr


def test_unreadable_or_unknown_format_file_exits_3(tmp_path: Path) -> None:
    notes = tmp_path / "notes.xyz"
    notes.write_text("just some words\nwith no structure at all\n")
    proc = run_cli("--index-dir", tmp_path / "idx", "ingest", notes)
    assert proc.returncode == 3  # an input error
    assert "notes.xyz" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "idx").exists()  # nothing was written for a bad file

    missing = run_cli("--index-dir", tmp_path / "idx", "ingest", tmp_path / "absent.jsonl")
    assert missing.returncode == 3 and "absent.jsonl" in missing.stderr


def test_bad_field_mapping_is_a_usage_error(tmp_path: Path, tiny_file: Path) -> None:
    proc = run_cli("--index-dir", tmp_path / "idx", "ingest", tiny_file, "--field", "colour=x")
    assert proc.returncode == 2
    assert "unknown field 'colour'" in proc.stderr


# --- papers / stats ---------------------------------------------------------------------------
def test_papers_list_show_and_stats(sample_settings: Settings) -> None:
    idx = sample_settings.resolved_index_dir
    page = json.loads(
        run_cli("--index-dir", idx, "papers", "list", "--limit", "5", "--json").stdout
    )
    assert page["total"] == 84 and len(page["papers"]) == 5
    rest = json.loads(
        run_cli("--index-dir", idx, "papers", "list", "--offset", "80", "--json").stdout
    )
    assert len(rest["papers"]) == 4

    pid = page["papers"][0]["id"]
    shown = run_cli("--index-dir", idx, "papers", "show", pid, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == pid
    code, text, _ = invoke("--index-dir", idx, "papers", "show", pid)
    assert code == 0 and page["papers"][0]["title"] in text

    unknown = run_cli("--index-dir", idx, "papers", "show", "no-such-paper")
    assert unknown.returncode == 3
    assert "no paper with id no-such-paper" in unknown.stderr

    stats = run_cli("--index-dir", idx, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    data = json.loads(stats.stdout)
    assert data["papers"] == 84 and data["chunks"] >= 84
    assert data["store"].startswith(str(idx)) and data["size_on_disk_bytes"] > 0


def test_papers_list_reads_the_catalog_without_chroma(sample_settings: Settings) -> None:
    idx = sample_settings.resolved_index_dir
    code = f"main(['--index-dir', {str(idx)!r}, 'papers', 'list', '--json'])"
    assert loaded_modules(code, STORE_AND_MODELS) == []


# --- search / ask -----------------------------------------------------------------------------
def test_search_json(sample_settings: Settings) -> None:
    idx = sample_settings.resolved_index_dir
    proc = run_cli(
        "--index-dir", idx, "search", "self-reflection tokens for retrieval", "-k", "3", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 3 and [r["rank"] for r in rows] == [1, 2, 3]
    assert "Self-RAG" in rows[0]["title"]
    assert rows[0]["sentence"] and rows[0]["sentence"] in _abstract(sample_settings, rows[0]["id"])
    assert 0 < rows[0]["sentence_score"] <= 1

    code, text, _ = invoke("--index-dir", idx, "search", "self-reflection tokens", "-k", "2")
    assert code == 0 and rows[0]["id"] in text and "1." in text


def _abstract(settings: Settings, pid: str) -> str:
    with PaperQA(settings) as qa:
        paper = qa.paper(pid)
    assert paper is not None
    return paper.abstract


def test_ask_extractive_cites_self_rag(sample_settings: Settings) -> None:
    proc = run_cli("--index-dir", sample_settings.resolved_index_dir, "ask", SELF_RAG_Q)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert EXTRACTIVE_LABEL in out
    sources = out.split("Sources:", 1)[1].split("Supported:", 1)[0]
    assert "[1]" in sources and "Self-RAG" in sources
    assert "[1]" in out.split(EXTRACTIVE_LABEL, 1)[0]  # the streamed text carries markers
    assert "Supported: " in out and "claim sentences" in out
    assert "usage: no LLM call" in out


def test_ask_reads_the_question_from_stdin_for_dash(sample_settings: Settings) -> None:
    index = str(sample_settings.resolved_index_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "rag_papers", "--index-dir", index, "ask", "-", "--json"],
        input=SELF_RAG_Q + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    answer = Answer.model_validate_json(proc.stdout)
    assert answer.question == SELF_RAG_Q  # not the literal "-"
    assert "Self-RAG" in answer.citations[0].title
    empty = subprocess.run(
        [sys.executable, "-m", "rag_papers", "ask", "-"],
        input="  \n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert empty.returncode == 2 and "empty" in empty.stderr


def test_ask_json_abstains_off_topic(sample_settings: Settings) -> None:
    idx = sample_settings.resolved_index_dir
    proc = run_cli("--index-dir", idx, "ask", OFF_TOPIC_Q, "--json")
    assert proc.returncode == 0, proc.stderr
    answer = Answer.model_validate_json(proc.stdout)  # stdout is the JSON and nothing else
    assert answer.abstained and answer.text == ABSTAIN_PHRASE
    assert answer.mode == "extractive" and not answer.citations
    assert answer.sources  # the closest papers travel with the abstention

    code, text, _ = invoke("--index-dir", idx, "ask", OFF_TOPIC_Q, "--no-stream")
    assert code == 0 and ABSTAIN_PHRASE in text and "Closest papers:" in text
    assert answer.sources[0].title.split(":")[0] in text


def test_bad_llm_spec_or_missing_key_exits_3(sample_settings: Settings) -> None:
    idx = sample_settings.resolved_index_dir
    proc = run_cli("--index-dir", idx, "ask", SELF_RAG_Q, "--llm", "telepathy:v2")
    assert proc.returncode == 3  # configuration, not a failed service (4)
    # One line naming the spec and the grammar (rag_papers.LLM_SPEC_HELP), no traceback.
    assert f"llm 'telepathy:v2': expected {LLM_SPEC_HELP}" in proc.stderr
    assert "Traceback" not in proc.stderr
    no_key = run_cli("--index-dir", idx, "ask", SELF_RAG_Q, "--llm", "openai:gpt-4o-mini")
    assert no_key.returncode == 3 and "API key" in no_key.stderr


# --- settings and errors ----------------------------------------------------------------------
def test_config_shows_sources_and_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "rag.toml"
    config.write_text('preset = "openai"\ntop_k = 9\n')
    env = {"OPENAI_API_KEY": "sk-very-secret", "RAG_PAPERS_CANDIDATES": "77"}
    proc = run_cli("--config", config, "--collection", "mine", "config", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "sk-very-secret" not in proc.stdout
    data = json.loads(proc.stdout)
    assert data["settings"]["top_k"] == 9 and data["settings"]["candidates"] == 77
    assert data["settings"]["llm"] == "openai:gpt-4o-mini"
    src = data["sources"]
    assert src["top_k"] == f"config {config}"
    assert src["llm"] == "preset openai"
    assert src["candidates"] == "env RAG_PAPERS_CANDIDATES"
    assert src["openai_api_key"] == "env OPENAI_API_KEY"
    assert src["collection"] == "option --collection"
    assert src["rrf_k"] == "default"


def test_settings_error_is_one_red_line_and_v_adds_traceback() -> None:
    proc = run_cli("--preset", "nope", "config")
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        "error: unknown preset 'nope'; choose one of offline, openai, ollama, llamacpp, scifact"
    ]
    verbose = run_cli("-v", "--preset", "nope", "config")
    assert verbose.returncode == 3 and "Traceback" in verbose.stderr


def test_serve_refuses_open_bind_without_key(sample_settings: Settings) -> None:
    proc = run_cli("--index-dir", sample_settings.resolved_index_dir, "serve", "--host", "0.0.0.0")
    assert proc.returncode == 3
    assert "without an API key" in proc.stderr


# --- rendering (canned answers are right here) ------------------------------------------------
def _render(answer: Answer, *, streamed: bool = False) -> str:
    buf = io.StringIO()
    render_answer(Console(file=buf, width=200, color_system=None), answer, streamed=streamed)
    return buf.getvalue()


def test_render_marks_unsupported_sentences_and_removed_markers() -> None:
    answer = Answer(
        question="q",
        text="Self-RAG adds reflection tokens [1]. It was trained on 9000 GPUs [1].",
        mode="llm",
        model="gpt-4o-mini",
        citations=[Citation(marker=1, paper_id="self-rag", title="Self-RAG [CLS]", year=2023)],
        sentences=[
            SentenceVerdict(
                text="Self-RAG adds reflection tokens [1].",
                markers=[1],
                supported=True,
                score=0.9,
                reason="supported",
            ),
            SentenceVerdict(
                text="It was trained on 9000 GPUs [1].",
                markers=[1],
                supported=False,
                reason="number not in cited sources: 9000",
            ),
        ],
        supported=1,
        claims=2,
        removed_markers=[7],
        usage=Usage(
            prompt_tokens=800,
            completion_tokens=40,
            total_tokens=840,
            cost_usd=0.00014,
            counted_by="api",
        ),
        timings={"retrieve": 0.04, "total": 1.5},
    )
    out = _render(answer)
    assert "model: gpt-4o-mini" in out
    assert "[1] Self-RAG [CLS] (2023)" in out  # brackets survive: no markup parsing
    assert "Supported: 1/2 claim sentences" in out
    assert "✗ It was trained on 9000 GPUs [1]. — number not in cited sources: 9000" in out
    assert "It was trained on 9000 GPUs [1]. ✗" in out  # marked in the text itself
    assert "removed citation [7]: not among the shown sources" in out
    assert "800 prompt + 40 completion tokens" in out and "counted by api" in out
    assert "retrieve 40 ms" in out and "total 1.50 s" in out
    # Streamed: the text was already written, so it is not repeated.
    assert (
        "Self-RAG adds reflection tokens"
        not in _render(answer, streamed=True).split("Supported:")[0]
    )


def test_safe_text_strips_terminal_escapes() -> None:
    assert safe_text("red \x1b[31mtext\x07 ok\n") == "red [31mtext ok\n"


def test_render_search_shows_each_papers_best_sentence() -> None:
    paper = Paper(id="2401.1", title="Self-RAG [v2]", abstract="One. Two.", year=2023)
    hit = ScoredPaper(paper, 0.8123, rank=1, best_sentence="Two.", best_sentence_score=0.7)
    plain = ScoredPaper(Paper(id="2401.2", title="Other", abstract="Three."), 0.5, rank=2)
    buf = io.StringIO()
    render_search(Console(file=buf, width=200, color_system=None), [hit, plain])
    out = buf.getvalue()
    assert "1. 0.812  2023  Self-RAG [v2]" in out and "“Two.”" in out
    assert "2. 0.500  ----  Other" in out and out.count("“") == 1


def test_render_papers_abbreviates_authors() -> None:
    paper = Paper(id="p1", title="T", abstract="A.", authors=["A", "B", "C", "D"], year=2024)
    buf = io.StringIO()
    render_papers(Console(file=buf, width=200, color_system=None), [paper], total=9, offset=2)
    out = buf.getvalue()
    assert "3. T (2024)" in out and "A, B, C et al." in out and "showing 3–3 of 9" in out


def test_user_errors_are_the_library_error_base() -> None:
    from rag_papers import (
        IndexMismatchError,
        LLMError,
        LoaderError,
        RagPapersError,
        SettingsError,
        StoreUnavailableError,
    )
    from rag_papers.answering.prompts import PromptError

    for cls in (SettingsError, LLMError, LoaderError, IndexMismatchError, StoreUnavailableError):
        assert issubclass(cls, RagPapersError) and is_user_error(cls("x"))
    assert is_user_error(PromptError("x"))

    assert is_user_error(SettingsError("x")) and is_user_error(LLMError("x"))
    assert is_user_error(CLIError("x"))
    assert not is_user_error(ValueError("x"))

    class SettingsErrorElsewhere(Exception):  # same name, not ours: a bug, not a usage error
        pass

    SettingsErrorElsewhere.__name__ = "SettingsError"
    assert not is_user_error(SettingsErrorElsewhere())


def test_mask_url_and_modes() -> None:
    assert mask_url("https://me:secret@chroma:8000") == "https://me:****@chroma:8000"
    assert mask_url("http://chroma:8000") == "http://chroma:8000" and mask_url(3) == 3
    assert parse_modes(None) == ["dense", "bm25", "hybrid"]
    assert parse_modes(["bm25", "dense", "bm25"]) == ["bm25", "dense"]
    code, _, err = invoke("eval", "beir", "nowhere", "--mode", "sparse")
    assert code == 2 and "sparse: choose from dense, bm25, hybrid" in err
