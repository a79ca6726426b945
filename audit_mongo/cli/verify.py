"""``verify``: check the log's chains and signatures; exit status 4 when anything is wrong.

::

    AUDIT_MONGO_SIGNING_KEYS='{"2026-12": "..."}' audit-mongo verify --heads heads.json

Keys come from ``--keys-file`` (a JSON object of key name to secret) or the
``AUDIT_MONGO_SIGNING_KEYS`` variable, never from the command line, where other users of
the machine could read them. ``--heads FILE`` compares the chains with the heads the last
run saved there, then saves the new ones: a chain cut short in between is found too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import click

from ..signing import KEY_ID_VARIABLE, KEYS_VARIABLE, SigningKeys, parse_keys
from ..verify import Head, Verification, heads_from_json, heads_to_json, verify
from .options import EXIT_OK, LogSettings, log_options, opened, usage_error
from .params import Moment

EXIT_TAMPERED = 4  # problems found


def heads_and_since_options(command: Any) -> Any:
    """--heads and --since, shared with ``flask audit verify``."""
    command = click.option(
        "--heads",
        "heads_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Compare with the chain heads saved here by the last run, then save the new ones.",
    )(command)
    return click.option(
        "--since", type=Moment(), help="Only documents created then or later (7d, a date)."
    )(command)


def keys_file_option(command: Any) -> Any:
    """--keys-file, shared with ``deliver`` (which signs what it delivers)."""
    return click.option(
        "--keys-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"JSON object of key name to secret (else ${KEYS_VARIABLE}; "
        f"${KEY_ID_VARIABLE} names the signing one).",
    )(command)


def verify_options(command: Any) -> Any:
    return heads_and_since_options(keys_file_option(command))


def verify_of(
    collection: Any, *, keys_file: Path | None, heads_file: Path | None, since: Any
) -> int:
    """Verify ``collection``, print the problems and a summary; the exit status."""
    keys = _keys(keys_file)
    result = verify(collection, keys, since=since, heads=read_heads(heads_file))
    return report(result, heads_file)


def report(result: Verification, heads_file: Path | None) -> int:
    """Print the problems (stdout), notes and a summary (stderr); save the heads; the exit
    status."""
    for problem in result:
        click.echo(str(problem))
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(_summary(result), err=True)
    if heads_file is not None:
        heads_file.write_text(json.dumps(heads_to_json(result.heads), indent=1) + "\n")
    return EXIT_TAMPERED if result else EXIT_OK


@click.command("verify", short_help="Check that no entry was changed, removed or forged.")
@verify_options
@log_options
def verify_command(
    log: LogSettings, keys_file: Path | None, heads_file: Path | None, since: dt.datetime | None
) -> None:
    """Recompute every entry's hash and walk each writer's chain: prints one line per
    problem (changed, missing, forged, moved entries). Exit status 4 when there is any.
    Needs only find on the collection."""
    with opened(log) as collection:
        status = verify_of(collection, keys_file=keys_file, heads_file=heads_file, since=since)
    click.get_current_context().exit(status)


def key_settings(keys_file: Path | None) -> tuple[dict[str, str] | None, str | None]:
    """The signing keys (name → secret) and the signing key's name, from ``keys_file`` or
    the environment; a usage error when they are malformed."""
    key_id = os.environ.get(KEY_ID_VARIABLE) or None
    if keys_file is None:
        text = os.environ.get(KEYS_VARIABLE, "").strip()
        where = f"${KEYS_VARIABLE}"
    else:
        try:
            text = keys_file.read_text()
        except OSError as exc:
            raise usage_error(f"cannot read --keys-file: {exc.strerror}") from None
        where = "--keys-file"
    if not text:
        return None, key_id
    try:
        keys = parse_keys(text, where)
        SigningKeys(keys, key_id, signs=False)  # the secrets' and the name's checks
    except (TypeError, ValueError) as exc:
        raise usage_error(str(exc)) from None
    return keys, key_id


def _keys(keys_file: Path | None) -> SigningKeys:
    keys, key_id = key_settings(keys_file)
    return SigningKeys(keys, key_id, signs=False)


def read_heads(heads_file: Path | None) -> dict[str, Head] | None:
    if heads_file is None or not heads_file.exists():
        return None
    try:
        return heads_from_json(json.loads(heads_file.read_text()))
    except (OSError, ValueError) as exc:
        raise usage_error(f"--heads: {exc}") from None


def _summary(result: Verification) -> str:
    verdict = f"{len(result)} problems" if result else "intact"
    signed = "signed" if result.signed else "hashed only"
    return f"{verdict}: {result.documents} entries in {result.chains} chains ({signed})"
