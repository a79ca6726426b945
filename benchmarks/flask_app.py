"""The Flask application of the ``flask-requests`` workload: Flask-SQLAlchemy on a SQLite
file, ``POST /clients`` creating a client and ``PUT /clients/<id>`` renaming it and setting
its phone, as a small JSON API would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy

from benchmarks.auditing import Auditing
from benchmarks.models import Models, new_base
from benchmarks.workloads import build_models


def create_app(auditing: Auditing, directory: Path) -> tuple[Flask, Any, Models]:
    """The application, its ``SQLAlchemy`` and its models, tables created."""
    db = SQLAlchemy(model_class=new_base())
    models = build_models(auditing, db.Model)
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{directory / 'app.db'}"
    db.init_app(app)
    with app.app_context():
        db.create_all()
    _add_routes(app, db, models.client)
    return app, db, models


def _add_routes(app: Flask, db: Any, client: Any) -> None:
    @app.post("/clients")
    def create_client() -> tuple[dict[str, Any], int]:
        data = request.get_json()
        row = client(name=data["name"], email=data["email"])
        db.session.add(row)
        db.session.commit()
        return {"id": row.id}, 201

    @app.put("/clients/<int:client_id>")
    def update_client(client_id: int) -> dict[str, Any]:
        row = db.get_or_404(client, client_id)
        data = request.get_json()
        row.name = data["name"]
        row.phone = data["phone"]
        db.session.commit()
        return {"id": client_id}


def serve(test_client: Any, requests: int) -> None:
    """``requests`` requests: even ones create a client, odd ones update the last one."""
    created = 0
    for n in range(requests):
        if n % 2 == 0:
            body = {"name": f"client {n}", "email": f"client{n}@example.com"}
            created = _expect(test_client.post("/clients", json=body), 201)["id"]
        else:
            body = {"name": f"CLIENT {n}", "phone": f"+1 555 {n:07d}"}
            _expect(test_client.put(f"/clients/{created}", json=body), 200)


def _expect(response: Any, status: int) -> dict[str, Any]:
    if response.status_code != status:
        raise RuntimeError(f"{response.status_code} from {response.request.path}")
    return dict(response.get_json())
