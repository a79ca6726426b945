"""What each delivery mode costs on a unit-of-work workload.

5,000 inserts, 5,000 two-column updates and 5,000 deletes, in commits of 100, on a SQLite
file; each configuration runs in a process of its own, rounds interleaved, and the table
shows the median seconds and the median of per-round ratios to no auditing. Sink: a
collection that BSON-encodes each batch as pymongo would and drops it (the "driver cost"
sink): what audit_mongo costs, not what a server costs.

    python benchmarks/delivery_modes.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import bson
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

CONFIGURATIONS: dict[str, dict[str, Any] | None] = {
    "no auditing": None,
    "direct (memory)": {},
    "outbox": {"outbox": True},
    "background + outbox": {"outbox": True, "background": True},
    "strict": {"strict": True},
}


class Base(DeclarativeBase):
    pass


class Client(Base):
    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(255))


class EncodingSink:
    """Encodes documents exactly as pymongo's insert_many would, then drops them."""

    def __init__(self) -> None:
        self.documents = 0

    def insert_many(self, documents: Any, ordered: bool = True) -> None:
        for document in documents:
            bson.encode(document)
        self.documents += len(documents)


def workload(engine: Any, rows: int, per_commit: int) -> None:
    with Session(engine) as session:
        clients = [Client(name=f"client {i}", email=f"c{i}@example.com") for i in range(rows)]
        for start in range(0, rows, per_commit):
            session.add_all(clients[start : start + per_commit])
            session.commit()
        for start in range(0, rows, per_commit):
            for client in clients[start : start + per_commit]:
                client.name = client.name.upper()
                client.phone = "+1 555 0100"
            session.commit()
        for start in range(0, rows, per_commit):
            for client in clients[start : start + per_commit]:
                session.delete(client)
            session.commit()


def run_one(name: str, rows: int, per_commit: int) -> dict[str, Any]:
    """One timed run of one configuration, in this process."""
    warnings.simplefilter("ignore")
    from audit_mongo import AuditLog

    options = CONFIGURATIONS[name]
    with tempfile.TemporaryDirectory() as directory:
        engine = create_engine(f"sqlite:///{Path(directory) / 'app.db'}")
        Base.metadata.create_all(engine)
        sink = EncodingSink()
        audit = None
        if options is not None:
            kwargs = dict(options)
            if kwargs.pop("outbox", False):
                kwargs["outbox"] = engine
            audit = AuditLog(sink, **kwargs)
            audit.track(Client)
        started = time.perf_counter()
        workload(engine, rows, per_commit)
        if audit is not None:
            audit.flush()
        seconds = time.perf_counter() - started
        if audit is not None:
            audit.close()
        engine.dispose()
    return {"seconds": seconds, "documents": sink.documents}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--per-commit", type=int, default=100)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.one:
        print(json.dumps(run_one(arguments.one, arguments.rows, arguments.per_commit)))
        return
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGURATIONS}
    for _ in range(arguments.rounds):
        for name in CONFIGURATIONS:
            command = [sys.executable, __file__, "--one", name, "--rows", str(arguments.rows)]
            command += ["--per-commit", str(arguments.per_commit)]
            output = subprocess.run(command, capture_output=True, text=True, check=True)
            results[name].append(json.loads(output.stdout))
    print_table(results)


def print_table(results: dict[str, list[dict[str, Any]]]) -> None:
    baseline = [r["seconds"] for r in results["no auditing"]]
    print("| configuration | median s | min-max s | median ratio | documents |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        seconds = [r["seconds"] for r in runs]
        ratio = statistics.median(s / b for s, b in zip(seconds, baseline, strict=True))
        print(
            f"| {name} | {statistics.median(seconds):.3f} | {min(seconds):.3f}-"
            f"{max(seconds):.3f} | {ratio:.2f}x | {runs[0]['documents']} |"
        )


if __name__ == "__main__":
    main()
