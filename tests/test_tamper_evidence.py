"""Tamper evidence: every document is linked into its writer's chain and signed, and
``verify()`` finds documents changed, removed, forged or moved behind the log's back.
Logs are written by real ORM sessions; the tampering is what someone with write access to
the collection could do from the Mongo shell."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import threading
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import bson
import pytest
from pymongo.errors import AutoReconnect, BulkWriteError, ServerSelectionTimeoutError
from sqlalchemy import Engine, create_engine, event, insert
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, AuditReader, AuditWriteError
from audit_mongo.chain import signed_bytes
from tests.conftest import stored
from tests.fakes import FailingCollection, FailsOnce, Switchable
from tests.models import Base, Client
from tests.query_helpers import controlled_clock, fail_commits

KEY = b"k" * 32
KEYS = {"2026-12": KEY}


def behind_an_outage() -> tuple[Switchable, AuditLog]:
    """A signed log whose Mongo is unreachable until the test sets ``mongo.target``."""
    mongo = Switchable(FailingCollection(ServerSelectionTimeoutError("no server")))
    return mongo, new_audit(mongo, timeout=0.2, signing_keys=KEYS)


def new_audit(collection: Any, **options: Any) -> AuditLog:
    audit = AuditLog(collection, **options)
    audit.track(Client)
    return audit


@pytest.fixture
def signed(collection: Any) -> Iterator[AuditLog]:
    audit = new_audit(collection, signing_keys=KEYS)
    yield audit
    audit.close()


def write_story(session: Session) -> list[Client]:
    """Creates, updates and deletes over several commits: eight documents."""
    clients = [Client(name=f"c{i}") for i in range(4)]
    session.add_all(clients)
    session.commit()
    clients[0].name = "renamed"
    clients[1].phone = "555"
    session.commit()
    session.delete(clients[2])
    session.commit()
    clients[3].email = "d@example.com"
    session.commit()
    return clients


def in_chain_order(collection: Any) -> list[dict[str, Any]]:
    return sorted(stored(collection), key=lambda d: (d["chain"]["id"], d["chain"]["seq"]))


def kinds(problems: list[Any]) -> list[str]:
    return sorted(problem.kind for problem in problems)


def test_an_untouched_log_verifies(signed: AuditLog, session: Session, collection: Any) -> None:
    write_story(session)

    result = signed.verify()

    assert result == []
    assert result.documents == 8
    assert result.chains == 1
    assert result.signed and result.notes == []
    documents = in_chain_order(collection)
    assert [d["chain"]["seq"] for d in documents] == list(range(8))
    assert all(d["chain"]["key"] == "2026-12" for d in documents)
    for before, after in pairwise(documents):
        assert after["chain"]["prev"] == before["chain"]["hash"]
        assert after["chain"]["prev_id"] == before["_id"]


def test_every_document_passes_bson_encode_with_its_link(
    signed: AuditLog, session: Session, collection: Any
) -> None:
    write_story(session)
    for document in stored(collection):
        assert bson.decode(bson.encode(document))["chain"]["hash"] == document["chain"]["hash"]


def test_a_changed_value_is_found(signed: AuditLog, session: Session, collection: Any) -> None:
    clients = write_story(session)
    target = collection.find_one({"object_id": clients[0].id, "action": "update"})
    collection.update_one({"_id": target["_id"]}, {"$set": {"changes.name.added": ["forged"]}})

    (problem,) = signed.verify()

    assert problem.kind == "modified"
    assert problem.document_id == target["_id"]
    assert "forged" not in str(problem) and "renamed" not in str(problem)


@pytest.mark.parametrize(
    "edit",
    [
        {"$set": {"current_user_id": 7}},
        {"$set": {"created_at": bson.datetime.datetime(2020, 1, 1)}},
        {"$unset": {"changes.name": ""}},
        {"$set": {"action": "create"}},
    ],
    ids=["actor", "time", "removed field", "action"],
)
def test_any_edited_field_is_found(
    signed: AuditLog, session: Session, collection: Any, edit: dict[str, Any]
) -> None:
    clients = write_story(session)
    target = collection.find_one({"object_id": clients[0].id, "action": "update"})
    collection.update_one({"_id": target["_id"]}, edit)

    assert kinds(signed.verify()) == ["modified"]


def test_a_deleted_document_is_found(signed: AuditLog, session: Session, collection: Any) -> None:
    write_story(session)
    documents = in_chain_order(collection)
    collection.delete_many({"_id": {"$in": [documents[3]["_id"], documents[4]["_id"]]}})

    (problem,) = signed.verify()

    assert problem.kind == "missing"
    assert (problem.chain, problem.seq) == (documents[0]["chain"]["id"], 3)
    assert "positions 3-4" in str(problem)


def test_a_deleted_first_document_is_found(
    signed: AuditLog, session: Session, collection: Any
) -> None:
    write_story(session)
    collection.delete_one({"_id": in_chain_order(collection)[0]["_id"]})

    assert kinds(signed.verify()) == ["missing"]


def forged_copy(document: dict[str, Any], secret: bytes | None) -> dict[str, Any]:
    """What someone without the log's key writes: a plausible document, linked where the
    original was, its hash recomputed (HMAC with his own guess of a key, or SHA-256)."""
    forged = {**document, "_id": bson.ObjectId(), "current_user_id": "mallory"}
    forged["chain"] = {k: v for k, v in document["chain"].items() if k != "hash"}
    data = signed_bytes(forged)
    digest = (
        hashlib.sha256(data).hexdigest()
        if secret is None
        else hmac.new(secret, data, hashlib.sha256).hexdigest()
    )
    forged["chain"]["hash"] = digest
    return forged


def test_a_document_forged_without_the_key_is_found(
    signed: AuditLog, session: Session, collection: Any
) -> None:
    write_story(session)
    last = in_chain_order(collection)[-1]
    collection.delete_one({"_id": last["_id"]})
    collection.insert_one(forged_copy(last, b"a guess at the key, 32 bytes...."))

    (problem,) = signed.verify()

    assert problem.kind == "modified"


def test_without_a_key_a_recomputed_forgery_passes_and_the_result_says_so(
    collection: Any, session: Session
) -> None:
    audit = new_audit(collection)  # no signing key: documents are only hashed
    try:
        write_story(session)
        last = in_chain_order(collection)[-1]
        collection.delete_one({"_id": last["_id"]})
        collection.insert_one(forged_copy(last, None))

        result = audit.verify()
    finally:
        audit.close()

    assert result == []  # the documented limit
    assert not result.signed
    assert "forger" in result.notes[0]


def test_without_a_key_edits_and_gaps_are_still_found(collection: Any, session: Session) -> None:
    audit = new_audit(collection)
    try:
        write_story(session)
        documents = in_chain_order(collection)
        collection.update_one({"_id": documents[1]["_id"]}, {"$set": {"table_name": "x"}})
        collection.delete_one({"_id": documents[5]["_id"]})

        assert kinds(audit.verify()) == ["missing", "modified"]
    finally:
        audit.close()


def test_a_document_written_by_something_else_is_found(
    signed: AuditLog, session: Session, collection: Any
) -> None:
    write_story(session)
    collection.insert_one({"action": "delete", "table_name": "clients", "object_id": 1})

    assert kinds(signed.verify()) == ["unlinked"]


def two_chains(audit: AuditLog, engine: Engine) -> None:
    """Commits from the main thread and from another: two writers, two chains."""
    with Session(engine) as session:
        write_story(session)

    def other_writer() -> None:
        with Session(engine) as session:
            session.add_all([Client(name=f"t{i}") for i in range(3)])
            session.commit()
            session.add(Client(name="t-last"))
            session.commit()

    thread = threading.Thread(target=other_writer)
    thread.start()
    thread.join()


def test_documents_moved_between_chains_are_found(
    signed: AuditLog, engine: Engine, collection: Any
) -> None:
    two_chains(signed, engine)
    by_chain: dict[str, list[dict[str, Any]]] = {}
    for document in in_chain_order(collection):
        by_chain.setdefault(document["chain"]["id"], []).append(document)
    first, second = by_chain.values()
    assert signed.verify() == [] and signed.verify().chains == 2
    moved = first[2]  # re-linked at the end of the other chain
    collection.update_one(
        {"_id": moved["_id"]},
        {"$set": {"chain.id": second[0]["chain"]["id"], "chain.seq": len(second)}},
    )

    assert kinds(signed.verify()) == ["broken link", "missing", "modified"]


def test_documents_swapped_within_a_chain_are_found(
    signed: AuditLog, session: Session, collection: Any
) -> None:
    write_story(session)
    documents = in_chain_order(collection)
    a, b = documents[2], documents[5]
    collection.update_one({"_id": a["_id"]}, {"$set": {"chain": b["chain"]}})
    collection.update_one({"_id": b["_id"]}, {"$set": {"chain": a["chain"]}})

    problems = signed.verify()

    assert {p.document_id for p in problems if p.kind == "modified"} == {a["_id"], b["_id"]}


def test_a_copied_document_is_found(signed: AuditLog, session: Session, collection: Any) -> None:
    write_story(session)
    copy = {**in_chain_order(collection)[4], "_id": bson.ObjectId()}
    collection.insert_one(copy)

    assert kinds(signed.verify()) == ["duplicate", "modified"]


def test_a_chain_cut_short_since_an_earlier_run_is_found(
    signed: AuditLog, session: Session, collection: Any
) -> None:
    write_story(session)
    heads = signed.verify().heads
    documents = in_chain_order(collection)
    collection.delete_many({"_id": {"$in": [d["_id"] for d in documents[-2:]]}})

    assert signed.verify() == []  # a chain's newest links alone prove nothing
    (problem,) = signed.verify(heads=heads)
    assert problem.kind == "truncated"
    assert "positions 6-7" in str(problem)


def test_a_whole_chain_deleted_since_an_earlier_run_is_found(
    signed: AuditLog, session: Session, collection: Any
) -> None:
    write_story(session)
    heads = signed.verify().heads
    collection.delete_many({})

    assert kinds(signed.verify(heads=heads)) == ["truncated"]


# -- only committed documents are linked ---------------------------------------------------


def refused_commit(session: Session, engine: Engine, name: str) -> None:
    """Add a client in a transaction whose COMMIT the database refuses."""
    listener = fail_commits(engine)
    session.add(Client(name=name))
    with pytest.raises(RuntimeError):
        session.commit()
    session.rollback()
    event.remove(engine, "commit", listener)


def assert_delivered_and_verified(audit: AuditLog, collection: Any, count: int) -> None:
    """Deliver what is pending, then read the log from ``collection`` (the log may write
    through a fake) and check it as ``assert_verified_after`` does."""
    audit.deliver_pending()
    assert audit.pending() == 0
    audit.collection = collection
    assert_verified_after(audit, collection, count)


def assert_verified_after(audit: AuditLog, collection: Any, count: int) -> None:
    """The log verifies and holds ``count`` documents besides fillers (chain positions
    whose document Mongo holds under another link, or that strict mode dropped)."""
    result = audit.verify()
    assert result == [], [str(p) for p in result]
    documents = [d for d in stored(collection) if d["action"] != "link"]
    assert len(documents) == count
    assert result.documents == len(stored(collection))


def test_a_failed_commit_leaves_no_gap_with_an_outbox(collection: Any, tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(engine)
    audit = new_audit(collection, outbox=engine, signing_keys=KEYS)
    try:
        with Session(engine) as session:
            session.add(Client(name="kept"))
            session.commit()
            refused_commit(session, engine, "never committed")
            session.add(Client(name="kept too"))
            session.commit()
        assert_verified_after(audit, collection, 2)
    finally:
        audit.close()


def test_a_refused_strict_commit_leaves_no_gap(engine: Engine, collection: Any) -> None:
    mongo = Switchable(collection)
    audit = new_audit(mongo, strict=True, timeout=0.2, signing_keys=KEYS)
    try:
        with Session(engine) as session:
            session.add(Client(name="a"))
            session.commit()
            mongo.target = FailingCollection(ServerSelectionTimeoutError("no server"))
            session.add(Client(name="refused"))
            with pytest.raises(AuditWriteError):
                session.commit()
            session.rollback()
            mongo.target = collection
            session.add(Client(name="b"))
            session.commit()
        audit.collection = collection
        assert_verified_after(audit, collection, 2)
    finally:
        audit.close()


def test_a_strict_commit_that_fails_after_its_write_is_voided_without_a_gap(
    engine: Engine, collection: Any
) -> None:
    audit = new_audit(collection, strict=True, signing_keys=KEYS)
    try:
        with Session(engine) as session:
            refused_commit(session, engine, "voided")
            session.add(Client(name="b"))
            session.commit()
        assert_verified_after(audit, collection, 3)  # the document, its void, the next one
    finally:
        audit.close()


def test_documents_kept_during_an_outage_are_delivered_without_a_gap(
    engine: Engine, collection: Any
) -> None:
    mongo, audit = behind_an_outage()
    try:
        with Session(engine) as session:
            session.add(Client(name="during the outage"))
            session.commit()
            mongo.target = collection
            session.add(Client(name="after it"))
            session.commit()  # Mongo is back: the kept document goes along
            audit.deliver_pending()
            assert audit.pending() == 0
        audit.collection = collection
        assert_verified_after(audit, collection, 2)
    finally:
        audit.close()


class CutOff:
    """The connection drops in the middle of the first insert, after ``stored`` documents,
    and Mongo stays unreachable until ``down`` is cleared."""

    def __init__(self, target: Any, stored: int) -> None:
        self.target = target
        self.stored = stored
        self.calls = 0
        self.down = True

    def insert_many(self, documents: Any, ordered: bool = True) -> Any:
        self.calls += 1
        if not self.down:
            return self.target.insert_many(documents, ordered=ordered)
        if self.calls == 1:
            if self.stored:
                self.target.insert_many(list(documents)[: self.stored], ordered=ordered)
            raise AutoReconnect("connection dropped")
        raise ServerSelectionTimeoutError("no server")


@pytest.mark.parametrize("stored_before_the_error", [0, 1])
def test_a_write_cut_off_mid_batch_keeps_its_links_when_sent_again(
    engine: Engine, collection: Any, stored_before_the_error: int
) -> None:
    """Mongo may hold some of a cut-off write's documents. They are kept in the outbox with
    the links they were sent with (the outbox rows the transaction wrote are rewritten), so
    their later delivery fills their positions: no gap, though a newer document was linked
    after them meanwhile."""
    mongo = CutOff(collection, stored_before_the_error)
    audit = new_audit(mongo, outbox=engine, timeout=0.2, signing_keys=KEYS)
    try:
        with Session(engine) as session:
            session.add_all([Client(name="a"), Client(name="b")])
            session.commit()
            mongo.down = False
            session.add(Client(name="c"))  # linked after a and b, in the same chain
            session.commit()
        assert_delivered_and_verified(audit, collection, 3)
    finally:
        audit.close()


def test_pending_rows_cut_off_again_keep_their_links(engine: Engine, collection: Any) -> None:
    mongo = CutOff(collection, 1)
    mongo.calls = 1  # unreachable from the start
    audit = new_audit(mongo, outbox=engine, timeout=0.2, signing_keys=KEYS)
    try:
        with Session(engine) as session:
            session.add_all([Client(name="a"), Client(name="b")])
            session.commit()  # Mongo unreachable: nothing linked, the outbox keeps them
            mongo.calls = 0  # the next insert is cut off after one document
            assert audit.deliver_pending() == 0
            mongo.down = False
            session.add(Client(name="c"))
            session.commit()
        assert_delivered_and_verified(audit, collection, 3)
    finally:
        audit.close()


def test_concurrent_writers_each_have_a_chain(
    signed: AuditLog, engine: Engine, collection: Any
) -> None:
    def writer(n: int) -> None:
        with Session(engine) as session:
            for i in range(5):
                session.add(Client(name=f"w{n}-{i}"))
                session.commit()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    result = signed.verify()
    assert result == []
    assert result.chains == 4 and result.documents == 20


# -- keys ------------------------------------------------------------------------------


def test_rotated_keys_verify_what_each_signed(collection: Any, engine: Engine) -> None:
    old = new_audit(collection, signing_keys={"2026-06": b"o" * 32})
    with Session(engine) as session:
        session.add(Client(name="signed with the old key"))
        session.commit()
    old.close()
    keys = {"2026-06": b"o" * 32, "2026-12": KEY}
    new = new_audit(collection, signing_keys=keys, signing_key_id="2026-12")
    try:
        with Session(engine) as session:
            session.add(Client(name="signed with the new key"))
            session.commit()
        assert {d["chain"]["key"] for d in stored(collection)} == {"2026-06", "2026-12"}
        assert new.verify() == []
        only_new = AuditReader(collection, signing_keys={"2026-12": KEY})
        assert kinds(only_new.verify()) == ["unknown key"]
        wrong_old = AuditReader(collection, signing_keys={"2026-06": b"x" * 32, "2026-12": KEY})
        assert kinds(wrong_old.verify()) == ["modified"]
    finally:
        new.close()


@pytest.mark.parametrize(
    ("keys", "key_id", "error"),
    [
        ({"a": b"short"}, None, ValueError),
        ({"a": KEY, "b": KEY}, None, ValueError),
        ({"a": KEY}, "b", ValueError),
        ({"a": 42}, None, TypeError),
        ("secret", None, TypeError),
    ],
)
def test_bad_signing_keys_are_refused_at_start(
    collection: Any, keys: Any, key_id: Any, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        AuditLog(collection, signing_keys=keys, signing_key_id=key_id)
    assert "short" not in str(caught.value) and KEY.decode() not in str(caught.value)


def test_with_a_retention_verify_leaves_out_what_mongodb_has_expired(
    collection: Any, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    day = dt.timedelta(days=1)
    # Each commit asks the clock twice: commits two days ago, yesterday and now.
    controlled_clock(monkeypatch, start=now - 2 * day, step=day / 2)
    audit = new_audit(collection, signing_keys=KEYS, retention=dt.timedelta(hours=36))
    try:
        for name in ("two days ago", "yesterday", "today"):
            session.add(Client(name=name))
            session.commit()
        expired = collection.find_one({"changes.name.added": "two days ago"})
        collection.delete_one({"_id": expired["_id"]})  # as the TTL index would

        assert audit.verify() == []
        assert kinds(AuditReader(collection, signing_keys=KEYS).verify()) == ["missing"]
    finally:
        audit.close()


def test_a_strict_commit_cut_off_before_mongo_stored_anything_leaves_no_gap(
    engine: Engine, collection: Any
) -> None:
    mongo = CutOff(collection, 0)  # the connection drops: Mongo may hold the document
    audit = new_audit(mongo, strict=True, timeout=0.2, signing_keys=KEYS)
    try:
        with Session(engine) as session:
            session.add(Client(name="a"))
            with pytest.raises(AuditWriteError):
                session.commit()
            session.rollback()
            mongo.down = False
            audit.deliver_pending()  # the void document and the filler waited too
            session.add(Client(name="b"))
            session.commit()
        audit.collection = collection
        assert_verified_after(audit, collection, 2)  # the void and b
    finally:
        audit.close()


class RefusesA:
    """A schema validator refusing the creation of client "a" (code 121)."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def insert_many(self, documents: Any, ordered: bool = True) -> Any:
        refused = [
            i for i, d in enumerate(documents) if d.get("changes", {}).get("name") == A_CREATED
        ]
        kept = [d for i, d in enumerate(documents) if i not in refused]
        if kept:
            self.target.insert_many(kept)
        if refused:
            errors = [{"index": i, "code": 121, "errmsg": "failed validation"} for i in refused]
            raise BulkWriteError({"writeErrors": errors, "nInserted": len(kept)})


