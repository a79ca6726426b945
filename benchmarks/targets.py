"""The "Targets" section: the figures of this run against the goals audit_mongo set itself
(informational: they never change the exit status).

- unit-of-work with the driver-cost sink: direct at most 1.25 times no auditing, outbox 1.5 times,
  and every audit_mongo mode below every peer;
- flask-requests: the background writer at most 1.2 times no auditing;
- update-statement (100,000 rows): at most 3 times the unaudited statement, and RSS
  growth below 200 MB.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from benchmarks.configurations import AUDIT_MONGO, PEER
from benchmarks.report import TIMES, Summary
from benchmarks.workloads import Sizes

MB = 1_000_000 / 2**20  # MiB per MB
GROWTH_LIMIT_MB = 200
TARGET_SIZES = {"rows": 5000, "update_rows": 100_000}


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    result: str  # "met", "missed" or "not measured"


def _ratio_target(
    summaries: dict[tuple[str, str], Summary], workload: str, slug: str, limit: float, what: str
) -> Verdict:
    target = f"{workload}: {what} ≤ {limit:g}{TIMES} no auditing"
    summary = summaries.get((workload, slug))
    ratio = summary.ratio() if summary is not None else None
    if ratio is None:
        return Verdict(target, "—", "not measured")
    return Verdict(target, f"{ratio:.2f}{TIMES}", "met" if ratio <= limit else "missed")


def _below_peers(summaries: dict[tuple[str, str], Summary], workload: str) -> Verdict:
    target = f"{workload}: every audit_mongo mode below every peer"
    ratios = {
        family: [
            (s.ratio(), s.configuration.name)
            for (w, _), s in summaries.items()
            if w == workload and s.configuration.family == family and s.ratio() is not None
        ]
        for family in (AUDIT_MONGO, PEER)
    }
    if not ratios[AUDIT_MONGO] or not ratios[PEER]:
        return Verdict(target, "—", "not measured")
    slowest, fastest = max(ratios[AUDIT_MONGO]), min(ratios[PEER])
    measured = (
        f"slowest audit_mongo: {slowest[1]} {slowest[0]:.2f}{TIMES}; "
        f"fastest peer: {fastest[1]} {fastest[0]:.2f}{TIMES}"
    )
    return Verdict(target, measured, "met" if slowest[0] < fastest[0] else "missed")


def _memory_target(summary: Summary) -> Verdict:
    target = f"update-statement: {summary.configuration.name} RSS growth < {GROWTH_LIMIT_MB} MB"
    growth = summary.growth_mib() if summary.succeeded else None
    if growth is None:
        return Verdict(target, "—", "not measured")
    measured = f"{growth:.0f} MiB ({growth / MB:.0f} MB)"
    return Verdict(target, measured, "met" if growth / MB < GROWTH_LIMIT_MB else "missed")


def verdicts(summaries: dict[tuple[str, str], Summary], sink: str) -> Iterator[Verdict]:
    uow = "unit-of-work"
    if sink == "driver":
        yield _ratio_target(summaries, uow, "direct", 1.25, "audit_mongo direct")
        yield _ratio_target(summaries, uow, "outbox", 1.5, "audit_mongo outbox")
        yield _below_peers(summaries, uow)
    else:
        yield Verdict(f"{uow} targets", "—", "not measured (they need --sink driver)")
    for slug in ("background", "background-outbox"):
        name = "audit_mongo " + slug.replace("-", " + ")
        yield _ratio_target(summaries, "flask-requests", slug, 1.2, name)
    for (workload, slug), summary in summaries.items():
        if workload == "update-statement" and summary.configuration.family == AUDIT_MONGO:
            name = summary.configuration.name
            yield _ratio_target(summaries, workload, slug, 3, name)
            yield _memory_target(summary)


def section(summaries: dict[tuple[str, str], Summary], sink: str, sizes: Sizes) -> list[str]:
    lines = ["## Targets", ""]
    if sizes.rows != TARGET_SIZES["rows"] or sizes.update_rows != TARGET_SIZES["update_rows"]:
        lines += [
            f"Measured at {sizes.rows:,} rows and a {sizes.update_rows:,}-row statement, not "
            "the targets' 5,000 and 100,000: indicative only.",
            "",
        ]
    lines += ["| target | measured | result |", "|---|---|---|"]
    lines += [f"| {v.target} | {v.measured} | {v.result} |" for v in verdicts(summaries, sink)]
    return [*lines, ""]
