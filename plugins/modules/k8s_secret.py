# Copyright: (c) 2026, mlstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ensure a Kubernetes Secret through one interface with a plain or a sealed backend."""

from __future__ import annotations

DOCUMENTATION = r"""
module: k8s_secret
short_description: Ensure a Kubernetes Secret, written plainly or as a SealedSecret
description:
  - Ensures a Secret with exactly the given keys and values, either directly (C(backend=plain)) or as a
    Bitnami SealedSecret encrypted on the controller with the sealed-secrets controller's public
    certificate (C(backend=sealed)), in the same wire format as C(kubeseal).
  - Sealing is randomized, so a SealedSecret is only re-sealed when the Secret the controller produced
    from it does not already hold the wanted values; a re-run with the same values changes nothing.
  - With C(backend=sealed) the module waits until the controller has unsealed the new values into the
    Secret, so the next task can rely on them.
  - Values never appear in the result or in the diff; the diff names the keys that change.
  - Why not kubernetes.core.k8s? It cannot seal, and one interface for both backends keeps the roles
    free of backend conditionals.
version_added: 0.1.0
author: mlstack developers
options:
  name:
    description: Name of the Secret; or give I(secrets).
    type: str
  secrets:
    description:
      - Several Secrets of the namespace in one run (one process and one API client), each with its own
        I(name), I(data), I(type) and I(annotations); the other options apply to all of them.
      - The run changes when any of them changes; the diff has one entry per Secret.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the Secret.
        type: str
        required: true
      data:
        description: Keys and string values of the Secret.
        type: dict
        default: {}
      type:
        description: Secret type.
        type: str
        default: Opaque
      annotations:
        description: Annotations of the Secret (and of the SealedSecret).
        type: dict
        default: {}
  namespace:
    description: Namespace of the Secret.
    type: str
    required: true
  data:
    description: Keys and string values of the Secret.
    type: dict
    default: {}
  type:
    description: Secret type.
    type: str
    default: Opaque
  labels:
    description: Labels of the Secret (and of the SealedSecret).
    type: dict
    default: {}
  annotations:
    description: Annotations of the Secret (and of the SealedSecret).
    type: dict
    default: {}
  backend:
    description: How the Secret reaches the cluster.
    type: str
    choices: [plain, sealed]
    default: plain
  sealing_cert:
    description: PEM certificate (or public key) of the sealed-secrets controller; required with C(backend=sealed).
    type: str
  sealing_scope:
    description: Sealing scope; C(strict) binds each value to this namespace and name.
    type: str
    choices: [strict, namespace-wide, cluster-wide]
    default: strict
  state:
    description: C(absent) deletes the Secret and its SealedSecret.
    type: str
    choices: [present, absent]
    default: present
  wait_timeout:
    description: Seconds to wait for the controller to unseal (sealed backend).
    type: int
    default: 120
extends_documentation_fragment:
  - mlstack.mlflow.k8s
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
requirements:
  - kubernetes (Python client)
  - cryptography
"""

EXAMPLES = r"""
- name: Ensure the database Secret
  mlstack.mlflow.k8s_secret:
    name: mlflow-db
    namespace: mlflow
    data:
      password: "{{ mlflow_db_password }}"
    backend: sealed
    sealing_cert: "{{ lookup('ansible.builtin.file', 'cert.pem') }}"
  no_log: true

- name: Ensure two Secrets in one run
  mlstack.mlflow.k8s_secret:
    namespace: mlflow
    secrets:
      - {name: mlflow-db, data: {password: "{{ mlflow_db_password }}"}}
      - {name: mlflow-session, data: {SECRET_KEY: "{{ mlflow_session_secret_key }}"}}
  no_log: true
"""

RETURN = r"""
secrets:
  description: With I(secrets), for each Secret name its C(changed), C(keys) and C(changed_keys).
  returned: with I(secrets)
  type: dict
keys:
  description: Keys of the Secret after the run.
  returned: with I(name)
  type: list
  elements: str
changed_keys:
  description: Keys whose values were added, changed or removed.
  returned: with I(name)
  type: list
  elements: str
"""

import base64
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

try:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    HAS_KUBERNETES = True
except ImportError:
    HAS_KUBERNETES = False

from ansible_collections.mlstack.mlflow.plugins.module_utils._k8s import CONNECTION_ARGS, make_api_client
from ansible_collections.mlstack.mlflow.plugins.module_utils._sealing import (
    API_VERSION,
    load_public_key,
    sealed_secret_manifest,
)

SEALED_GROUP = API_VERSION.split("/")[0]
SEALED_VERSION = API_VERSION.split("/")[1]
SEALED_PLURAL = "sealedsecrets"
# Lets an existing plain Secret be taken over by its new SealedSecret (plain -> sealed migration).
MANAGED_ANNOTATION = "sealedsecrets.bitnami.com/managed"


def encode(data: dict[str, str]) -> dict[str, str]:
    return {key: base64.b64encode(str(value).encode()).decode() for key, value in data.items()}


