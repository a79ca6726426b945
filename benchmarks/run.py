"""Command line and orchestration of the benchmark suite.

    python -m benchmarks [--quick] [--rounds N] [--sink driver|mongomock|server] ...
    python benchmarks/run.py ...

The parent process only plans and reports: every (workload, configuration, round) runs in
a fresh child process (``--one``, hidden), which times and measures itself and prints its
figures as JSON. Rounds are interleaved: round 1 of every run, then round 2, and so on.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # run as a script: python benchmarks/run.py

from benchmarks import environment, report, targets  # noqa: E402
from benchmarks.configurations import BASELINE, PEER, Configuration, select  # noqa: E402
from benchmarks.sinks import LABELS, SINK_KINDS, unavailable  # noqa: E402
from benchmarks.workloads import WORKLOADS, Sizes  # noqa: E402

DEFAULT_SIZES = Sizes(rows=5000, per_commit=100, update_rows=100_000, requests=1000)
QUICK_SIZES = Sizes(rows=300, per_commit=100, update_rows=3000, requests=60)
DEFAULT_ROUNDS, QUICK_ROUNDS = 5, 1
CHILD_TIMEOUT = 1800.0  # seconds one run may take before it counts as failed
SINK_NOTES = {
    "driver": "documents BSON-encoded as pymongo would, then dropped: audit_mongo's own cost",
    "mongomock": "an in-memory Mongo, slower per document than a real server's client",
    "server": "the MongoDB server at AUDIT_MONGO_URI",
}


@dataclass
class Plan:
    """What the parent runs: workloads by configurations, for a number of rounds."""

    workloads: list[str]
    configurations: list[Configuration]
    sizes: Sizes
    rounds: int
    sink: str
    profile: Path | None
    skipped: list[str]
    revision: str  # audit_mongo's git revision when the run started


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="What auditing costs: audit_mongo's delivery modes and peers, timed "
        "against no auditing; prints Markdown tables.",
    )
    parser.add_argument("--rounds", type=_positive, help=f"rounds (default {DEFAULT_ROUNDS})")
    parser.add_argument("--rows", type=_positive, help="unit-of-work rows (default 5000)")
    parser.add_argument("--per-commit", type=_positive, help="rows per commit (default 100)")
    parser.add_argument(
        "--update-rows", type=_positive, help="update-statement rows (default 100000)"
    )
    parser.add_argument("--requests", type=_positive, help="flask-requests (default 1000)")
    parser.add_argument("--workloads", help=f"comma list of: {', '.join(WORKLOADS)}")
    parser.add_argument(
        "--configurations", help="comma list of slugs or names, or audit_mongo, peers"
    )
    parser.add_argument("--sink", choices=SINK_KINDS, default="driver", help="default: driver")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny sizes, one round")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="write a pyinstrument report per run there"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child: WORKLOAD:CONFIGURATION
    parser.add_argument("--round", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def sizes_of(arguments: argparse.Namespace) -> Sizes:
    sizes = QUICK_SIZES if arguments.quick else DEFAULT_SIZES
    given = {
        name: getattr(arguments, name)
        for name in ("rows", "per_commit", "update_rows", "requests")
        if getattr(arguments, name) is not None
    }
    return replace(sizes, **given)


def plan_of(arguments: argparse.Namespace) -> Plan:
    try:
        configurations = select(arguments.configurations)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    sink_problem = unavailable(arguments.sink)
    if sink_problem:
        raise SystemExit(f"--sink {arguments.sink}: {sink_problem}")
    workloads, skipped = _runnable_workloads(_workloads(arguments.workloads))
    runnable = []
    for configuration in configurations:
        reason = configuration.unavailable()
        if reason:
            skipped.append(f"{configuration.name}: skipped — {reason}")
        else:
            runnable.append(configuration)
    rounds = arguments.rounds or (QUICK_ROUNDS if arguments.quick else DEFAULT_ROUNDS)
    return Plan(
        workloads,
        runnable,
        sizes_of(arguments),
        rounds,
        arguments.sink,
        arguments.profile,
        skipped,
        environment.git_revision(),
    )


def _runnable_workloads(workloads: list[str]) -> tuple[list[str], list[str]]:
    """The workloads whose libraries are installed, and a line for each of the others."""
    runnable, skipped = [], []
    for workload in workloads:
        if any(_missing(module) for module in WORKLOADS[workload].requires):
            skipped.append(f"{workload}: skipped — not installed: pip install -e '.[bench]'")
        else:
            runnable.append(workload)
    return runnable, skipped


def _workloads(names: str | None) -> list[str]:
    if names is None:
        return list(WORKLOADS)
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    for name in chosen:
        if name not in WORKLOADS:
            raise SystemExit(f"unknown workload {name!r}: one of {', '.join(WORKLOADS)}")
    return [name for name in WORKLOADS if name in chosen]


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def child_command(plan: Plan, workload: str, slug: str, round_number: int) -> list[str]:
    sizes = plan.sizes
    command = [sys.executable, "-m", "benchmarks.run", "--one", f"{workload}:{slug}"]
    command += ["--rows", str(sizes.rows), "--per-commit", str(sizes.per_commit)]
    command += ["--update-rows", str(sizes.update_rows), "--requests", str(sizes.requests)]
    command += ["--sink", plan.sink, "--round", str(round_number)]
    if plan.profile is not None:
        command += ["--profile", str(plan.profile.resolve())]
    return command


def run_child(command: list[str]) -> tuple[dict[str, Any] | None, str]:
    """The child's figures, or None and why it failed."""
    try:
        done = subprocess.run(
            command, cwd=REPOSITORY, capture_output=True, text=True, timeout=CHILD_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return None, f"no answer within {CHILD_TIMEOUT:.0f} s"
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-25:])
        return None, f"exit status {done.returncode}\n{tail}"
    try:
        return json.loads(done.stdout.strip().splitlines()[-1]), ""
    except (json.JSONDecodeError, IndexError):
        return None, f"no JSON on stdout: {done.stdout[-500:]!r}"


