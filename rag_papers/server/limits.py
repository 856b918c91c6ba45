"""What the OpenAI endpoint does to a reply on its way out: ``OutputLimit`` cuts it at the
first ``stop`` string and at ``max_tokens`` (streamed or whole, the same cut), and
``url_citations`` turns each ``[n]`` marker into an OpenAI ``url_citation``.

The LLM is asked for the same limits (``Generation``); the cut here also covers the
sources list the endpoint appends, and a reply streamed in pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from rag_papers import CITATION_PATTERN, encoding, expand_markers
from rag_papers.server.schemas_openai import Annotation, UrlCitation

if TYPE_CHECKING:
    from rag_papers import Answer

__all__ = ["MARKER_PATTERN", "OutputLimit", "expand_marker", "url_citations"]

# The engine's marker grammar ([1], [2, 3], [1-3]), under the names this module's callers use.
MARKER_PATTERN = CITATION_PATTERN
expand_marker = expand_markers


def url_citations(content: str, body_end: int, answer: Answer, base_url: str) -> list[Annotation]:
    """A url_citation per cited marker in ``content[:body_end]`` (the answer, not the sources
    list), spanning the marker's brackets. A paper without a URL points at its record on
    this server (``/v1/papers/{id}``)."""
    cited = {c.marker: c for c in answer.citations}
    found: list[Annotation] = []
    for match in MARKER_PATTERN.finditer(content, 0, max(0, min(body_end, len(content)))):
        for marker in expand_marker(match.group(1)):
            citation = cited.get(marker)
            if citation is None:
                continue
            url = citation.url or f"{base_url.rstrip('/')}/v1/papers/{quote(citation.paper_id)}"
            found.append(
                Annotation(
                    url_citation=UrlCitation(
                        url=url,
                        title=citation.title,
                        start_index=match.start(),
                        end_index=match.end(),
                    )
                )
            )
    return found


class OutputLimit:
    """Feed the reply's pieces in order; each call returns what may be sent now. A stop
    string is held back until it is complete, so it never reaches the client; near the token
    limit text is held until the cut is sure. ``finish`` becomes "stop" or "length" when a
    limit was hit (then everything after is dropped)."""

    def __init__(self, stop: Sequence[str], max_tokens: int | None, tokenizer: str) -> None:
        self.stop = [s for s in stop if s]
        self.max_tokens = max_tokens
        self.tokenizer = tokenizer
        self.emitted = ""
        self.finish: Literal["stop", "length"] | None = None
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        self._pending = ""  # may be the start of a stop string
        self._held = ""  # past the stop check, waiting for the token cut

    def feed(self, text: str) -> str:
        if self.finish is not None:
            return ""
        self._pending += text
        hits = [i for s in self.stop if (i := self._pending.find(s)) >= 0]
        if hits:
            release, self._pending = self._pending[: min(hits)], ""
            out = self._cap(release, final=True)
            self.finish = self.finish or "stop"
            return out
        keep = min(self._hold, len(self._pending))
        cut = len(self._pending) - keep
        release, self._pending = self._pending[:cut], self._pending[cut:]
        return self._cap(release)

    def flush(self) -> str:
        """Everything held back, once the reply is complete."""
        if self.finish is not None:
            return ""
        release, self._pending = self._pending, ""
        return self._cap(release, final=True)

    def _cap(self, text: str, final: bool = False) -> str:
        self._held += text
        full = self.emitted + self._held
        # A token is at least one byte: only a long enough text can be over the limit.
        if self.max_tokens is None or len(full.encode()) <= self.max_tokens:
            return self._release()
        enc = encoding(self.tokenizer)  # the bundled files: no download
        tokens = enc.encode(full, disallowed_special=())
        if len(tokens) <= self.max_tokens:
            return self._release()
        if len(tokens) < self.max_tokens + 2 and not final:
            return ""  # the last kept token may still grow with the next piece: wait
        allowed = enc.decode_bytes(tokens[: self.max_tokens]).decode("utf-8", "ignore")
        out = allowed[len(self.emitted) :] if allowed.startswith(self.emitted) else ""
        self.emitted += out
        self._held = ""
        self.finish = "length"
        return out

    def _release(self) -> str:
        out, self._held = self._held, ""
        self.emitted += out
        return out
