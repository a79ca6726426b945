"""One transaction updating N rows through a single ORM ``update()`` statement.

Prints the time with and without auditing and the peak memory the audited run added, to
show that a large statement is captured in bounded chunks (reads of ``CHUNK`` rows, writes of
``WRITE_BATCH`` documents). Sink: a collection that BSON-encodes each batch, as pymongo
would, and keeps only a count (mongomock's own per-document cost would dominate).

    python benchmarks/large_statement.py --rows 100000
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import bson
from sqlalchemy import Integer, String, create_engine, insert, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from audit_mongo import AuditLog


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    count: Mapped[int] = mapped_column(Integer)


class EncodingSink:
    """Encodes documents exactly as pymongo's insert_many would, then drops them."""

    def __init__(self) -> None:
        self.written = 0
        self.largest_batch = 0

    def insert_many(self, documents: list[dict[str, Any]], ordered: bool = True) -> Any:
        for document in documents:
            bson.encode(document)
        self.written += len(documents)
        self.largest_batch = max(self.largest_batch, len(documents))
        return type("Result", (), {"inserted_ids": [d["_id"] for d in documents]})()

    def with_options(self, **_: Any) -> EncodingSink:
        return self


def run(
    rows: int, audited: bool, directory: Path, trace: bool = False
) -> tuple[float, EncodingSink | None, float]:
    engine = create_engine(f"sqlite:///{directory / ('a.db' if audited else 'b.db')}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.execute(insert(Item), [{"name": f"n{i}", "count": i} for i in range(rows)])
        session.commit()
    sink = EncodingSink() if audited else None
    audit = AuditLog(sink) if sink is not None else None
    if audit is not None:
        audit.track(Item)
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    with Session(engine) as session:
        session.execute(update(Item).values(count=Item.count + 1))
        session.commit()
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else 0.0
    tracemalloc.stop()
    if audit is not None:
        audit.close()
    engine.dispose()
    return elapsed, sink, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        plain, _, _ = run(args.rows, False, Path(directory))
        audited, sink, _ = run(args.rows, True, Path(directory))
    with tempfile.TemporaryDirectory() as directory:
        _, _, peak = run(args.rows, True, Path(directory), trace=True)
    assert sink is not None
    print(
        "| rows | no auditing (s) | audited (s) | documents | largest write "
        "| peak Python memory of the audited statement + commit (MiB) |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.rows:,} | {plain:.2f} | {audited:.2f} | {sink.written:,} "
        f"| {sink.largest_batch:,} | {peak:.0f} |"
    )


if __name__ == "__main__":
    main()
