"""Loopback address allocation, persisted so addresses survive runner restarts.

Pods get ``127.0.1.2``–``127.0.1.254`` (``127.0.1.1`` is often the host name in /etc/hosts), services
``127.0.2.1``–``127.0.2.254``. Linux routes all of 127/8 to ``lo``, so binding needs no setup.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from .common import read_json, write_json

POD_PREFIX = "127.0.1."
POD_RANGE = range(2, 255)
SERVICE_PREFIX = "127.0.2."
SERVICE_RANGE = range(1, 255)


class AddressPool:
    """Key -> address, lowest free first; stored in a JSON file of its own unless ``path`` is None."""

    def __init__(self, path: Path | None, prefix: str, hosts: range, initial: dict[str, str] | None = None) -> None:
        """``path`` None: the owner persists the allocations itself (see :meth:`items`)."""
        self._path = path
        self._prefix = prefix
        self._hosts = hosts
        self._lock = threading.Lock()
        self._by_key: dict[str, str] = dict(read_json(path, {})) if path else dict(initial or {})

    def get(self, key: str) -> str | None:
        return self._by_key.get(key)

    def allocate(self, key: str) -> str:
        """The address of ``key``, allocating the lowest free one on first use."""
        with self._lock:
            if key in self._by_key:
                return self._by_key[key]
            used = set(self._by_key.values())
            for host in self._hosts:
                address = f"{self._prefix}{host}"
                if address not in used:
                    self._by_key[key] = address
                    self._save()
                    return address
        raise RuntimeError(f"no free address left in {self._prefix}0/24")

    def release(self, key: str) -> None:
        with self._lock:
            if self._by_key.pop(key, None) is not None:
                self._save()

    def retain(self, keys: Iterable[str]) -> None:
        """Release every key not in ``keys`` (objects that no longer exist)."""
        keep = set(keys)
        with self._lock:
            stale = [key for key in self._by_key if key not in keep]
            for key in stale:
                del self._by_key[key]
            if stale:
                self._save()

    def _save(self) -> None:
        if self._path is not None:
            write_json(self._path, self._by_key)

    def items(self) -> dict[str, str]:
        return dict(self._by_key)
