"""Turns the children's figures into the Markdown report: per workload, a row per
configuration with the median time, its spread, the median of the per-round ratios to no
auditing, the records written and the memory figures."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from benchmarks.configurations import BASELINE, Configuration
from benchmarks.workloads import Sizes

Figures = dict[str, Any]  # what one child returned
TIMES = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"
COLUMNS = (
    "configuration",
    "sink",
    "median s",
    f"min{DASH}max s",
    f"{TIMES} no auditing",
    "records",
    "µs added per record",
    "peak RSS MiB",
    "RSS growth MiB",
)
ALIGN = ("---", "---", "--:", "--:", "--:", "--:", "--:", "--:", "--:")


@dataclass
class Summary:
    """One configuration's runs of one workload, round by round (None: the child failed),
    next to the baseline's runs of the same rounds."""

    workload: str
    configuration: Configuration
    rounds: list[Figures | None] = field(default_factory=list)
    baseline: list[Figures | None] = field(default_factory=list)

    @property
    def succeeded(self) -> list[Figures]:
        return [figures for figures in self.rounds if figures is not None]

    @property
    def seconds(self) -> list[float]:
        return [figures["seconds"] for figures in self.succeeded]

    def ratio(self) -> float | None:
        """The median, over the rounds where both ran, of this round's time over the
        baseline's time in the same round."""
        ratios = [
            mine["seconds"] / base["seconds"]
            for mine, base in zip(self.rounds, self.baseline, strict=True)
            if mine is not None and base is not None and base["seconds"] > 0
        ]
        return statistics.median(ratios) if ratios else None

    def added_per_record(self) -> float | None:
        """The median, over the rounds where both ran, of the time this configuration added
        to the baseline's, per record it wrote: what one audit record costs the application,
        whatever a configuration leaves unrecorded."""
        added = [
            (mine["seconds"] - base["seconds"]) / mine["records"]
            for mine, base in zip(self.rounds, self.baseline, strict=True)
            if mine is not None and base is not None and mine["records"]
        ]
        return statistics.median(added) if added else None

    def records(self) -> list[int]:
        return sorted({figures["records"] for figures in self.succeeded})

    def peak_mib(self) -> float:
        return max(figures["peak_mib"] for figures in self.succeeded)

    def growth_mib(self) -> float | None:
        growths = [f["growth_mib"] for f in self.succeeded if f["growth_mib"] is not None]
        return max(growths) if growths else None

    def notes(self) -> list[str]:
        return list(dict.fromkeys(f["note"] for f in self.succeeded if f["note"]))


def describe(workload: str, sizes: Sizes) -> str:
    if workload == "unit-of-work":
        return (
            f"{sizes.rows:,} inserts, then {sizes.rows:,} two-column updates, then "
            f"{sizes.rows:,} deletes, in commits of {sizes.per_commit:,} (a `Session` each)."
        )
    if workload == "update-statement":
        return (
            f"One `update(Item).values(count=Item.count + 1)` over {sizes.update_rows:,} rows "
            "and its commit."
        )
    return (
        f"{sizes.requests:,} requests through Flask's test client, alternately creating a "
        "client (POST) and updating it (PUT), Flask-SQLAlchemy on SQLite."
    )


def table(workload: str, sizes: Sizes, summaries: list[Summary]) -> list[str]:
    lines = [f"## {workload}", "", describe(workload, sizes), ""]
    lines += [_row(COLUMNS), _row(ALIGN)]
    lines += [_row(_cells(summary)) for summary in summaries]
    notes = [f"- {s.configuration.name}: {note}" for s in summaries for note in s.notes()]
    return [*lines, "", *notes, *([""] if notes else [])]


def _row(cells: tuple[str, ...] | list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _cells(summary: Summary) -> list[str]:
    name = summary.configuration.name
    if not summary.succeeded:
        return [name, "", "failed", "", "", "", "", "", ""]
    seconds = summary.seconds
    failed = len(summary.rounds) - len(seconds)
    ratio = summary.ratio()
    growth = summary.growth_mib()
    records = summary.records()
    per_record = summary.added_per_record()
    return [
        name + (f" ({failed} failed)" if failed else ""),
        summary.succeeded[0]["sink"],
        f"{statistics.median(seconds):.3f}",
        f"{min(seconds):.3f}{DASH}{max(seconds):.3f}",
        f"1.00{TIMES}" if summary.configuration.slug == BASELINE else _times(ratio),
        f"{records[0]:,}" if len(records) == 1 else f"{records[0]:,}{DASH}{records[-1]:,}",
        "" if per_record is None else f"{per_record * 1e6:.1f}",
        f"{summary.peak_mib():.0f}",
        "n/a" if growth is None else f"{growth:+.0f}",
    ]


def _times(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}{TIMES}"
