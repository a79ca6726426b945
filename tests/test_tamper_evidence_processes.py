"""Chains across processes: writers in several processes link their own chains, without a
shared lock, and a process killed between its write to Mongo and the deletion of its outbox
rows leaves no gap when another process delivers those rows again."""

from __future__ import annotations

import signal
import subprocess
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from tests.fakes import FileCollection
from tests.models import Base, Client
from tests.test_faults import python

KEYS = {"k1": "a secret of thirty-two characters"}

WRITER = """
import sys
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from audit_mongo import AuditLog
from tests.fakes import FileCollection
from tests.models import Base, Client

engine = create_engine(sys.argv[1])
Base.metadata.create_all(engine)
audit = AuditLog(FileCollection(sys.argv[2]), signing_keys={"k1": sys.argv[3]})
audit.track(Client)
sys.stdin.readline()  # start together
with Session(engine) as session:
    for i in range(20):
        session.add(Client(name=f"c{i}"))
        session.commit()
audit.close()
"""

KILLED_AFTER_DELIVERY = """
import os, signal, sys
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from audit_mongo import AuditLog
from audit_mongo.delivery import MongoWriter
from tests.fakes import FileCollection
from tests.models import Client

send = MongoWriter.send

def send_then_die(self, documents, *known):
    send(self, documents, *known)  # Mongo holds them; their outbox rows are not deleted yet
    os.kill(os.getpid(), signal.SIGKILL)

MongoWriter.send = send_then_die
engine = create_engine(sys.argv[1])
audit = AuditLog(FileCollection(sys.argv[2]), outbox=engine, signing_keys={"k1": sys.argv[3]})
audit.track(Client)
with Session(engine) as s:
    s.add_all([Client(name=f"c{i}") for i in range(25)])
    s.commit()
print("not reached")
"""


def verify_file(mongo: FileCollection, collection: Any) -> Any:
    collection.insert_many(mongo.find())
    return AuditLog(collection, signing_keys=KEYS).verify()


def test_writers_in_several_processes_each_link_a_chain(tmp_path: Any, collection: Any) -> None:
    mongo = str(tmp_path / "mongo.db")
    FileCollection(mongo)
    children = [
        python(
            WRITER, f"sqlite:///{tmp_path / f'app{n}.db'}", mongo, KEYS["k1"], stdin=subprocess.PIPE
        )
        for n in range(2)
    ]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.close()
    assert [child.wait(timeout=60) for child in children] == [0, 0]

    result = verify_file(FileCollection(mongo), collection)

    assert result == [], [str(p) for p in result]
    assert result.chains == 2 and result.documents == 40


def test_rows_delivered_again_after_a_crash_leave_no_gap(tmp_path: Any, collection: Any) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    mongo = FileCollection(str(tmp_path / "mongo.db"))
    child = python(KILLED_AFTER_DELIVERY, url, mongo.path, KEYS["k1"], stdout=subprocess.PIPE)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL and "not reached" not in out
    assert len(mongo.find()) == 25  # in Mongo, and still in the outbox

    fresh = AuditLog(mongo, outbox=engine, signing_keys=KEYS)
    fresh.track(Client)
    try:
        assert fresh.deliver_pending() == 25  # all already there: duplicates
        with Session(engine) as session:
            session.add(Client(name="later"))  # linked in the fresh process's chain
            session.commit()
    finally:
        fresh.close()

    result = verify_file(mongo, collection)
    assert result == [], [str(p) for p in result]
    assert result.chains == 2 and result.documents == 26
