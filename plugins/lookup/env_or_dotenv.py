"""Lookup plugin: a value from the controller's environment, else from a dotenv file (~/.env)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: env_or_dotenv
author: mlstack developers
short_description: Read a variable from the environment, falling back to a dotenv file
description:
  - Returns the value of each named variable from the controller's environment.
  - When a variable is unset or empty there, reads it from a dotenv file (default C(~/.env)), which
    may use C(KEY=value), C(export KEY=value) and single or double quotes.
  - In the file, blank lines and lines starting with C(#) are skipped; a C(#) outside quotes starts a
    comment only at the start of the value or after a space, so C(KEY=pa#ss) is C(pa#ss). Quotes and
    backslashes work as in a shell, without expansion, C($HOME) stays as written; unquoted words are
    joined by one space. A missing file counts as empty.
  - Values are returned as data, never templated, so a value holding C({{) is returned as written.
  - Returns an empty string when neither has it, so callers can fail with their own message.
options:
  _terms:
    description: Names of the variables.
    required: true
  file:
    description: Path of the dotenv file.
    type: path
    default: ~/.env
"""

EXAMPLES = r"""
- name: Read the Harbor robot token
  ansible.builtin.set_fact:
    harbor_token: "{{ lookup('mlstack.mlflow.env_or_dotenv', 'HARBOR_ROBOT_TOKEN') }}"
  no_log: true
"""

RETURN = r"""
_raw:
  description: One value per term (empty string when not found).
  type: list
  elements: str
"""

import os
import shlex
from pathlib import Path

from ansible.plugins.lookup import LookupBase


def _strip_comment(value: str) -> str:
    """``value`` without its comment: from a ``#`` outside quotes that starts the value or follows a space."""
    quote = ""
    escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or value[index - 1].isspace()):
            return value[:index]
    return value


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse KEY=value lines; comments and blank lines are skipped, shell quoting is honoured."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            continue
        try:
            parts = shlex.split(_strip_comment(value), posix=True)
        except ValueError:  # unbalanced quotes: the text as written
            parts = [value.strip()]
        values[key.strip()] = " ".join(parts)
    return values


class LookupModule(LookupBase):
    def run(self, terms: list[str], variables: dict | None = None, **kwargs: object) -> list[str]:
        self.set_options(var_options=variables, direct=kwargs)
        path = Path(os.path.expanduser(str(self.get_option("file"))))
        dotenv: dict[str, str] | None = None
        results = []
        for term in terms:
            value = os.environ.get(term, "")
            if not value:
                if dotenv is None:
                    dotenv = parse_dotenv(path.read_text()) if path.is_file() else {}
                value = dotenv.get(term, "")
            results.append(value)
        return results