A_CREATED = {"added": ["a"], "deleted": []}


def test_a_strict_commit_refused_mid_batch_leaves_no_gap(engine: Engine, collection: Any) -> None:
    audit = new_audit(RefusesA(collection), strict=True, timeout=0.2, signing_keys=KEYS)
    try:
        with Session(engine) as session:
            session.add_all([Client(name="a"), Client(name="b")])
            with pytest.raises(AuditWriteError):
                session.commit()  # not committed: b was stored, and is voided
            session.rollback()
        audit.collection = collection
        assert_verified_after(audit, collection, 2)  # b and its void
    finally:
        audit.close()


def test_a_core_statement_cut_off_with_an_outbox_leaves_no_gap(
    engine: Engine, collection: Any
) -> None:
    """Outside a session the outbox row cannot be rewritten with the links (the
    application's connection is still in use): the positions are filled instead."""
    mongo = CutOff(collection, 0)
    audit = new_audit(mongo, outbox=engine, core_statements=True, timeout=0.2, signing_keys=KEYS)
    try:
        with engine.begin() as connection:
            connection.execute(insert(Client.__table__).values(name="a"))
        mongo.down = False
        assert_delivered_and_verified(audit, collection, 1)
    finally:
        audit.close()


def delivered_by_a_killed_process(collection: Any, tmp_path: Any, processes: int) -> list[Engine]:
    """Engines of ``processes`` processes on one database; the first delivered two rows'
    documents and was killed before deleting its outbox row."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engines = [create_engine(url) for _ in range(processes)]
    Base.metadata.create_all(engines[0])
    first = new_audit(collection, outbox=engines[0], engines=[engines[0]], signing_keys=KEYS)
    with Session(engines[0]) as session:
        session.add_all([Client(name="a1"), Client(name="a2")])
        session.commit()
    first._delivery._to_forget.clear()  # killed before deleting its delivered row
    first.close()
    return engines


def test_outbox_rows_delivered_twice_among_new_ones_leave_no_gap(
    collection: Any, tmp_path: Any
) -> None:
    """A process delivered its rows and died before deleting them; another committed while
    Mongo was down. The next delivery claims both together: the first rows come back as
    duplicates ahead of new ones, and their positions are filled."""
    engines = delivered_by_a_killed_process(collection, tmp_path, processes=3)
    down = FailingCollection(ServerSelectionTimeoutError("no server"))
    second = new_audit(
        down, outbox=engines[1], engines=[engines[1]], signing_keys=KEYS, timeout=0.2
    )
    with Session(engines[1]) as session:
        session.add(Client(name="c1"))
        session.commit()
    second.close()
    third = new_audit(collection, outbox=engines[2], engines=[engines[2]], signing_keys=KEYS)
    try:
        third.deliver_pending()
        assert third.pending() == 0
        assert_verified_after(third, collection, 3)
        oldest = min(d["created_at"] for d in stored(collection))
        assert collection.count_documents({"action": "link", "created_at": oldest}) == 2
        assert third.verify(since=oldest) == []  # fillers are in range with their documents
    finally:
        third.close()


def test_in_a_signed_log_a_document_hashed_without_a_key_is_found(
    signed: AuditLog, session: Session, collection: Any
) -> None:
    """A forger who leaves the key name out can compute a plain SHA-256: not accepted."""
    write_story(session)
    last = in_chain_order(collection)[-1]
    forged = {**last, "current_user_id": "mallory"}
    forged["chain"] = {k: v for k, v in last["chain"].items() if k not in ("hash", "key")}
    forged["chain"]["hash"] = hashlib.sha256(signed_bytes(forged)).hexdigest()
    collection.replace_one({"_id": last["_id"]}, forged)

    assert kinds(signed.verify()) == ["unsigned"]


def test_heads_of_chains_older_than_the_retention_window_are_dropped(
    collection: Any, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chain whose documents all expired, as the retention intends, is not truncated."""
    now = dt.datetime.now(dt.timezone.utc)
    controlled_clock(monkeypatch, start=now - dt.timedelta(days=3), step=dt.timedelta(0))
    audit = new_audit(collection, signing_keys=KEYS, retention=dt.timedelta(days=5))
    try:
        session.add(Client(name="three days ago"))
        session.commit()
        heads = audit.verify().heads
        assert len(heads) == 1
        collection.delete_many({})  # expired, two days later

        later = audit.verify(heads=heads, since=now - dt.timedelta(days=1))

        assert later == [] and later.heads == {}
        assert kinds(audit.verify(heads=heads)) == ["truncated"]  # within the window: gone
    finally:
        audit.close()


