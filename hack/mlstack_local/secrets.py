"""Generated credentials of the local stack, made once and kept in .local/secrets.json (mode 0600).

Passwords deliberately contain characters that break naive quoting and URIs, so every consumer of
them is exercised with the hard cases.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from pathlib import Path

# Characters every generated password contains at least once.
HOSTILE = "@:/%#?"
_ALPHABET = string.ascii_letters + string.digits


def hostile_password(length: int = 24) -> str:
    """A random password that contains each of ``@ : / % # ?`` and alphanumerics."""
    body = [secrets.choice(_ALPHABET) for _ in range(length - len(HOSTILE))]
    for char in HOSTILE:
        body.insert(secrets.randbelow(len(body) + 1), char)
    return "".join(body)


def token_hex(nbytes: int = 16) -> str:
    return secrets.token_hex(nbytes)


def load_or_create(path: Path, wanted: dict[str, str]) -> dict[str, str]:
    """Return stored values, generating (and saving) the ones missing.

    ``wanted`` maps a key to a kind: ``password`` (hostile characters) or ``key`` (hex, for S3 access
    keys and similar identifiers that must stay URL-safe).
    """
    stored: dict[str, str] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    changed = False
    for key, kind in wanted.items():
        if key in stored:
            continue
        stored[key] = hostile_password() if kind == "password" else token_hex()
        changed = True
    if changed or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(stored, handle, indent=2, sort_keys=True)
    os.chmod(path, 0o600)
    return stored


def shell_quote(value: str) -> str:
    """Single-quote for POSIX shells: safe for every character, including quotes."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """Write a shell-sourceable KEY='value' file with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"export {key}={shell_quote(value)}" for key, value in values.items()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a file written by :func:`write_env_file`."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("export "):
            continue
        key, _, quoted = line[len("export ") :].partition("=")
        values[key] = _unquote(quoted)
    return values


def _unquote(quoted: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(quoted):
        if quoted[i] == "'":
            end = quoted.index("'", i + 1)
            out.append(quoted[i + 1 : end])
            i = end + 1
        elif quoted[i] == '"':
            end = quoted.index('"', i + 1)
            out.append(quoted[i + 1 : end])
            i = end + 1
        else:
            out.append(quoted[i])
            i += 1
    return "".join(out)
