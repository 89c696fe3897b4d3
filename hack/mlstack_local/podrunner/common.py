"""Small helpers shared by the pod runner modules: timestamps and crash-safe JSON files."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def rfc3339(moment: float | None = None) -> str:
    """A Kubernetes ``Time`` (second precision, UTC, ``Z`` suffix) for ``moment`` (epoch seconds)."""
    stamp = datetime.now(UTC) if moment is None else datetime.fromtimestamp(moment, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(moment: float | None = None) -> str:
    """A Kubernetes ``MicroTime`` (Lease renewTime): always six fractional digits, as the API expects."""
    stamp = datetime.now(UTC) if moment is None else datetime.fromtimestamp(moment, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def read_json(path: Path, default: Any) -> Any:
    """The JSON content of ``path``, or ``default`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default
