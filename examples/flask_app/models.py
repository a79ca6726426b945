"""The example's tables: the blog post's ``Client`` (audited) and the demo users who log in
(not audited). Passwords are stored as werkzeug hashes, never in clear."""

from __future__ import annotations

from flask_login import UserMixin
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)

# Demo accounts, shown on the login page: this is a demo, not a way to manage users.
DEMO_USERS = {"alice": "wonderland", "bob": "builder"}

DEMO_CLIENTS = (
    ("Company A", "contact@company-a.example", "+1 555 0100"),
    ("Company B", "hello@company-b.example", None),
)


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    """A demo user. The user name is the key: it is what Flask-Login gives the audit log as
    the actor, so documents and history pages say "alice" with no lookup (an application
    whose users have numeric ids records those)."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(50), primary_key=True)  # the user name
    password_hash: Mapped[str] = mapped_column(String(255))

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


class Client(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255), unique=True)
    phone: Mapped[str | None] = mapped_column(String(255))


def seed() -> None:
    """Create the tables, the demo users and, in an empty database, two clients (their
    creation is audited with nobody as the actor: no one is logged in at start-up)."""
    db.create_all()
    for username, password in DEMO_USERS.items():
        if db.session.get(User, username) is None:
            user = User(id=username)
            user.set_password(password)
            db.session.add(user)
    if db.session.scalar(select(Client.id).limit(1)) is None:
        for name, email, phone in DEMO_CLIENTS:
            db.session.add(Client(name=name, email=email, phone=phone))
    db.session.commit()