def test_a_context_too_large_for_mongo_is_shrunk_before_it_is_signed(
    signed: AuditLog, session: Session, collection: Any
) -> None:
    with signed.context(note="x" * (17 * 1024 * 1024)):
        session.add(Client(name="a"))
        session.commit()

    (document,) = stored(collection)
    assert document["context"]["note"]["omitted"] == "too large"
    assert len(bson.encode(document)) <= 16 * 1024 * 1024
    assert signed.verify() == []


class HeldFirstInsert:
    """The first insert of thread "A" waits until thread "B" has delivered, then fails as
    if no server were reachable (nothing stored); everything else reaches ``target``."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.a_inserting = threading.Event()
        self.b_done = threading.Event()

    def insert_many(self, documents: Any, ordered: bool = True) -> Any:
        if threading.current_thread().name == "A" and not self.a_inserting.is_set():
            self.a_inserting.set()
            self.b_done.wait(5)
            raise ServerSelectionTimeoutError("no server")
        return self.target.insert_many([dict(d) for d in documents], ordered=ordered)


def test_two_threads_draining_pending_work_never_send_the_same_documents(
    engine: Engine, collection: Any
) -> None:
    mongo, audit = behind_an_outage()
    try:
        with Session(engine) as session:
            session.add_all([Client(name="a"), Client(name="b")])
            session.commit()  # kept in memory
        held = HeldFirstInsert(collection)
        mongo.target = held

        def drain() -> None:
            audit.deliver_pending()
            if threading.current_thread().name == "B":
                held.b_done.set()
                return
            with Session(engine) as session:  # A's chain goes on where its failure left it
                session.add(Client(name="c"))
                session.commit()

        first = threading.Thread(target=drain, name="A")
        first.start()
        held.a_inserting.wait(5)
        second = threading.Thread(target=drain, name="B")
        second.start()
        second.join()
        first.join()
        assert_delivered_and_verified(audit, collection, 3)
    finally:
        audit.close()


def test_with_a_retention_deleting_a_chains_first_recent_documents_is_found(
    collection: Any, session: Session
) -> None:
    """verify(since=...) starts each chain at its first position in range, but a link
    whose predecessor was created within range says that predecessor must be there."""
    audit = new_audit(collection, signing_keys=KEYS, retention=dt.timedelta(days=30))
    try:
        for name in ("a", "b", "c"):
            session.add(Client(name=name))
            session.commit()
        collection.delete_one({"chain.seq": 0})  # seconds old, far from its expiry

        assert kinds(audit.verify()) == ["missing"]
    finally:
        audit.close()


def test_a_document_delivered_late_is_no_gap_for_a_since_between(
    engine: Engine, collection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document kept through an outage is linked after a newer one: its created_at is
    older than its predecessor's. A since between the two leaves it out of range, not
    missing."""
    now = dt.datetime.now(dt.timezone.utc)
    controlled_clock(monkeypatch, start=now - dt.timedelta(hours=10), step=dt.timedelta(hours=1))
    mongo = Switchable(collection)
    audit = new_audit(mongo, timeout=0.2, signing_keys=KEYS)
    try:
        with Session(engine) as session:
            for name, reachable in (("first", True), ("outage", False), ("back", True)):
                mongo.target = (
                    collection
                    if reachable
                    else FailingCollection(ServerSelectionTimeoutError("no server"))
                )
                session.add(Client(name=name))
                session.commit()  # "back" takes the kept "outage" document along
        order = [d["changes"]["name"]["added"][0] for d in in_chain_order(collection)]
        assert order == ["first", "back", "outage"]
        outage = collection.find_one({"changes.name.added": "outage"})["created_at"]
        audit.collection = collection

        assert audit.verify(since=outage + dt.timedelta(milliseconds=1)) == []
        assert audit.verify() == []
    finally:
        audit.close()


