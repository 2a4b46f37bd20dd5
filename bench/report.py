"""Figures, targets and their verdicts, the printed table, and the JSON results file."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Check = Literal["value_at_least", "ratio_at_least", "p95_below"]


@dataclass(frozen=True, slots=True)
class Target:
    """A target of the issue: what is compared, and the threshold."""

    text: str
    check: Check
    threshold: float


SINGLE_CREATE = Target(">= 600 /s", "value_at_least", 600.0)
INGEST = Target(">= 3000 res/s", "value_at_least", 3000.0)
READ = Target(">= 70% of limit", "ratio_at_least", 0.70)
SEARCH = Target("p95 < 50 ms", "p95_below", 50.0)


@dataclass
class Figure:
    """One measured figure next to its limit from the same run."""

    name: str
    unit: str
    value: float
    limit: float | None
    limit_name: str
    target: Target | None = None
    p95_ms: float | None = None
    limit_p95_ms: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """``value / limit`` (None without a limit)."""
        return self.value / self.limit if self.limit else None

    @property
    def passed(self) -> bool | None:
        """The verdict against ``target`` (None when there is none)."""
        if self.target is None:
            return None
        check, threshold = self.target.check, self.target.threshold
        if check == "value_at_least":
            return self.value >= threshold
        if check == "ratio_at_least":
            return self.ratio is not None and self.ratio >= threshold
        return self.p95_ms is not None and self.p95_ms < threshold

    def as_json(self) -> dict[str, Any]:
        """Everything, with the ratio and the verdict."""
        data = asdict(self)
        data["ratio"] = self.ratio
        data["passed"] = self.passed
        return data


def _num(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    text = f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    return f"{text} {unit}".rstrip()


HEADER = ("figure", "gateway", "limit", "ratio", "p95 ms (limit)", "target", "result")


def table(figures: list[Figure]) -> str:
    """The figures as a fixed-width text table."""
    rows = [HEADER]
    for fig in figures:
        p95 = "-" if fig.p95_ms is None else f"{fig.p95_ms:.1f} ({_num(fig.limit_p95_ms)})"
        verdict = {None: "", True: "PASS", False: "FAIL"}[fig.passed]
        ratio = "-" if fig.ratio is None else f"{fig.ratio:.2f}"
        rows.append(
            (
                fig.name,
                _num(fig.value, fig.unit),
                _num(fig.limit, fig.unit),
                ratio,
                p95,
                fig.target.text if fig.target else "",
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(figures: list[Figure]) -> str:
    """The figures as a Markdown table (for docs/performance.md)."""
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for fig in figures:
        p95 = "-" if fig.p95_ms is None else f"{fig.p95_ms:.1f} ({_num(fig.limit_p95_ms)})"
        verdict = {None: "", True: "PASS", False: "**FAIL**"}[fig.passed]
        ratio = "-" if fig.ratio is None else f"{fig.ratio:.2f}"
        cells = [
            fig.name,
            _num(fig.value, fig.unit),
            _num(fig.limit, fig.unit),
            ratio,
            p95,
            fig.target.text if fig.target else "",
            verdict,
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def legend(figures: list[Figure]) -> str:
    """What each limit is, once per distinct limit."""
    seen: dict[str, None] = {}
    for fig in figures:
        if fig.limit_name:
            seen.setdefault(fig.limit_name)
    return "\n".join(f"  limit: {name}" for name in seen)


def write_json(path: Path, payload: dict[str, Any], figures: list[Figure]) -> None:
    """Write the results file: ``payload`` (machine, plan) plus every figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**payload, "figures": [fig.as_json() for fig in figures]}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def figures_from_json(data: dict[str, Any]) -> list[Figure]:
    """The figures of a results file."""
    out = []
    for raw in data["figures"]:
        fields = {k: v for k, v in raw.items() if k not in ("ratio", "passed")}
        target = fields.pop("target")
        out.append(Figure(**fields, target=Target(**target) if target else None))
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.report RESULTS.json``: the figures of a results file as a Markdown table."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    data = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    print(markdown(figures_from_json(data)))


if __name__ == "__main__":
    main()
