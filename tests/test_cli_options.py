"""The command line's contract with scripts and shells: global options anywhere, completion,
exit codes, bounded option values, one-line setting errors, the empty-index hint, piped
output without padding and the user's default config file."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from test_cli import TINY, invoke, run_cli

from rag_papers import (
    IndexMismatchError,
    LLMError,
    LoaderError,
    Settings,
    SettingsError,
    StoreUnavailableError,
)
from rag_papers.answering.prompts import PromptError
from rag_papers.cli import app as app_module
from rag_papers.cli.app import _load_lazy_app, hoist_global_options
from rag_papers.cli.state import CLIError, exit_code_for
from rag_papers.terminal.console import TrimmedLines

EMPTY_HINT = "holds no papers: run rag-papers ingest FILE"


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in TINY), encoding="utf-8")
    return path


def piped(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with stdout and stderr to pipes and no COLUMNS: what a script sees."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [sys.executable, "-m", "rag_papers", *map(str, args)],
        capture_output=True,
        text=True,
        env={**full_env, **(env or {})},
        timeout=300,
    )


# --- global options ---------------------------------------------------------------------------
def test_global_options_work_after_the_command(tmp_path: Path, tiny_file: Path) -> None:
    index = tmp_path / "idx"
    first = run_cli("ingest", tiny_file, "--index-dir", index, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["added"] == 3
    assert (index / "chroma").is_dir()  # the index went where the late option said
    listed = run_cli("papers", "list", "--json", f"--index-dir={index}", "--collection", "papers")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["total"] == 3
    # A later global option wins over an earlier one, as options do.
    code, out, err = invoke("--collection", "a", "config", "--json", "--collection", "b")
    assert code == 0, err
    assert json.loads(out)["settings"]["collection"] == "b"


def test_a_commands_own_option_of_the_same_name_stays_with_it() -> None:
    eval_cmd = _load_lazy_app("eval")  # `eval run` has its own --index-dir
    moved, kept = hoist_global_options(
        ["run", "ds.jsonl", "--index-dir", "X", "-v", "--preset", "openai", "--", "--config"],
        eval_cmd,
    )
    assert moved == ["-v", "--preset", "openai"]
    assert kept == ["run", "ds.jsonl", "--index-dir", "X", "--", "--config"]
    # An option value that looks like a global option stays the value of its option.
    ask = typer.main.get_command(app_module.app).commands["ask"]  # type: ignore[attr-defined]
    moved, kept = hoist_global_options(["q", "--llm", "--verbose", "--config", "c.toml"], ask)
    assert moved == ["--config", "c.toml"] and kept == ["q", "--llm", "--verbose"]


# --- completion and help ----------------------------------------------------------------------
def test_shell_completion_is_offered() -> None:
    # typer detects the running shell (shellingham), which fails without a terminal (CI, nohup);
    # its own switch makes --show-completion take the shell as a value instead.
    shown = run_cli(
        "--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    )
    assert shown.returncode == 0, shown.stderr
    assert "complete -o default -F _rag_papers_completion rag-papers" in shown.stdout
    completing = subprocess.run(
        [sys.executable, "-m", "rag_papers"],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "_RAG_PAPERS_COMPLETE": "complete_bash",
            "COMP_WORDS": "rag-papers eval r",
            "COMP_CWORD": "2",
        },
        timeout=120,
    )
    assert completing.stdout.split() == ["run"]  # the lazily mounted sub-app completes too
    assert "--install-completion" in run_cli("--help").stdout


def test_help_and_module_document_the_exit_codes() -> None:
    text = " ".join(run_cli("--help").stdout.split())
    assert "Exit codes: 0 done; 1 a check you asked for failed" in text
    assert "2 usage" in text and "3 input or configuration" in text and "4 a service failed" in text
    doc = app_module.__doc__ or ""
    for row in ("0   done", "1   a check", "2   usage", "3   input", "4   a service"):
        assert row in doc


# --- exit codes -------------------------------------------------------------------------------
def test_each_error_kind_has_its_exit_code() -> None:
    for cls in (SettingsError, LoaderError, PromptError, IndexMismatchError):
        assert exit_code_for(cls("x")) == 3, cls
    for cls in (LLMError, StoreUnavailableError):
        assert exit_code_for(cls("x")) == 4, cls
    assert exit_code_for(CLIError("x")) == 3
    assert exit_code_for(CLIError("x", exit_code=2)) == 2
    assert exit_code_for(ValueError("x")) is None  # a bug: a traceback, not a code


def test_unreachable_llm_server_exits_4_and_bad_spec_3(sample_settings: Settings) -> None:
    from servers import free_port

    idx = sample_settings.resolved_index_dir
    env = {
        "RAG_PAPERS_OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "RAG_PAPERS_LLM_MAX_RETRIES": "0",
    }
    down = run_cli("--index-dir", idx, "ask", "What is Self-RAG?", "--llm", "openai:m", env=env)
    assert down.returncode == 4, down.stderr
    assert down.stderr.startswith("error: ") and "Traceback" not in down.stderr
    spec = run_cli("--index-dir", idx, "ask", "What is Self-RAG?", "--llm", "gguf:/no/such.gguf")
    assert spec.returncode == 3 and "no/such.gguf" in spec.stderr


# --- option values and settings: one line, no traceback ----------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["search", "x", "--year", "2030:2020"], "2030 is after 2020"),
        (["search", "x", "--year", "99999999999999999999"], "is not a year from 1 to 9999"),
        (["ask", "x", "--year", "0:2020"], "0 is not a year"),
        (["search", "x", "-k", "99999999999999999999"], "--top-k"),
        (["papers", "list", "--limit", "99999999999999999999"], "--limit"),
        (["papers", "list", "--offset", "99999999999999999999"], "--offset"),
    ],
)
def test_out_of_range_values_are_usage_errors(args: list[str], needle: str) -> None:
    code, out, err = invoke(*args)
    assert code == 2, (out, err)
    assert needle in " ".join(err.split())
    assert "Traceback" not in err


def test_bad_environment_value_names_the_variable() -> None:
    proc = run_cli("config", env={"RAG_PAPERS_TOP_K": "abc"})
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        "error: invalid environment setting: RAG_PAPERS_TOP_K='abc': top_k: Input should be "
        "a valid integer, unable to parse string as an integer"
    ]
    tok = run_cli("config", env={"RAG_PAPERS_TOKENIZER": "p50k_base"})
    assert tok.returncode == 3 and len(tok.stderr.strip().splitlines()) == 1
    assert "'p50k_base' is not available offline" in tok.stderr and "cl100k_base" in tok.stderr


# --- an empty index says what to do -----------------------------------------------------------
def test_empty_index_hints_at_ingest(tmp_path: Path) -> None:
    env = {"RAG_PAPERS_AUTO_INGEST_SAMPLE": "false"}
    index = tmp_path / "empty"
    listed = run_cli("--index-dir", index, "papers", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["total"] == 0  # stdout stays the JSON
    assert EMPTY_HINT in listed.stderr and "the index at " in listed.stderr
    found = run_cli("--index-dir", index, "search", "retrieval", env=env)
    assert found.returncode == 0 and EMPTY_HINT in found.stderr
    asked = run_cli("--index-dir", index, "ask", "What is retrieval?", "--json", env=env)
    assert asked.returncode == 0 and EMPTY_HINT in asked.stderr


def test_a_filled_index_gives_no_hint(tmp_path: Path, tiny_file: Path) -> None:
    index = tmp_path / "idx"
    assert run_cli("--index-dir", index, "ingest", tiny_file).returncode == 0
    found = run_cli("--index-dir", index, "search", "x", "--year", "1990")
    assert found.returncode == 0 and "No papers matched" in found.stdout
    assert EMPTY_HINT not in found.stderr  # filtered to nothing, but the index has papers


# --- piped output -----------------------------------------------------------------------------
def test_piped_output_has_no_padding(sample_settings: Settings) -> None:
    idx = sample_settings.resolved_index_dir
    for args in (
        ["papers", "list", "--limit", "5"],
        ["search", "self-reflection tokens", "-k", "3"],
        ["stats"],
        ["ask", "What does Self-RAG add to retrieval-augmented generation?"],
    ):
        proc = piped("--index-dir", idx, *args)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines, args
        assert [line for line in lines if line.endswith(" ")] == [], args
    # Not wrapped at 80 columns either: a long answer sentence stays one line.
    assert max(len(line) for line in lines) > 80


def test_trimmed_lines_hold_back_only_trailing_spaces() -> None:
    buf = io.StringIO()
    out = TrimmedLines(buf)
    out.write("Self-RAG   ")
    assert buf.getvalue() == "Self-RAG"  # streamed text appears at once
    out.write("adds [1].  \nrow   \n")
    out.write("   ")
    out.write("indented")
    assert buf.getvalue() == "Self-RAG   adds [1].\nrow\n   indented"
    assert not out.isatty()


# --- the user's config file -------------------------------------------------------------------
def test_user_config_file_is_read_and_env_and_options_override_it(tmp_path: Path) -> None:
    user = Settings.user_config_file()
    assert str(user).startswith(os.environ["HOME"])  # the test's tmp home, never the real one
    shown = run_cli("config", "path")
    assert shown.returncode == 0 and shown.stdout.strip() == str(user)
    assert "not created yet" in shown.stderr

    user.parent.mkdir(parents=True)
    user.write_text("top_k = 9\ncandidates = 55\n")
    data = json.loads(run_cli("config", "--json").stdout)
    assert data["settings"]["top_k"] == 9 and data["sources"]["top_k"] == f"config {user}"
    data = json.loads(run_cli("config", "--json", env={"RAG_PAPERS_TOP_K": "4"}).stdout)
    assert data["settings"]["top_k"] == 4 and data["settings"]["candidates"] == 55
    other = tmp_path / "other.toml"
    other.write_text("top_k = 7\n")
    data = json.loads(run_cli("config", "--json", "--config", other).stdout)
    assert data["settings"]["top_k"] == 7 and data["settings"]["candidates"] == 100
    shown = run_cli("config", "path", "--json")
    assert json.loads(shown.stdout) == {
        "user_config_file": str(user),
        "exists": True,
        "in_use": str(user),
    }
