"""What the report's header says about where the figures come from: date, interpreter,
machine, the versions of the libraries measured, and audit_mongo's commit."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
SOURCE = REPOSITORY / "audit_mongo"
LIBRARIES = ("SQLAlchemy", "pymongo", "mongomock", "Flask", "Flask-SQLAlchemy")
PEER_DISTRIBUTIONS = {
    "continuum": "SQLAlchemy-Continuum",
    "continuum-subquery": "SQLAlchemy-Continuum",
    "history": "SQLAlchemy-History",
    "history-subquery": "SQLAlchemy-History",
    "sqlaudit": "sqlaudit",
}


def installed(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def versions(names: tuple[str, ...] | list[str]) -> str:
    found = [(name, installed(name)) for name in names]
    return ", ".join(f"{name} {v}" for name, v in found if v is not None) or "none"


def peer_versions(slugs: list[str]) -> str:
    distributions = list(
        dict.fromkeys(PEER_DISTRIBUTIONS[s] for s in slugs if s in PEER_DISTRIBUTIONS)
    )
    return versions(distributions)


def git_revision() -> str:
    """The checkout's commit, and whether audit_mongo/ differs from it (read-only git)."""
    environment = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never write the index

    def git(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *arguments], cwd=REPOSITORY, capture_output=True, text=True, env=environment
        )

    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return "not a git checkout"
        dirty = git("diff", "--quiet", "HEAD", "--", "audit_mongo").returncode != 0
    except OSError:
        return "git not available"
    return f"git {head.stdout.strip()}" + (
        ", audit_mongo/ has uncommitted changes" if dirty else ""
    )


def source_digest() -> str:
    """A digest of audit_mongo's Python source as it is on disk now: each child reports
    the one it ran, so a run that straddles an edit of the library says so."""
    digest = hashlib.sha256()
    for path in sorted(SOURCE.rglob("*.py")):
        digest.update(str(path.relative_to(SOURCE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def header_lines(peer_slugs: list[str], revision: str) -> list[str]:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    python = f"Python {platform.python_version()} ({platform.python_implementation()})"
    return [
        f"- date: {now}",
        f"- {python} on {platform.platform()}, {os.cpu_count()} CPUs",
        f"- libraries: {versions(list(LIBRARIES))}",
        f"- peers: {peer_versions(peer_slugs) if peer_slugs else 'none run'}",
        f"- audit_mongo {installed('audit_mongo') or '?'} ({revision} when the run started)",
    ]
