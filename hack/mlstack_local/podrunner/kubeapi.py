"""The API server, through the ``kubernetes`` client, with plain dicts in and out.

Dicts keep the Kubernetes field names of the YAML (``valueFrom``, ``mountPath``), which is what the
rest of the runner reads, and avoid the client's model (de)serialisation quirks (e.g. MicroTime).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..kubewatch import watch_events
from . import NODE_NAME

log = logging.getLogger("podrunner")
NODE_FIELD = f"spec.nodeName={NODE_NAME}"


class Api:
    """Everything the runner asks of the API server."""

    def __init__(self, kubeconfig: str) -> None:
        configuration = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        self.host = configuration.host
        self._client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self._client)
        self.coordination = client.CoordinationV1Api(self._client)

    def endpoint(self) -> tuple[str, int]:
        """Host and port of the API server (what pods see as the ``kubernetes`` service)."""
        parsed = urlparse(self.host)
        return parsed.hostname or "127.0.0.1", parsed.port or 443

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        return json.loads(response.data)

    def _get(self, call: Any, *args: Any) -> dict[str, Any] | None:
        try:
            return self._json(call(*args, _preload_content=False))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    # ---- ObjectSource --------------------------------------------------------------------------
    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(self.core.read_namespaced_secret, name, namespace)

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(self.core.read_namespaced_config_map, name, namespace)

    def service_account_token(
        self, namespace: str, account: str, audience: str | None, seconds: int, pod_name: str, pod_uid: str
    ) -> str | None:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": max(600, seconds),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid},
            },
        }
        try:
            response = self.core.create_namespaced_service_account_token(
                account, namespace, body, _preload_content=False
            )
        except ApiException as err:
            log.warning("%s/%s: no token for service account %s: %s", namespace, pod_name, account, err.reason)
            return None
        return str(self._json(response).get("status", {}).get("token", ""))

    # ---- pods ----------------------------------------------------------------------------------
    def list_pods(self) -> tuple[list[dict[str, Any]], str]:
        """Pods bound to the runner's node, and the list's resourceVersion."""
        data = self._json(self.core.list_pod_for_all_namespaces(field_selector=NODE_FIELD, _preload_content=False))
        return data.get("items") or [], data["metadata"]["resourceVersion"]

    def watch_pods(self, resource_version: str, timeout: int) -> Iterator[dict[str, Any]]:
        """Raw watch events (``{"type", "object"}``) from ``resource_version``, bookmarks included."""
        return watch_events(self.core.list_pod_for_all_namespaces, resource_version, timeout, field_selector=NODE_FIELD)

    def patch_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(name, namespace, {"status": status}, _preload_content=False)

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        """The final delete a kubelet does once the containers are gone (grace 0, this very UID)."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            self.core.delete_namespaced_pod(name, namespace, body=body, grace_period_seconds=0, _preload_content=False)
        except ApiException as err:
            if err.status not in (404, 409):
                raise

    def list_services(self) -> list[dict[str, Any]]:
        data = self._json(self.core.list_service_for_all_namespaces(_preload_content=False))
        return data.get("items") or []

    # ---- node ----------------------------------------------------------------------------------
    def get_node(self, name: str) -> dict[str, Any] | None:
        return self._get(self.core.read_node, name)

    def create_node(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._json(self.core.create_node(body, _preload_content=False))

    def patch_node(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._json(self.core.patch_node(name, body, _preload_content=False))

    def patch_node_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self._json(self.core.patch_node_status(name, {"status": status}, _preload_content=False))

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(self.coordination.read_namespaced_lease, name, namespace)

    def create_lease(self, namespace: str, body: dict[str, Any]) -> None:
        self.coordination.create_namespaced_lease(namespace, body, _preload_content=False)

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        self.coordination.replace_namespaced_lease(name, namespace, body, _preload_content=False)
