"""Images map to local runtimes instead of pulled filesystems.

* An image whose repository (without registry host, tag or digest) ends with ``mlflow`` runs with the
  MLflow runtime venv, built from ``images/mlflow/requirements.txt`` (the file the real image installs),
  so the pinned packages are the ones the image ships. Its ``bin`` comes first on PATH.
* Any other image runs with the host's tools (``/usr/local/bin:/usr/bin:/bin``): enough for test pods
  written for ``busybox``-like images (``sh``, ``cat``, ``python3`` from the host).

Image entrypoints are not emulated: a container without ``command`` runs its ``args`` as the argv.

Pulls are not emulated either, with one exception that keeps pull secrets honest: every Secret named
in ``imagePullSecrets`` must exist, and for an image on a loopback registry (the stack's Harbor
stand-in) the registry's ``/v2/`` endpoint must accept the credentials found for it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sources import ObjectSource

HOST_PATH = "/usr/local/bin:/usr/bin:/bin"
_LOOPBACK = ("127.", "localhost", "[::1]")


@dataclass(frozen=True)
class Runtime:
    """How a container of some image runs here."""

    name: str
    path: str
    image_id: str


def split_image(image: str) -> tuple[str | None, str]:
    """(registry host or None, repository path) of an image reference, tag and digest removed."""
    ref = image.split("@", 1)[0]
    first, _, rest = ref.partition("/")
    host: str | None = None
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, ref = first, rest
    last_slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > last_slash:
        ref = ref[:colon]
    return host, ref


def requirements_hash(requirements: Path) -> str:
    """First 12 hex digits of the sha256 of the runtime's requirements file (its cache key)."""
    return hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]


class ImageResolver:
    """Chooses the runtime for an image (see the module docstring)."""

    def __init__(self, mlflow_venv: Path | None) -> None:
        self._mlflow_venv = mlflow_venv

    def resolve(self, image: str) -> Runtime:
        _, repository = split_image(image)
        if repository.endswith("mlflow"):
            if self._mlflow_venv is None or not (self._mlflow_venv / "bin" / "python").exists():
                raise ImageError(f"no MLflow runtime venv for {image} (run `make up` to build it)")
            venv = self._mlflow_venv
            return Runtime("mlflow-venv", f"{venv / 'bin'}:{HOST_PATH}", f"mlstack-venv://{venv.name}")
        return Runtime("host", HOST_PATH, "mlstack-host://usr-bin")


class ImageError(Exception):
    """The image cannot be "pulled": reported as ErrImagePull / ImagePullBackOff."""


def _docker_auths(secret: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    data = secret.get("data") or {}
    raw = data.get(".dockerconfigjson") or data.get(".dockercfg")
    if not raw:
        return {}
    parsed = json.loads(base64.b64decode(raw))
    return dict(parsed.get("auths", parsed))


def _strip_scheme(key: str) -> str:
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key.split("/", 1)[0]


def _basic(entry: Mapping[str, Any]) -> str | None:
    if entry.get("auth"):
        return str(entry["auth"])
    if entry.get("username") is not None:
        return base64.b64encode(f"{entry['username']}:{entry.get('password', '')}".encode()).decode()
    return None


def check_pull(image: str, pull_secret_names: list[str], namespace: str, source: ObjectSource) -> None:
    """Raise :class:`ImageError` when kubelet would fail to pull ``image`` (see the module docstring)."""
    credentials: dict[str, str] = {}
    for name in pull_secret_names:
        secret = source.get_secret(namespace, name)
        if secret is None:
            raise ImageError(f'image pull secret "{name}" not found in namespace "{namespace}"')
        for key, entry in _docker_auths(secret).items():
            auth = _basic(entry)
            if auth:
                credentials.setdefault(_strip_scheme(key), auth)
    host, _ = split_image(image)
    if host is None or not host.startswith(_LOOPBACK):
        return
    status = _registry_status(host, credentials.get(host))
    if status != 200:
        raise ImageError(f"pulling {image}: registry {host} answered {status} to the pull credentials")


def _registry_status(host: str, auth: str | None) -> int | str:
    """Status of ``GET /v2/`` on a registry (HTTPS without verification first, then plain HTTP)."""
    headers = {"Authorization": f"Basic {auth}"} if auth else {}
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    last: int | str = "unreachable"
    for scheme in ("https", "http"):
        request = urllib.request.Request(f"{scheme}://{host}/v2/", headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except (OSError, ValueError) as err:
            last = f"unreachable ({err})"
    return last
