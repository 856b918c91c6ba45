"""Compare two runs metric by metric, direction-aware; and check --fail-under thresholds.

Plain data only: the CLI renders a Comparison (and --json prints ``to_dict()``). The function
is ``compare_runs``, not ``compare``: that name is this submodule's, an attribute of the
package once imported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_papers.evaluation.metrics import metric_info
from rag_papers.evaluation.summary import read_summary

__all__ = [
    "Comparison",
    "MetricDelta",
    "Threshold",
    "check_thresholds",
    "compare_runs",
    "parse_thresholds",
]


@dataclass(slots=True)
class MetricDelta:
    """One overall metric of run A and run B, and whether B is worse or better beyond the
    tolerance (direction-aware: lower latency is better)."""

    key: str
    a: float | None
    b: float | None
    higher_is_better: bool
    regression: bool = False
    improvement: bool = False

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.key,
            "a": self.a,
            "b": self.b,
            "delta": self.delta,
            "higher_is_better": self.higher_is_better,
            "regression": self.regression,
            "improvement": self.improvement,
        }


@dataclass(slots=True)
class Comparison:
    """Every metric's delta B - A, plus notes on what differs between the runs' setups."""

    run_a: str
    run_b: str
    deltas: list[MetricDelta] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[MetricDelta]:
        return [d for d in self.deltas if d.regression]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "deltas": [d.to_dict() for d in self.deltas],
            "regressions": [d.key for d in self.regressions],
            "notes": self.notes,
        }


def _worse_by(d: MetricDelta) -> float:
    """How much worse B is than A, in the metric's own units (negative: better)."""
    assert d.a is not None and d.b is not None
    return (d.a - d.b) if d.higher_is_better else (d.b - d.a)


def compare_runs(
    run_a: Path | str | Mapping[str, Any],
    run_b: Path | str | Mapping[str, Any],
    *,
    tolerance: float = 0.01,
    relative_tolerance: float = 0.10,
) -> Comparison:
    """Deltas B - A of every overall metric; a regression is B worse than A by more than
    ``tolerance`` (scores in [0, 1]) or ``relative_tolerance`` of A (seconds, tokens, cost)."""
    a = run_a if isinstance(run_a, Mapping) else read_summary(run_a)
    b = run_b if isinstance(run_b, Mapping) else read_summary(run_b)
    out = Comparison(
        run_a=str(run_a if not isinstance(run_a, Mapping) else "A"),
        run_b=str(run_b if not isinstance(run_b, Mapping) else "B"),
    )
    if a.get("dataset_sha256") != b.get("dataset_sha256"):
        out.notes.append("the runs used different datasets (sha256 differs)")
    if a.get("n_answered") != b.get("n_answered"):
        out.notes.append(
            f"answered questions differ: {a.get('n_answered')} vs {b.get('n_answered')}"
        )
    for name in ("settings_fingerprint", "llm", "embed_model"):
        if a.get(name) != b.get(name):
            out.notes.append(f"{name}: {a.get(name)} -> {b.get(name)}")
    if a.get("prompt_hashes") != b.get("prompt_hashes"):
        out.notes.append("prompts changed")
    ma = a.get("metrics", {}).get("overall", {})
    mb = b.get("metrics", {}).get("overall", {})
    for key in [*ma, *(k for k in mb if k not in ma)]:
        info = metric_info(key)
        d = MetricDelta(
            key=key,
            a=ma.get(key),
            b=mb.get(key),
            higher_is_better=True if info is None else info.higher_is_better,
        )
        if d.a is not None and d.b is not None:
            ratio = True if info is None else info.is_ratio
            limit = tolerance if ratio else max(relative_tolerance * abs(d.a), 1e-9)
            worse = _worse_by(d)
            d.regression = worse > limit
            d.improvement = -worse > limit
        out.deltas.append(d)
    return out


# --- thresholds -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Threshold:
    key: str  # metric key, e.g. 'ndcg@10'
    value: float
    qtype: str | None = None  # 'numeric:fact_recall=0.5' checks one question type

    def __str__(self) -> str:
        return f"{self.qtype + ':' if self.qtype else ''}{self.key}={self.value:g}"


def parse_thresholds(specs: Iterable[str]) -> list[Threshold]:
    """'metric=value' or 'type:metric=value' -> Thresholds; ValueError names a bad one."""
    out = []
    for spec in specs:
        name, sep, raw = spec.partition("=")
        qtype, _, key = name.strip().rpartition(":")
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not sep or not key or value != value:
            raise ValueError(f"{spec!r}: expected METRIC=VALUE or TYPE:METRIC=VALUE")
        out.append(Threshold(key=key.strip(), value=value, qtype=qtype.strip() or None))
    return out


def check_thresholds(summary: Mapping[str, Any], thresholds: Sequence[Threshold]) -> list[str]:
    """Messages for thresholds the run misses: a score below VALUE, or a cost (latency,
    tokens, dollars: lower is better) above it, or a metric that was not measured."""
    metrics = summary.get("metrics", {})
    problems = []
    for t in thresholds:
        table = (
            metrics.get("per_type", {}).get(t.qtype, {}) if t.qtype else metrics.get("overall", {})
        )
        if t.key not in table:
            known = ", ".join(metrics.get("overall", {})) or "none"
            where = f" for type {t.qtype!r}" if t.qtype else ""
            problems.append(f"{t}: no metric {t.key!r}{where} (known: {known})")
            continue
        value = table[t.key]
        info = metric_info(t.key)
        higher = True if info is None else info.higher_is_better
        if value is None:
            problems.append(f"{t}: not measured in this run")
        elif (value < t.value) if higher else (value > t.value):
            op = "<" if higher else ">"
            problems.append(f"{t}: got {value:.4g} {op} {t.value:g}")
    return problems
