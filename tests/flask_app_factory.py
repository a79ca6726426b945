"""A small Flask-SQLAlchemy + Flask-Login application for the Flask integration tests."""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, request
from flask_login import LoginManager, UserMixin, login_user, logout_user
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from audit_mongo.flask import AuditMongo


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Client(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255), unique=True)
    phone: Mapped[str | None] = mapped_column(String(255))


def create_app(audit_ext: AuditMongo, database_uri: str, **config: Any) -> Flask:
    """An application with login/logout and client create/rename routes."""
    app = Flask(__name__)
    app.config.update(
        {
            "SECRET_KEY": "test",
            "SQLALCHEMY_DATABASE_URI": database_uri,
            "AUDIT_MONGO_URI": "mongomock://",
            **config,
        }
    )
    db.init_app(app)
    LoginManager(app).user_loader(lambda user_id: db.session.get(User, int(user_id)))
    with app.app_context():
        db.create_all()
    audit_ext.init_app(app, db=db)

    @app.post("/login/<int:user_id>")
    def login(user_id: int) -> str:
        user = db.session.get(User, user_id) or abort(404)
        login_user(user)
        return "ok"

    @app.post("/logout")
    def logout() -> str:
        logout_user()
        return "ok"

    @app.post("/clients")
    def create_client() -> str:
        client = Client(name=request.form["name"])
        db.session.add(client)
        db.session.commit()
        return str(client.id)

    @app.post("/clients/<int:client_id>/name")
    def rename_client(client_id: int) -> str:
        client = db.session.get(Client, client_id) or abort(404)
        client.name = request.form["name"]
        db.session.commit()
        return "ok"

    return app
