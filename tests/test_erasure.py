"""Erasure: a person's values taken out of the log while ``verify()`` still passes, and
still finds any other change."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, AuditReader
from audit_mongo.chain import erasure_bytes
from audit_mongo.erase import ERASED
from tests.conftest import stored
from tests.models import Client

KEYS = {"2026-12": b"e" * 32}


@pytest.fixture(params=["signed", "hashed"])
def audit(request: pytest.FixtureRequest, collection: Any) -> Iterator[AuditLog]:
    log = AuditLog(collection, signing_keys=KEYS if request.param == "signed" else None)
    log.track(Client)
    yield log
    log.close()


def people(session: Session) -> tuple[Client, Client]:
    """Alice (created, then her email and phone changed) and Bob (created)."""
    alice = Client(name="Alice", email="alice@example.com", phone="111")
    bob = Client(name="Bob", email="bob@example.com")
    session.add_all([alice, bob])
    session.commit()
    alice.email = "alice@new.example.com"
    alice.phone = "222"
    session.commit()
    return alice, bob


def values(collection: Any, object_id: int) -> list[Any]:
    return [
        value
        for document in stored(collection, object_id=object_id)
        for change in document["changes"].values()
        for side in ("added", "deleted")
        for value in change[side]
    ]


def test_erasing_a_row_replaces_its_values_and_verify_still_passes(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    alice, bob = people(session)

    result = audit.erase(Client, alice.id)

    assert result.erased == 2 and result.refused == []
    assert set(map(str, values(collection, alice.id))) == {str(ERASED)}
    assert "bob@example.com" in values(collection, bob.id)  # others untouched
    assert audit.verify() == []
    erased = stored(collection, object_id=alice.id)[0]
    assert erased["chain"]["erasure"]["fields"] == ["email", "id", "name", "phone"]


def test_erasing_some_fields_keeps_the_others(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    alice, _ = people(session)

    audit.erase("clients", alice.id, fields=["email"])

    update = stored(collection, object_id=alice.id, action="update")[0]
    assert update["changes"]["email"] == {"added": [ERASED], "deleted": [ERASED]}
    assert update["changes"]["phone"] == {"added": ["222"], "deleted": ["111"]}
    assert audit.verify() == []


def test_a_second_erasure_adds_fields_and_still_verifies(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    alice, _ = people(session)
    audit.erase(Client, alice.id, fields=["email"])

    again = audit.erase(Client, alice.id, fields=["email", "phone"])

    assert again.erased == 2  # both documents held a phone value still
    assert audit.erase(Client, alice.id, fields=["email"]).erased == 0  # nothing left
    update = stored(collection, object_id=alice.id, action="update")[0]
    assert update["chain"]["erasure"]["fields"] == ["email", "phone"]
    assert audit.verify() == []


def test_a_change_to_an_erased_document_is_still_found(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    alice, _ = people(session)
    audit.erase(Client, alice.id, fields=["email"])
    update = stored(collection, object_id=alice.id, action="update")[0]

    collection.update_one({"_id": update["_id"]}, {"$set": {"changes.phone.added": ["999"]}})

    (problem,) = audit.verify()
    assert (problem.kind, problem.document_id) == ("modified", update["_id"])


def forge_erasure(collection: Any, document: dict[str, Any], secret: bytes | None) -> None:
    """What someone without the key can do: erase (really: change) a value and compute an
    erasure hash himself, unkeyed (SHA-256, no key name) or with a guessed secret."""
    erased = {**document, "changes": {**document["changes"], "email": {"added": [ERASED]}}}
    erasure: dict[str, Any] = {"at": document["created_at"], "fields": ["email"]}
    if secret is not None:
        erasure["key"] = "2026-12"
    erased["chain"] = {**document["chain"], "erasure": erasure}
    data = erasure_bytes(erased)
    erasure["hash"] = (
        hashlib.sha256(data).hexdigest()
        if secret is None
        else hmac.new(secret, data, hashlib.sha256).hexdigest()
    )
    collection.replace_one({"_id": document["_id"]}, erased)


@pytest.mark.parametrize(("secret", "kind"), [(None, "unsigned"), (b"g" * 32, "modified")])
def test_a_forged_erasure_is_found(
    session: Session, collection: Any, secret: bytes | None, kind: str
) -> None:
    """Someone without the key cannot erase (or claim to have erased) a value."""
    audit = AuditLog(collection, signing_keys=KEYS)
    audit.track(Client)
    try:
        alice, _ = people(session)
        mallory = AuditReader(collection, signing_keys={"2026-12": b"m" * 32})
        mallory.erase(Client, alice.id)  # refused: with his key nothing verifies
        assert stored(collection, object_id=alice.id)[0]["changes"]["name"]["added"] == ["Alice"]
        unkeyed = AuditReader(collection)
        assert unkeyed.erase(Client, alice.id).refused  # unknown key: nothing verifies
        forge_erasure(
            collection, stored(collection, object_id=alice.id, action="update")[0], secret
        )

        assert [p.kind for p in audit.verify()] == [kind]
    finally:
        audit.close()


def test_an_edited_document_is_not_laundered_by_an_erasure(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    alice, _ = people(session)
    update = stored(collection, object_id=alice.id, action="update")[0]
    collection.update_one({"_id": update["_id"]}, {"$set": {"current_user_id": "mallory"}})

    result = audit.erase(Client, alice.id, fields=["email"])

    assert result.refused == [update["_id"]]
    assert [p.kind for p in audit.verify()] == ["modified"]


def test_erasure_follows_a_row_through_a_key_change(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    alice, _ = people(session)
    old_id = alice.id
    alice.id = 100
    session.commit()

    audit.erase(Client, 100)

    assert set(map(str, values(collection, old_id))) == {str(ERASED)}
    assert audit.verify() == []


def test_erasure_checks_its_arguments(audit: AuditLog, session: Session) -> None:
    people(session)
    with pytest.raises(ValueError, match="no_such"):
        audit.erase(Client, 1, fields=["no_such"])
    with pytest.raises(ValueError):
        audit.erase("no_such_table", 1)
    with pytest.raises(ValueError):
        audit.erase(Client, {"$gt": 0})


def test_a_reader_with_several_keys_must_name_the_one_that_signs_erasures(
    collection: Any,
) -> None:
    reader = AuditReader(collection, signing_keys={"a": b"a" * 16, "b": b"b" * 16})
    assert reader.verify() == []  # verifying needs no signer
    with pytest.raises(ValueError, match="signing_key_id"):
        reader.erase("clients", 1)


def acted(audit: AuditLog, session: Session) -> None:
    """User 7 and user 8 each create a client from a web request."""
    for user, address in ((7, "10.0.0.7"), (8, "10.0.0.8")):
        context = {"remote_addr": address, "user_agent": f"browser of {user}", "request_id": "r"}
        with audit.acting_as(user), audit.context(**context):
            session.add(Client(name=f"by {user}"))
            session.commit()


def test_erasing_an_actor_replaces_the_context_of_what_they_did(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    acted(audit, session)

    result = audit.erase_actor(7, context=["remote_addr", "user_agent"])

    assert result.erased == 1
    (mine,) = stored(collection, current_user_id=7)
    assert mine["context"] == {"remote_addr": ERASED, "user_agent": ERASED, "request_id": "r"}
    assert mine["changes"]["name"]["added"] == ["by 7"]  # the row is not the actor's data
    (theirs,) = stored(collection, current_user_id=8)
    assert theirs["context"]["remote_addr"] == "10.0.0.8"
    assert audit.verify() == []
    assert mine["chain"]["erasure"]["context"] == ["remote_addr", "user_agent"]


def test_erasing_an_actor_without_names_erases_the_whole_context(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    acted(audit, session)

    audit.erase_actor(8)
    audit.erase(Client, 2, fields=["name"])  # both kinds of erasure on one document

    (theirs,) = stored(collection, current_user_id=8)
    assert set(map(str, theirs["context"].values())) == {str(ERASED)}
    assert theirs["changes"]["name"]["added"] == [ERASED]
    assert audit.verify() == []
    with pytest.raises(ValueError):
        audit.erase_actor(None)
    with pytest.raises(ValueError):
        audit.erase_actor({"$ne": 0})


def test_documents_written_before_tamper_evidence_are_erased_too(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    """A document without a link has no evidence to keep (verify reports it as unlinked
    either way): erasure must not leave it holding the person's values."""
    alice, _ = people(session)
    collection.update_many({"object_id": alice.id}, {"$unset": {"chain": ""}})

    result = audit.erase(Client, alice.id, fields=["email"])

    assert result.erased == 2 and result.refused == []
    assert "alice@example.com" not in values(collection, alice.id)
    assert "chain" not in stored(collection, object_id=alice.id)[0]
