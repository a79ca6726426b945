"""``flask audit ...``: the ``audit-mongo`` query commands on the application's own log."""

from __future__ import annotations

from flask.cli import AppGroup

audit_commands = AppGroup("audit", help="Read the application's audit log.")