def execute(plan: Plan) -> tuple[dict[tuple[str, str], report.Summary], list[str]]:
    """Every run, rounds interleaved; progress on stderr."""
    summaries = {
        (workload, c.slug): report.Summary(workload, c)
        for workload in plan.workloads
        for c in plan.configurations
    }
    failures = []
    for round_number in range(1, plan.rounds + 1):
        for (workload, slug), summary in summaries.items():
            command = child_command(plan, workload, slug, round_number)
            figures, error = run_child(command)
            summary.rounds.append(figures)
            label = (
                f"[round {round_number}/{plan.rounds}] {workload} · {summary.configuration.name}"
            )
            if figures is None:
                failures.append(f"{label}: {error}")
                print(f"{label}: FAILED ({error})", file=sys.stderr, flush=True)
            else:
                print(
                    f"{label}: {figures['seconds']:.3f} s, {figures['records']:,} records",
                    file=sys.stderr,
                    flush=True,
                )
    for (workload, _), summary in summaries.items():
        summary.baseline = summaries[(workload, BASELINE)].rounds
    return summaries, failures


def render(
    plan: Plan, summaries: dict[tuple[str, str], report.Summary], failures: list[str]
) -> str:
    peers = [c.slug for c in plan.configurations if c.family == PEER]
    sizes = plan.sizes
    lines = ["# audit_mongo benchmarks", "", *environment.header_lines(peers, plan.revision)]
    lines += [
        f"- sizes: unit-of-work {sizes.rows:,} rows in commits of {sizes.per_commit:,}; "
        f"update-statement {sizes.update_rows:,} rows; flask-requests {sizes.requests:,} requests",
        f"- {plan.rounds} round(s), interleaved; each run in a fresh process (SQLite file)",
        f"- sink: {LABELS[plan.sink]}, {SINK_NOTES[plan.sink]}; peers storing in the "
        "application's database show SQL",
        f"- {report.TIMES} no auditing: the median over rounds of (this run's time / no "
        "auditing's time in the same round); RSS: the highest over rounds",
    ]
    lines += _source_changes(summaries)
    if plan.profile is not None:
        lines.append(f"- timed under pyinstrument (reports in {plan.profile}): slower than usual")
    lines.append("")
    for line in plan.skipped:
        lines.append(f"- {line}")
    if plan.skipped:
        lines.append("")
    for workload in plan.workloads:
        rows = [s for (w, _), s in summaries.items() if w == workload]
        lines += report.table(workload, sizes, rows)
    lines += targets.section(summaries, plan.sink, sizes)
    if failures:
        lines += ["## Failures", "", *(f"- {f.splitlines()[0]}" for f in failures), ""]
    return "\n".join(lines)


def _source_changes(summaries: dict[tuple[str, str], report.Summary]) -> list[str]:
    """The digest of the audit_mongo source the children ran, and a warning when they did
    not all run the same."""
    first_round: dict[str, int] = {}
    for summary in summaries.values():
        for number, figures in enumerate(summary.rounds, start=1):
            if figures is not None:
                digest = figures["source"]
                first_round[digest] = min(first_round.get(digest, number), number)
    if len(first_round) < 2:
        return [
            f"- audit_mongo source digest: {digest}, the same in every run"
            for digest in first_round
        ]
    seen = ", ".join(
        f"{d} from round {n}" for d, n in sorted(first_round.items(), key=lambda i: i[1])
    )
    return [
        f"- **audit_mongo's source changed during the run** ({len(first_round)} versions: "
        f"{seen}): the figures mix versions"
    ]


def run_one(arguments: argparse.Namespace) -> int:
    """Child process: one run; the figures as one JSON line on stdout."""
    from benchmarks.child import run_one as measure

    workload, _, slug = arguments.one.partition(":")
    profile = None
    if arguments.profile is not None:
        profile = arguments.profile / f"{workload}--{slug}--round{arguments.round}.txt"
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the figures
        figures = measure(workload, slug, sizes_of(arguments), arguments.sink, profile)
    print(json.dumps(figures))
    return 0


def main(argv: list[str] | None = None) -> int:
    arguments = parse(argv)
    if arguments.one:
        return run_one(arguments)
    plan = plan_of(arguments)
    for line in plan.skipped:
        print(line, file=sys.stderr, flush=True)
    summaries, failures = execute(plan)
    print(render(plan, summaries, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
