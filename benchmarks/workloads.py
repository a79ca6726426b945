"""The three workloads, each on a SQLite file in the run's temporary directory: what is
set up before the clock starts, and what is timed.

- ``unit-of-work``: inserts, two-column updates and deletes, a ``Session`` per commit;
- ``update-statement``: one ``update(Item)`` statement over every row, in one transaction;
- ``flask-requests``: a Flask-SQLAlchemy application serving create and update requests.

Each timed part ends with ``auditing.flush()``: what the auditing wrote later (a
background writer) counts too.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, insert, select, update
from sqlalchemy.orm import Session

from benchmarks.auditing import Auditing, Records
from benchmarks.models import Models, define_models, new_base

SETUP_CHUNK = 10_000  # rows per INSERT of the untimed setup (bounds its memory)


@dataclass(frozen=True)
class Sizes:
    """How much work each workload does."""

    rows: int  # unit-of-work: rows inserted, then updated, then deleted
    per_commit: int  # unit-of-work: rows per commit
    update_rows: int  # update-statement: rows the statement updates
    requests: int  # flask-requests: requests served


Timed = AbstractContextManager[Any]  # the block a workload times: the child's meter
Workload = Callable[[Auditing, Sizes, Path, Timed], Records]


def build_models(auditing: Auditing, base: type) -> Models:
    """The models, with what the configuration adds before and after defining them."""
    models = define_models(base, auditing.model_hooks())
    auditing.models_defined(models)
    return models


def sqlite_engine(directory: Path) -> Engine:
    return create_engine(f"sqlite:///{directory / 'app.db'}")


def unit_of_work(auditing: Auditing, sizes: Sizes, directory: Path, timed: Timed) -> Records:
    """Timed: ``rows`` inserts, then as many two-column updates, then as many deletes, in
    commits of ``per_commit``, each commit its own ``Session`` as an application's."""
    models = build_models(auditing, new_base())
    engine = sqlite_engine(directory)
    try:
        models.metadata.create_all(engine)
        auditing.attach(engine, models)
        with timed:
            insert_rows(engine, models.client, sizes)
            update_rows(engine, models.client, sizes)
            delete_rows(engine, models.client, sizes)
            auditing.flush()
        return auditing.records(engine, models)
    finally:
        auditing.close()
        engine.dispose()


def _batches(sizes: Sizes) -> range:
    return range(0, sizes.rows, sizes.per_commit)


def insert_rows(engine: Engine, client: Any, sizes: Sizes) -> None:
    for start in _batches(sizes):
        numbers = range(start, min(start + sizes.per_commit, sizes.rows))
        with Session(engine) as session:
            session.add_all(
                client(name=f"client {n}", email=f"client{n}@example.com") for n in numbers
            )
            session.commit()


def update_rows(engine: Engine, client: Any, sizes: Sizes) -> None:
    """Each commit loads the next rows with one SELECT (keyset on the id) and changes two
    columns of each."""
    last_id = 0
    for _ in _batches(sizes):
        with Session(engine) as session:
            query = select(client).where(client.id > last_id).order_by(client.id)
            rows = session.scalars(query.limit(sizes.per_commit)).all()
            for row in rows:
                row.name = row.name.upper()
                row.phone = f"+1 555 {row.id:07d}"
            last_id = rows[-1].id
            session.commit()


def delete_rows(engine: Engine, client: Any, sizes: Sizes) -> None:
    for _ in _batches(sizes):
        with Session(engine) as session:
            rows = session.scalars(select(client).order_by(client.id).limit(sizes.per_commit))
            for row in rows.all():
                session.delete(row)
            session.commit()


def update_statement(auditing: Auditing, sizes: Sizes, directory: Path, timed: Timed) -> Records:
    """Setup (untimed, through a Core connection before auditing starts): ``update_rows``
    items. Timed: one ``update(Item)`` of every row and its commit."""
    models = build_models(auditing, new_base())
    engine = sqlite_engine(directory)
    try:
        models.metadata.create_all(engine)
        insert_items(engine, models.item, sizes.update_rows)
        auditing.attach(engine, models)
        item = models.item
        with timed:
            with Session(engine) as session:
                session.execute(update(item).values(count=item.count + 1))
                session.commit()
            auditing.flush()
        return auditing.records(engine, models)
    finally:
        auditing.close()
        engine.dispose()


def insert_items(engine: Engine, item: Any, rows: int) -> None:
    table = item.__table__
    for start in range(0, rows, SETUP_CHUNK):
        numbers = range(start, min(start + SETUP_CHUNK, rows))
        with engine.begin() as connection:
            connection.execute(insert(table), [{"name": f"item {n}", "count": n} for n in numbers])


def flask_requests(auditing: Auditing, sizes: Sizes, directory: Path, timed: Timed) -> Records:
    """Timed: ``requests`` requests through Flask's test client, alternately creating a
    client and updating the one just created."""
    from benchmarks.flask_app import create_app, serve

    app, db, models = create_app(auditing, directory)
    try:
        auditing.attach_flask(app, db, models)
        test_client = app.test_client()
        with timed:
            serve(test_client, sizes.requests)
            auditing.flush()
        with app.app_context():
            return auditing.records(db.engine, models)
    finally:
        auditing.close()
        with app.app_context():
            db.engine.dispose()


@dataclass(frozen=True)
class WorkloadInfo:
    """A workload by name, and the modules it needs."""

    name: str
    run: Workload
    requires: tuple[str, ...] = ()


WORKLOADS: dict[str, WorkloadInfo] = {
    info.name: info
    for info in (
        WorkloadInfo("unit-of-work", unit_of_work),
        WorkloadInfo("update-statement", update_statement),
        WorkloadInfo("flask-requests", flask_requests, ("flask", "flask_sqlalchemy")),
    )
}