def changed_keys(current: dict[str, str] | None, desired: dict[str, str]) -> list[str]:
    """Keys added, removed or changed between two base64 ``data`` maps."""
    current = current or {}
    return sorted(key for key in set(current) | set(desired) if current.get(key) != desired.get(key))


def masked(keys: list[str] | set[str], changed: list[str] | None = None) -> dict[str, str]:
    changed = changed or []
    return {key: ("<changed>" if key in changed else "<hidden>") for key in sorted(keys)}


def metadata_differs(obj: Any, labels: dict[str, str], annotations: dict[str, str]) -> bool:
    """True when a wanted label or annotation is missing or different (others are left alone)."""
    have_labels = obj.metadata.labels or {}
    have_annotations = obj.metadata.annotations or {}
    return any(have_labels.get(k) != v for k, v in labels.items()) or any(
        have_annotations.get(k) != v for k, v in annotations.items()
    )


class SecretWriter:
    def __init__(self, module: AnsibleModule, params: dict[str, Any] | None = None, api_client: Any = None) -> None:
        """One Secret: ``params`` are the module's, or one entry of ``secrets`` merged over them."""
        self.module = module
        params = params or module.params
        if api_client is None:
            api_client = make_api_client(params)
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.name: str = params["name"]
        self.namespace: str = params["namespace"]
        self.labels = {str(k): str(v) for k, v in (params["labels"] or {}).items()}
        self.annotations = {str(k): str(v) for k, v in (params["annotations"] or {}).items()}
        self.data = {str(k): str(v) for k, v in (params["data"] or {}).items()}
        self.type: str = params["type"]

    def read_secret(self) -> Any | None:
        try:
            return self.core.read_namespaced_secret(self.name, self.namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def read_sealed(self) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(
                SEALED_GROUP, SEALED_VERSION, self.namespace, SEALED_PLURAL, self.name
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def body(self) -> client.V1Secret:
        return client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=self.name,
                namespace=self.namespace,
                labels=self.labels or None,
                annotations=self.annotations or None,
            ),
            type=self.type,
            data=encode(self.data),
        )

    def plain(self) -> dict[str, Any]:
        desired = encode(self.data)
        current = self.read_secret()
        before_keys = set((current.data or {}).keys()) if current else set()
        keys = changed_keys(current.data if current else None, desired)
        needs_write = (
            current is None
            or bool(keys)
            or current.type != self.type
            or metadata_differs(current, self.labels, self.annotations)
        )
        result = self.result(needs_write, keys, before_keys, current is not None)
        if not needs_write or self.module.check_mode:
            return result
        if current is None:
            self.core.create_namespaced_secret(self.namespace, self.body())
        elif current.type != self.type:
            # The type of a Secret is immutable: replace it.
            self.core.delete_namespaced_secret(self.name, self.namespace)
            self.core.create_namespaced_secret(self.namespace, self.body())
        else:
            body = self.body()
            merged_labels = {**(current.metadata.labels or {}), **self.labels}
            merged_annotations = {**(current.metadata.annotations or {}), **self.annotations}
            body.metadata.labels = merged_labels or None
            body.metadata.annotations = merged_annotations or None
            body.metadata.resource_version = current.metadata.resource_version
            self.core.replace_namespaced_secret(self.name, self.namespace, body)
        return result

    def sealed(self) -> dict[str, Any]:
        cert = self.module.params["sealing_cert"]
        if not cert:
            self.module.fail_json(msg="sealing_cert is required with backend=sealed")
        scope = self.module.params["sealing_scope"]
        desired = encode(self.data)
        current = self.read_secret()
        sealed = self.read_sealed()
        before_keys = set((current.data or {}).keys()) if current else set()
        keys = changed_keys(current.data if current else None, desired)
        owned = bool(current) and any(
            ref.kind == "SealedSecret" and ref.name == self.name for ref in (current.metadata.owner_references or [])
        )
        needs_write = (
            sealed is None
            or current is None
            or not owned
            or bool(keys)
            or current.type != self.type
            or metadata_differs(current, self.labels, self.annotations)
        )
        result = self.result(needs_write, keys, before_keys, current is not None)
        if not needs_write or self.module.check_mode:
            return result
        try:
            public_key = load_public_key(cert)
        except ValueError as err:
            self.module.fail_json(msg=f"sealing_cert is not a usable certificate or public key: {err}")
        try:
            manifest = sealed_secret_manifest(
                public_key,
                self.data,
                self.namespace,
                self.name,
                scope=scope,
                secret_type=self.type,
                labels=self.labels,
                annotations=self.annotations,
            )
        except ValueError as err:  # an invalid name, namespace or key: named, never a value
            self.module.fail_json(msg=f"cannot seal Secret {self.namespace}/{self.name}: {err}")
        if current is not None and not owned:
            # The controller refuses to overwrite a Secret it does not manage unless told it may.
            annotations = dict(current.metadata.annotations or {})
            annotations[MANAGED_ANNOTATION] = "true"
            self.core.patch_namespaced_secret(self.name, self.namespace, {"metadata": {"annotations": annotations}})
        if sealed is None:
            self.custom.create_namespaced_custom_object(
                SEALED_GROUP, SEALED_VERSION, self.namespace, SEALED_PLURAL, manifest
            )
        else:
            manifest["metadata"]["resourceVersion"] = sealed["metadata"]["resourceVersion"]
            self.custom.replace_namespaced_custom_object(
                SEALED_GROUP, SEALED_VERSION, self.namespace, SEALED_PLURAL, self.name, manifest
            )
        self.wait_unsealed(desired)
        return result

    def wait_unsealed(self, desired: dict[str, str]) -> None:
        deadline = time.monotonic() + self.module.params["wait_timeout"]
        while time.monotonic() < deadline:
            current = self.read_secret()
            if current is not None and not changed_keys(current.data, desired):
                return
            time.sleep(1)
        status = (self.read_sealed() or {}).get("status", {})
        conditions = "; ".join(c.get("message", "") for c in status.get("conditions", []) if c.get("message"))
        self.module.fail_json(
            msg=(
                f"the sealed-secrets controller did not unseal {self.namespace}/{self.name} within "
                f"{self.module.params['wait_timeout']}s (is it running, and is sealing_cert its current "
                f"certificate?) {conditions}"
            ).strip()
        )

    def absent(self) -> dict[str, Any]:
        current = self.read_secret()
        sealed = self.read_sealed()
        changed = current is not None or sealed is not None
        result = {
            "changed": changed,
            "keys": [],
            "changed_keys": sorted((current.data or {}).keys()) if current else [],
            "diff": {"before": {"exists": current is not None}, "after": {"exists": False}},
        }
        if changed and not self.module.check_mode:
            if sealed is not None:
                self.custom.delete_namespaced_custom_object(
                    SEALED_GROUP, SEALED_VERSION, self.namespace, SEALED_PLURAL, self.name
                )
            if current is not None:
                try:
                    self.core.delete_namespaced_secret(self.name, self.namespace)
                except ApiException as err:
                    if err.status != 404:
                        raise
        return result

    def result(self, changed: bool, keys: list[str], before_keys: set[str], existed: bool) -> dict[str, Any]:
        return {
            "changed": changed,
            "keys": sorted(self.data),
            "changed_keys": keys,
            "diff": {
                "before": {"data": masked(before_keys)} if existed else {},
                "after": {"data": masked(set(self.data), keys), "type": self.type},
            },
        }


