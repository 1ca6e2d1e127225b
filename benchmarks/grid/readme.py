"""The README's copies of the report's tables, kept equal to the report.

    python -m benchmarks.grid.readme            # after --report-only: copy the tables into README.md
    python -m benchmarks.grid.readme --check    # exit 1, naming each copy that differs and each stale figure

The README's reference section quotes some of ``results.md``'s tables and notes. Each quote
follows a marker naming its part of the report, ``<!-- report: controls -->``, and this copies
the part in: the table, or the one-line note, that follows the marker. The prose around the
quotes (what the table shows) stays the README's own.

A part is named by the line that introduces it in ``results.md``: ``final``, ``controls``,
``learning rates``, ``compute``, ``multiplicity``, ``superseded``, and ``aggregate: <envs>``
for an aggregate over those environments (``aggregate: Acrobot-v1``).

``--check`` also reads the section's prose: every score (``254.3 ± 7.1``) and every probability
with its interval (``0.24 [0.00, 0.56]``) it quotes must be in the report, so prose cannot keep a
figure that a regenerated report changed. An earlier reading quoted on purpose says so with the
word "read" in its clause (``on its first 3 seeds it read worse, 0.13 [0.00, 0.47]``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

MARKER = re.compile(r"^<!-- report: (?P<part>.+?) -->$")
SECTION = ("<!-- reference-table -->", "<!-- /reference-table -->")
"""The markers around the reference section (the docs include the same span)."""
FIGURE = re.compile(r"-?\d+(?:\.\d+)? ± \d+(?:\.\d+)?|\d\.\d\d \[\d\.\d\d, \d\.\d\d\]")
"""A score as mean ± sd, or a probability with its interval, as the report writes them."""
EARLIER = re.compile(r"\bread\b[^;()]*$")
"""The clause before a figure that quotes an earlier reading on purpose ("it read worse, ...")."""
NOTES = {"Multiplicity:": "multiplicity", "Superseded:": "superseded"}
"""Parts that are one line of prose, by how the line starts."""
TABLES = {
    "Final score": "final",
    "Controls:": "controls",
    "Learning rates reached": "learning rates",
    "Compute:": "compute",
}
"""Parts that are a table, by how the line introducing it starts (aggregates are named apart)."""
AGGREGATE = re.compile(r"^Normalised score, .* aggregated over (?P<envs>.+?) \(rliable")


def report_parts(results: str) -> dict[str, list[str]]:
    """Each named part of a ``results.md``: its table's lines, or its note as one line."""
    lines = results.splitlines()
    parts: dict[str, list[str]] = {}
    for index, line in enumerate(lines):
        note = next((name for start, name in NOTES.items() if line.startswith(start)), None)
        if note is not None:
            parts[note] = [line]
            continue
        aggregate = AGGREGATE.match(line)
        name = f"aggregate: {aggregate['envs']}" if aggregate else None
        name = name or next((name for start, name in TABLES.items() if line.startswith(start)), None)
        if name is not None:
            parts[name] = _table(lines, index + 2)  # after the blank line
    return parts


def fill(readme: str, parts: dict[str, list[str]]) -> tuple[str, list[str]]:
    """``readme`` with the quote right after each marker (a table, or one line) replaced by its
    part; and the parts it names that the report does not have (their quotes are left as they are)."""
    lines = readme.splitlines()
    out: list[str] = []
    missing: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        out.append(line)
        index += 1
        marker = MARKER.match(line)
        if marker is None:
            continue
        quoted = _table(lines, index) or lines[index : index + 1]
        if marker["part"] not in parts:
            missing.append(marker["part"])
        out.extend(parts.get(marker["part"], quoted))
        index += len(quoted)
    return "\n".join(out) + ("\n" if readme.endswith("\n") else ""), missing


def stale_figures(readme: str, results: str) -> list[str]:
    """The figures the reference section's prose quotes that ``results`` lacks, earlier readings apart."""
    start, end = readme.find(SECTION[0]), readme.find(SECTION[1])
    if start < 0 or end < start:
        return []
    section = readme[start:end]
    prose = " ".join(line.strip() for line in section.splitlines() if not line.startswith("|"))
    return [
        figure[0]
        for figure in FIGURE.finditer(prose)
        if figure[0] not in results and not EARLIER.search(prose[: figure.start()])
    ]


def _table(lines: list[str], start: int) -> list[str]:
    """The lines of the table that starts at ``start`` (none if none does)."""
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grid.readme", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/grid/results.md"))
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 if a copy differs or the prose quotes a figure the report lacks",
    )
    args = parser.parse_args(argv)
    readme, results = args.readme.read_text(), args.results.read_text()
    filled, missing = fill(readme, report_parts(results))
    for part in missing:
        print(f"{args.readme}: the report has no part {part!r}", file=sys.stderr)
    if args.check:
        if filled != readme:
            print(f"{args.readme}: its copies of {args.results} differ; run python -m benchmarks.grid.readme")
            return 1
        stale = stale_figures(readme, results)
        for figure in stale:
            print(f"{args.readme}: its prose quotes {figure}, which {args.results} does not have")
        return 1 if missing or stale else 0
    args.readme.write_text(filled)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
