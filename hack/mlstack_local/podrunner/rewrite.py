"""String rewriting that stands in for mount and network namespaces.

A process here sees the host filesystem and the host network. So that a container's view still works:

* **Paths**: a mount path (say ``/etc/mlflow``) is replaced by the directory the runner materialised for
  that volume wherever it appears as a path token: the whole string (``/etc/mlflow/a.ini``), a flag
  value (``--config=/etc/mlflow/a.ini``) or a word inside a shell script (``cat /etc/mlflow/a.ini``).
  A token matches only at a boundary (start, whitespace, quote, ``=``, ``:``, ``,``, ``(``, redirections,
  or right after an empty URI authority as in ``file:///data/x`` and ``sqlite:////data/x.db``)
  and only if the mount path is followed by the end, ``/`` or another boundary, so ``/data`` never
  rewrites ``/database`` or ``http://host/data``. The longest mount path wins. Paths that no volume
  covers are left alone and refer to the host (there is no image filesystem).
* **Addresses**: ``0.0.0.0`` (``::`` / ``[::]`` too) as a token, e.g. ``--host=0.0.0.0`` or
  ``0.0.0.0:8080``, becomes the pod's own loopback IP, so pods never bind to every interface and two
  pods can use the same port. A CIDR such as ``0.0.0.0/0`` is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# A boundary character before the path, or an empty URI authority: file:///data, sqlite:////data/x.db.
_LEFT = r"(?:(?<![^\s'\"=:,(<>|;&`])|(?<=://)|(?<=:///))"
_RIGHT = r"(?=$|[/\s'\";:,)|&<>`])"
_ANY_V4 = re.compile(r"(?<![\w.])0\.0\.0\.0(?![\w./])")
_ANY_V6_BRACKET = re.compile(r"\[::\](?=:|$|\s)")
_ANY_V6_BARE = re.compile(r"(?:^|(?<=[=\s]))::(?=$|\s)")


@dataclass(frozen=True)
class Mount:
    """A volume mount of one container: where the container expects it and where it really is."""

    mount_path: str
    host_path: Path
    read_only: bool = False


class PathMapper:
    """Rewrites container paths to host paths for a set of mounts (longest mount path first)."""

    def __init__(self, mounts: Iterable[Mount]) -> None:
        self._targets: dict[str, str] = {}
        for mount in mounts:
            key = mount.mount_path.rstrip("/")
            if key:  # a mount over "/" cannot be emulated by rewriting
                self._targets[key] = str(mount.host_path)
        ordered = sorted(self._targets, key=len, reverse=True)
        alternatives = "|".join(re.escape(path) for path in ordered)
        self._pattern = re.compile(f"{_LEFT}({alternatives}){_RIGHT}") if ordered else None

    def map(self, text: str) -> str:
        """``text`` with every mount-path token replaced by its host directory."""
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda match: self._targets[match.group(1)], text)

    def host_dir(self, path: str) -> str | None:
        """The host location of ``path`` if a mount covers it (the whole string), else None."""
        mapped = self.map(path)
        return mapped if mapped != path else None


def bind_to_pod_ip(text: str, pod_ip: str) -> str:
    """Replace wildcard bind addresses with the pod IP (see the module docstring)."""
    text = _ANY_V4.sub(pod_ip, text)
    text = _ANY_V6_BRACKET.sub(pod_ip, text)
    return _ANY_V6_BARE.sub(pod_ip, text)


def rewrite(text: str, mapper: PathMapper, pod_ip: str) -> str:
    """Both rewrites, as applied to every argument and environment value of a container."""
    return bind_to_pod_ip(mapper.map(text), pod_ip)
