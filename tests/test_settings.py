"""Settings: precedence, presets, TOML files, env prefix, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rag_papers.core.settings import PRESETS, Settings, SettingsError, load_settings


def test_every_field_is_described() -> None:
    missing = [name for name, f in Settings.model_fields.items() if not f.description]
    assert missing == []


@pytest.mark.parametrize("preset", PRESETS)
def test_bundled_presets_load(preset: str) -> None:
    settings = load_settings(preset=preset)
    assert isinstance(settings, Settings)


def test_precedence_defaults_preset_file_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "rag.toml"
    cfg.write_text('preset = "ollama"\ntop_k = 9\ncandidates = 50\n')
    s = load_settings(config=cfg)
    assert s.llm == "openai:llama3.2" and s.top_k == 9 and s.candidates == 50
    monkeypatch.setenv("RAG_PAPERS_TOP_K", "4")
    s = load_settings(config=cfg)
    assert s.top_k == 4  # env beats the file
    s = load_settings(config=cfg, top_k=3, candidates=None)
    assert s.top_k == 3 and s.candidates == 50  # explicit beats env; None is "not given"


def test_openai_key_from_standard_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    s = load_settings()
    assert s.openai_api_key is not None and s.openai_api_key.get_secret_value() == "sk-test"
    assert "sk-test" not in repr(s)


def test_config_from_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[rag_papers]\nretrieval_mode = 'bm25'\n")
    monkeypatch.setenv("RAG_PAPERS_CONFIG", str(cfg))
    assert load_settings().retrieval_mode == "bm25"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("top_k = 'many'", "top_k"),
        ("no_such_setting = 1", "no_such_setting"),
        ("llm = 'gpt'", "llm"),
        ("top_k = [", "invalid TOML"),
        ("chunk_tokens = 50\nchunk_overlap = 60", "chunk_overlap"),
    ],
)
def test_bad_config_names_file_and_field(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(SettingsError) as err:
        load_settings(config=cfg)
    assert str(cfg) in str(err.value) and needle in str(err.value)


def test_missing_config_and_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="file not found"):
        load_settings(config=tmp_path / "nope.toml")
    with pytest.raises(SettingsError, match="unknown preset"):
        load_settings(preset="turbo")


def test_fingerprint_tracks_answer_settings_only(tmp_path: Path) -> None:
    a = load_settings(index_dir=tmp_path / "a")
    b = load_settings(index_dir=tmp_path / "b")
    assert a.fingerprint() == b.fingerprint()
    assert load_settings(top_k=3).fingerprint() != a.fingerprint()


def test_data_dir_default_is_isolated(tmp_path: Path) -> None:
    # The autouse fixture points RAG_PAPERS_DATA_DIR at tmp: the index lives below it.
    s = load_settings()
    assert "rag-papers" in str(s.resolved_index_dir)
    assert not str(s.resolved_index_dir).startswith(str(Path("/root/.local")))


def test_bad_env_value_names_the_variable_and_the_expected_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAG_PAPERS_TOP_K", "abc")
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert "RAG_PAPERS_TOP_K='abc': top_k: Input should be a valid integer" in message
    assert "\n" not in message  # one line
    monkeypatch.setenv("RAG_PAPERS_TOP_K", "5")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("RAG_PAPERS_LLM_TIMEOUT", "-1")
    with pytest.raises(SettingsError, match="RAG_PAPERS_LLM_TIMEOUT='-1': llm_timeout"):
        load_settings()


def test_bad_values_from_a_file_are_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("top_k = 'many'\ncandidates = 0\n")
    with pytest.raises(SettingsError) as err:
        load_settings(config=cfg)
    message = str(err.value)
    assert "\n" not in message and "top_k: Input should be a valid integer" in message
    assert "candidates: Input should be greater than or equal to 1" in message


def test_tokenizer_must_be_available_offline() -> None:
    for name in ("cl100k_base", "o200k_base"):  # shipped in llama-index-core's tiktoken cache
        assert load_settings(tokenizer=name).tokenizer == name
    with pytest.raises(SettingsError) as err:
        load_settings(tokenizer="p50k_base")  # tiktoken would download it
    assert "'p50k_base' is not available offline" in str(err.value)
    assert "cl100k_base" in str(err.value)
    with pytest.raises(SettingsError, match="not available offline"):
        load_settings(tokenizer="no_such_encoding")


def test_user_config_file_is_the_default_and_env_and_explicit_files_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = Settings.user_config_file()
    # <XDG_CONFIG_HOME>/rag-papers/config.toml, in the test's tmp home (conftest).
    assert user == Path(os.environ["XDG_CONFIG_HOME"]) / "rag-papers" / "config.toml"
    assert Settings.config_file_in_use() is None  # not created: no file is read
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text("top_k = 9\n")
    assert Settings.config_file_in_use() == user
    assert load_settings().top_k == 9
    monkeypatch.setenv("RAG_PAPERS_TOP_K", "4")
    assert load_settings().top_k == 4  # the environment beats the file
    monkeypatch.delenv("RAG_PAPERS_TOP_K")
    named = tmp_path / "named.toml"
    named.write_text("top_k = 7\n")
    assert load_settings(config=named).top_k == 7  # a named file replaces the user's
    monkeypatch.setenv("RAG_PAPERS_CONFIG", str(named))
    assert Settings.config_file_in_use() == named and load_settings().top_k == 7
