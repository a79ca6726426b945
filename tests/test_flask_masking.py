"""The Flask extension's masking settings: AUDIT_MONGO_MASK, AUDIT_MONGO_MASK_KEY and
AUDIT_MONGO_DEFAULT_MASK reach the application's log, and track() takes a model's own."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from flask import Flask
from sqlalchemy import Engine, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from audit_mongo.flask import AuditMongo


class Base(DeclarativeBase):
    pass


class Vault(Base):
    __tablename__ = "vaults"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str | None] = mapped_column(String(50))
    secret: Mapped[str | None] = mapped_column(String(50))
    code: Mapped[str | None] = mapped_column(String(50))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = create_engine(f"sqlite:///{tmp_path / 'vaults.db'}")
    Base.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def opened() -> Iterator[list[AuditMongo]]:
    extensions: list[AuditMongo] = []
    yield extensions
    for extension in extensions:
        extension.log.close()


def recorded(extension: AuditMongo, engine: Engine) -> dict[str, Any]:
    """What the application's log records of a new vault: each attribute's value."""
    with Session(engine) as session:
        session.add(Vault(id=1, label="front", secret="s", code="c"))
        session.commit()
    (document,) = extension.log.collection.find()
    return {name: field["added"][0] for name, field in document["changes"].items()}


def audit_app(opened: list[AuditMongo], *, track: dict[str, Any], **config: Any) -> AuditMongo:
    """An application whose extension tracks Vault (with ``track`` options) on its own
    engine, configured with ``config``."""
    app = Flask(__name__)
    app.config.update({"AUDIT_MONGO_URI": "mongomock://", **config})
    extension = AuditMongo()
    extension.track(Vault, **track)
    extension.init_app(app)
    opened.append(extension)
    return extension


def test_the_mask_key_and_names_in_the_config_reach_the_log(
    engine: Engine, opened: list[AuditMongo]
) -> None:
    extension = audit_app(
        opened,
        track={},
        AUDIT_MONGO_MASK=["code"],
        AUDIT_MONGO_MASK_KEY="a flask application secret",
    )

    values = recorded(extension, engine)

    def digest(attribute: str, value: str) -> str:
        message = f"vaults.{attribute}".encode() + b"\x00" + bson.encode({"v": value})
        return (
            "hmac-sha256:"
            + hmac.new(b"a flask application secret", message, hashlib.sha256).hexdigest()
        )

    assert values == {
        "id": 1,
        "label": "front",
        "secret": digest("secret", "s"),
        "code": digest("code", "c"),
    }


def test_the_default_mask_is_on_unless_the_config_turns_it_off(
    engine: Engine, opened: list[AuditMongo]
) -> None:
    default = audit_app(opened, track={})
    assert recorded(default, engine)["secret"] == "[masked]"
    default.log.close()
    with Session(engine) as session:
        session.query(Vault).delete()
        session.commit()

    values = recorded(audit_app(opened, track={}, AUDIT_MONGO_DEFAULT_MASK=False), engine)
    assert values["secret"] == "s"


def test_track_takes_a_models_mask_and_default_mask(
    engine: Engine, opened: list[AuditMongo]
) -> None:
    extension = audit_app(opened, track={"mask": ("label",), "default_mask": False})

    values = recorded(extension, engine)

    assert (values["label"], values["secret"], values["code"]) == ("[masked]", "s", "c")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"AUDIT_MONGO_MASK": "code"}, "mask is a collection of attribute names, not a string"),
        ({"AUDIT_MONGO_MASK_KEY": 42}, "mask_key is an application secret, bytes or str"),
        ({"AUDIT_MONGO_DEFAULT_MASK": "false"}, "default_mask is True or False"),
    ],
)
def test_bad_masking_config_is_a_clear_error(config: dict[str, Any], message: str) -> None:
    app = Flask(__name__)
    app.config.update({"AUDIT_MONGO_URI": "mongomock://", **config})
    with pytest.raises(TypeError, match=message):
        AuditMongo(app)
