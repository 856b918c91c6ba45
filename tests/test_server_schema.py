"""schemathesis against the running server: requests generated from its own OpenAPI schema
(valid and invalid ones) never get a 5xx, and every response matches the schema it documents.
A real uvicorn over a copy of the sample index, with a key (so ingest is reached too) and a
bounded number of examples per operation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis (dev)")

from servers import isolate_user_dirs  # noqa: E402
from test_server import KEY, LiveServer, index_copy  # noqa: E402

from rag_papers.server import create_app  # noqa: E402

pytestmark = pytest.mark.slow

# A few examples per operation and mode (valid, invalid): the whole run stays well under a
# minute on 2 cores; the seed makes a failure reproducible.
CONFIG: dict[str, Any] = {
    "seed": 20260301,
    "headers": {"Authorization": f"Bearer {KEY}"},
    "generation": {"mode": "all", "max-examples": 8, "allow-x00": True},
    "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    "request-timeout": 120,
}


@pytest.fixture(scope="module")
def live_url(_sample_index_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("schema-home")
    with pytest.MonkeyPatch.context() as mp:
        isolate_user_dirs(mp, home)
        settings = index_copy(
            _sample_index_master, tmp_path_factory.mktemp("schema"), server_api_key=KEY
        )
        with LiveServer(create_app(settings)) as live:
            yield live.url


def _schema() -> Any:
    """The schema of an app configured like the live one (the schema depends on the
    settings' limits and the key, not on the index; building the app touches no disk)."""
    import tempfile

    from schemathesis.config import SchemathesisConfig

    from rag_papers import load_settings

    base = Path(tempfile.gettempdir()) / "rag-papers-schema-never-written"
    settings = load_settings(index_dir=base / "index", data_dir=base, server_api_key=KEY)
    document = create_app(settings).openapi()
    return schemathesis.openapi.from_dict(document, config=SchemathesisConfig.from_dict(CONFIG))


# Loaded at import: schemathesis's lazy fixture loader does not work with this pytest.
schema = _schema()


@schema.parametrize()
def test_no_server_errors_and_responses_match_the_schema(case: Any, live_url: str) -> None:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    case.call_and_validate(
        base_url=live_url, checks=[not_a_server_error, response_schema_conformance]
    )