# What one Secret sets: the module's own options, or each entry of ``secrets`` (the other options
# apply to all of them).
PER_SECRET_ARGS: dict[str, dict[str, Any]] = {
    "data": {"type": "dict", "default": {}, "no_log": True},
    "type": {"type": "str", "default": "Opaque"},
    "annotations": {"type": "dict", "default": {}},
}
SECRET_ENTRY = {"name": {"type": "str", "required": True}, **PER_SECRET_ARGS}


def api_error(err: ApiException, params: dict[str, Any]) -> str:
    return f"Kubernetes API error {err.status} {err.reason} for Secret {params['namespace']}/{params['name']}"


def write(writer: SecretWriter, params: dict[str, Any]) -> dict[str, Any]:
    if params["state"] == "absent":
        return writer.absent()
    if params["backend"] == "sealed":
        return writer.sealed()
    return writer.plain()


def write_all(module: AnsibleModule) -> dict[str, Any]:
    """``name`` alone, or every entry of ``secrets`` through one API client, in order."""
    params = module.params
    if params["secrets"] is None:
        return write(SecretWriter(module), params)
    results: dict[str, Any] = {}
    diffs: list[dict[str, Any]] = []
    api_client = None
    for entry in params["secrets"]:
        one = {**params, **entry}
        writer = SecretWriter(module, one, api_client)
        api_client = writer.api_client
        try:
            result = write(writer, one)
        except ApiException as err:
            module.fail_json(msg=api_error(err, one))
        diff = result.pop("diff")
        diffs.append({**diff, "before_header": f"Secret {one['namespace']}/{one['name']}"})
        results[one["name"]] = result
    return {
        "changed": any(result["changed"] for result in results.values()),
        "secrets": results,
        "diff": diffs,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str"},
            "secrets": {"type": "list", "elements": "dict", "options": SECRET_ENTRY},
            "namespace": {"type": "str", "required": True},
            **PER_SECRET_ARGS,
            "labels": {"type": "dict", "default": {}},
            "backend": {"type": "str", "choices": ["plain", "sealed"], "default": "plain"},
            "sealing_cert": {"type": "str"},
            "sealing_scope": {
                "type": "str",
                "choices": ["strict", "namespace-wide", "cluster-wide"],
                "default": "strict",
            },
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "wait_timeout": {"type": "int", "default": 120},
            **CONNECTION_ARGS,
        },
        required_one_of=[("name", "secrets")],
        mutually_exclusive=[("name", "secrets")],
        supports_check_mode=True,
    )
    if not HAS_KUBERNETES:
        module.fail_json(msg="the kubernetes Python package is required (pip install kubernetes)")
    try:
        result = write_all(module)
    except ApiException as err:
        module.fail_json(msg=api_error(err, module.params))
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
