"""Shared fakes for the pod runner unit tests: an in-memory API and pod manifests."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))


class FakeSource:
    """An ObjectSource over dicts: ``secrets[(ns, name)] = {key: str}``, same for configmaps."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.configmaps: dict[tuple[str, str], dict[str, str]] = {}
        self.tokens: list[tuple[str, str, str | None]] = []

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        data = self.secrets.get((namespace, name))
        if data is None:
            return None
        return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        data = self.configmaps.get((namespace, name))
        return None if data is None else {"data": dict(data)}

    def service_account_token(
        self, namespace: str, account: str, audience: str | None, seconds: int, pod_name: str, pod_uid: str
    ) -> str | None:
        self.tokens.append((namespace, account, audience))
        return "token-for-" + account


def make_pod(
    containers: list[dict[str, Any]],
    *,
    name: str = "web",
    namespace: str = "ns1",
    uid: str = "uid-1",
    volumes: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    restart: str = "Always",
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": {"app": name}},
        "spec": {
            "nodeName": "mlstack-runner",
            "serviceAccountName": "default",
            "restartPolicy": restart,
            "containers": containers,
            "volumes": volumes or [],
            **spec,
        },
        "status": {"phase": "Pending"},
    }
    if init:
        body["spec"]["initContainers"] = init
    return body
