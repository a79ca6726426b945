"""Where audit_mongo's time goes on the unit-of-work workload, stage by stage, per row.

    python -m benchmarks.stages [--rows 5000] [--per-commit 100] [--rounds 3]

Runs the workload with ``AuditLog(driver-cost sink)`` (direct delivery) and a timer around
each stage of the pipeline, then prints microseconds per audited row: the best round of
each stage, next to the whole run's time added to no auditing. A timer costs about 0.1 µs
per call, so the stages add up to a little more than the run without timers; what matters
is their proportions. Each stage is one function of the library (named in the table), so
the figures follow the code as it changes.

Unlike ``python -m benchmarks``, this runs in one process (no auditing first, then audited)
and times CPU, not wall-clock: it is a profile, not a comparison.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from audit_mongo import capture, chain, commit_delivery, delivery, log, transaction
from benchmarks.audit_mongo_modes import AuditMongoAuditing
from benchmarks.auditing import Auditing
from benchmarks.sinks import open_sink
from benchmarks.workloads import Sizes, unit_of_work

# (owner, attribute, stage): the stages, in the order a row goes through them; those
# indented run inside the one above them.
STAGES: tuple[tuple[Any, str, str], ...] = (
    (log.AuditLog, "_note", "mapper event: note the instance (`capture.note`)"),
    (capture, "_row_change", "`after_flush`: the row's change, values normalised"),
    (transaction.SessionBuffer, "record_all", "the transaction's frame (netting)"),
    (commit_delivery.CommitDelivery, "committed", "after the COMMIT, in all:"),
    (commit_delivery, "build_documents", "  build the documents"),
    (chain.Chains, "seal", "  link, hash and encode each once (`chain.seal`)"),
    (delivery.MongoWriter, "_attempt", "  `insert_many` into the sink (driver encoding)"),
)
OTHER = (
    "the rest: SQLAlchemy calling the listeners, per-commit bookkeeping (transaction id, "
    "clock, buffers), garbage collection"
)


@contextmanager
def timers(stages: tuple[tuple[Any, str, str], ...]) -> Iterator[Counter[str]]:
    """Wrap each stage's function with a CPU timer for the time of the block."""
    spent: Counter[str] = Counter()
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in stages]
    for (owner, name, label), (_, _, original) in zip(stages, originals, strict=True):
        setattr(owner, name, _timed(original, label, spent))
    try:
        yield spent
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def _timed(function: Callable[..., Any], label: str, spent: Counter[str]) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[label] += time.process_time() - started

    return timed


def one_round(sizes: Sizes, audited: bool) -> tuple[float, Counter[str]]:
    """CPU seconds of one workload run, and each stage's."""
    sink = open_sink("driver")
    auditing: Auditing = AuditMongoAuditing(sink) if audited else Auditing(sink)
    with (
        tempfile.TemporaryDirectory() as directory,
        timers(STAGES if audited else ()) as spent,
    ):
        meter = _CpuMeter()
        unit_of_work(auditing, sizes, Path(directory), meter)
    return meter.seconds, spent


class _CpuMeter:
    """The workload's ``timed`` block, in CPU seconds."""

    seconds = 0.0

    def __enter__(self) -> None:
        self._started = time.process_time()

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.process_time() - self._started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--per-commit", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args(argv)
    sizes = Sizes(arguments.rows, arguments.per_commit, 0, 0)
    plain = min(one_round(sizes, audited=False)[0] for _ in range(arguments.rounds))
    runs = [one_round(sizes, audited=True) for _ in range(arguments.rounds)]
    audited = min(seconds for seconds, _ in runs)
    rows = 3 * arguments.rows  # each row is inserted, updated and deleted
    added = (audited - plain) / rows * 1e6
    print(
        f"unit-of-work, {arguments.rows:,} rows in commits of {arguments.per_commit}, best of "
        f"{arguments.rounds} rounds: no auditing {plain:.3f} s CPU, audited (direct) "
        f"{audited:.3f} s CPU, so {added:.1f} µs added per audited row.\n"
    )
    print("| stage | µs per row |")
    print("|---|--:|")
    outer = 0.0
    for _, _, label in STAGES:
        per_row = min(spent[label] for _, spent in runs) / rows * 1e6
        outer += 0.0 if label.startswith(" ") else per_row
        print(f"| {label.replace('  ', '&nbsp;&nbsp;', 1)} | {per_row:.1f} |")
    print(f"| {OTHER} | {added - outer:.1f} |")


if __name__ == "__main__":
    main()
