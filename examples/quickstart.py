"""audit_mongo quickstart: audit a model's changes and print the documents they produced.

Runs as is on SQLite and an in-memory Mongo; set AUDIT_MONGO_URI (for example
mongodb://localhost:27017/app) to write to a real server instead, and AUDIT_MONGO_COLLECTION
to name the collection (default user_logs).

    python examples/quickstart.py
"""

from __future__ import annotations

import datetime as dt
import os

from bson import json_util
from sqlalchemy import String, create_engine, insert, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from audit_mongo import AuditLog


class Base(DeclarativeBase):
    pass


class Client(Base):
    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255), unique=True)
    phone: Mapped[str | None] = mapped_column(String(255))


def main() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)

    audit = AuditLog.from_uri(
        os.environ.get("AUDIT_MONGO_URI", "mongomock://"),
        os.environ.get("AUDIT_MONGO_COLLECTION", "user_logs"),
        outbox=engine,  # documents commit with the data: a Mongo outage or a crash loses none
        # Signs each document's link in its chain, so verify() finds forgeries. Keep the
        # key in your secret store; this demo makes one up unless AUDIT_SIGNING_KEY is set.
        signing_keys={"demo": os.environ.get("AUDIT_SIGNING_KEY") or os.urandom(32)},
    )
    audit.ensure_indexes()
    audit.track(Client)

    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    with Session(engine) as session, audit.acting_as(42):
        client = Client(name="Company B", email="b@example.com")
        session.add(client)
        session.commit()  # create

        client.name = "Company A"
        client.phone = "+1 555 0100"
        session.commit()  # update: only what changed, old and new

        # The query API reads the log back as typed entries, with no Mongo query to write.
        history = list(audit.history(client))  # newest first
        first_state = audit.state_at(Client, client.id, history[-1].created_at)

        session.delete(client)
        session.commit()  # delete: every column as it was

        # Bulk statements bypass mapper events; they are recorded all the same, one
        # document per row, with the value the database computed.
        session.execute(insert(Client), [{"name": "Company C"}, {"name": "Company D"}])
        session.execute(update(Client).values(name=Client.name + " Ltd"))
        session.commit()  # two creates, with their final names

    mine = {"created_at": {"$gte": started}}  # a real server may hold earlier runs' documents
    documents = list(audit.collection.find(mine).sort([("created_at", 1), ("_id", 1)]))
    for document in documents:
        print(json_util.dumps(document, indent=2, json_options=json_util.RELAXED_JSON_OPTIONS))
    print("\nThe first client's history, newest first, before it was deleted:")
    for entry in history:
        print(" ", entry.describe())
    print("  its values as first committed:", first_state)
    problems = audit.verify(since=started)  # [] while nobody has tampered with the log
    print(f"verify(): {len(problems)} problems in {problems.documents} documents")
    print(f"{len(documents)} audit documents in {audit.collection.full_name}")
    audit.close()


if __name__ == "__main__":
    main()