def test_deleting_the_document_a_filler_stands_for_is_found(
    engine: Engine, collection: Any
) -> None:
    """A write cut off after Mongo stored the document, outside a session: a filler takes
    its position, since the outbox row will be delivered again under another link. The
    filler names the document, which must then be found somewhere in the log."""
    mongo = CutOff(collection, 1)  # stored, then the connection drops
    audit = new_audit(mongo, outbox=engine, core_statements=True, timeout=0.2, signing_keys=KEYS)
    try:
        with engine.begin() as connection:
            connection.execute(insert(Client.__table__).values(name="a"))
        mongo.down = False
        assert_delivered_and_verified(audit, collection, 1)
        collection.delete_one({"action": "create"})  # the committed change's only copy

        assert "missing" in kinds(audit.verify())
    finally:
        audit.close()


def test_duplicates_found_after_a_cut_off_attempt_leave_no_gap(
    collection: Any, tmp_path: Any
) -> None:
    """Rows delivered by a process killed before deleting them are sent again by one whose
    first attempt is cut off: the retry's duplicates may be that attempt's or the earlier
    process's, so fillers vouch for their positions either way."""
    engines = delivered_by_a_killed_process(collection, tmp_path, processes=2)
    second = new_audit(
        FailsOnce(collection, AutoReconnect("connection dropped")),
        outbox=engines[1],
        engines=[engines[1]],
        signing_keys=KEYS,
    )
    try:
        second.deliver_pending()
        with Session(engines[1]) as session:
            session.add(Client(name="later"))  # linked after the duplicates' positions
            session.commit()
        assert_delivered_and_verified(second, collection, 3)
    finally:
        second.close()
