"""What pods refer to in the API (Secrets, ConfigMaps, tokens), behind a small interface tests can fake."""

from __future__ import annotations

import base64
from typing import Any, Protocol


class ObjectSource(Protocol):
    """Read access to the objects a pod's env and volumes refer to; None means "not found"."""

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def service_account_token(
        self, namespace: str, account: str, audience: str | None, seconds: int, pod_name: str, pod_uid: str
    ) -> str | None: ...


def secret_data(secret: dict[str, Any]) -> dict[str, bytes]:
    """A Secret's keys with decoded values (``stringData`` never comes back from the API)."""
    return {key: base64.b64decode(value or "") for key, value in (secret.get("data") or {}).items()}


def configmap_data(configmap: dict[str, Any]) -> dict[str, bytes]:
    """A ConfigMap's keys (``data`` and ``binaryData``) as bytes."""
    data = {key: (value or "").encode() for key, value in (configmap.get("data") or {}).items()}
    for key, value in (configmap.get("binaryData") or {}).items():
        data[key] = base64.b64decode(value or "")
    return data


class MissingReference(Exception):
    """A referenced Secret, ConfigMap or key is missing and the reference is not optional."""
