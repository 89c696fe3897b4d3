# Copyright: (c) 2026, mlstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read many Kubernetes objects in one module run: one process, one client, one discovery per API version."""

from __future__ import annotations

DOCUMENTATION = r"""
module: k8s_read
short_description: Read many Kubernetes objects or lists in one run
description:
  - Runs a set of named queries, each like one C(kubernetes.core.k8s_info) call (a named object, or a list
    filtered by labels), and returns for each the same C(api_found) and C(resources) that k8s_info returns.
  - Why not kubernetes.core.k8s_info? Every module run starts a Python process and imports the kubernetes
    client, about 0.7 s on a small controller; a deploy reads some twenty objects before it changes any. One
    run reads them all, and asks the API server about each API version once.
  - It only reads, so it reports C(changed=false) and runs the same in check mode.
  - A kind the cluster does not serve gives C(api_found=false) and no resources, as with k8s_info; so does
    an API group that is not installed.
  - The result holds what the API server returned, Secret data included, so register it with C(no_log).
    Its C(msg) on failure names the query and the API error, never object data.
version_added: 0.2.0
author: mlstack developers
options:
  queries:
    description:
      - Queries by a name of your choice; each result is under the same name.
      - Each has C(kind) and optionally C(api_version) (default C(v1)), C(namespace) (ignored for
        cluster-scoped kinds), C(name) (one object; without it, a list) and C(label_selectors) (a list of
        C(key=value) or other selector terms, joined with commas).
    type: dict
    required: true
extends_documentation_fragment:
  - mlstack.mlflow.k8s
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
requirements:
  - kubernetes (Python client)
"""

EXAMPLES = r"""
- name: Read the namespace, the StorageClasses and a Secret at once
  mlstack.mlflow.k8s_read:
    queries:
      namespace: {kind: Namespace, name: mlflow}
      storage_classes: {api_version: storage.k8s.io/v1, kind: StorageClass}
      db: {kind: Secret, namespace: mlflow, name: mlflow-db}
  register: found
  no_log: true
"""

RETURN = r"""
results:
  description: For each query name, C(api_found) (whether the cluster serves the kind) and C(resources).
  returned: always
  type: dict
  sample: {namespace: {api_found: true, resources: [{apiVersion: v1, kind: Namespace, metadata: {name: mlflow}}]}}
"""

import json
from typing import Any
from urllib.parse import quote, urlencode

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlstack.mlflow.plugins.module_utils._k8s import CONNECTION_ARGS, make_api_client

try:
    from kubernetes.client.rest import ApiException

    HAS_KUBERNETES = True
except ImportError:  # pragma: no cover - reported by main()
    HAS_KUBERNETES = False

QUERY_KEYS = {"api_version", "kind", "namespace", "name", "label_selectors"}


class QueryError(Exception):
    """A query that cannot be run as given."""


def api_base(api_version: str) -> str:
    """The discovery path of an API version: /api/v1 for the core group, /apis/GROUP/VERSION otherwise."""
    if api_version == "v1":
        return "/api/v1"
    if api_version.count("/") != 1 or not all(api_version.split("/")):
        raise QueryError(f"api_version must be v1 or GROUP/VERSION such as apps/v1 (got {api_version!r})")
    return f"/apis/{api_version}"


def find_kind(discovery: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The resource of a kind in an API version's discovery document (not a subresource such as pods/log)."""
    for resource in discovery.get("resources", []):
        if resource.get("kind") == kind and "/" not in resource.get("name", "/"):
            return resource
    return None


def normalized(query: Any, name: str) -> dict[str, Any]:
    """A query with its defaults, or a QueryError naming what is wrong."""
    if not isinstance(query, dict):
        raise QueryError(f"query {name!r} must be a mapping with kind (got {type(query).__name__})")
    unknown = set(query) - QUERY_KEYS
    if unknown:
        raise QueryError(f"query {name!r} has unknown keys {sorted(unknown)}; known: {sorted(QUERY_KEYS)}")
    if not query.get("kind"):
        raise QueryError(f"query {name!r} needs a kind")
    selectors = query.get("label_selectors") or []
    if isinstance(selectors, str) or not all(isinstance(s, str) for s in selectors):
        raise QueryError(f"query {name!r}: label_selectors must be a list of strings such as app=mlflow")
    return {
        "api_version": str(query.get("api_version") or "v1"),
        "kind": str(query["kind"]),
        "namespace": str(query.get("namespace") or ""),
        "name": str(query.get("name") or ""),
        "label_selectors": list(selectors),
    }


def object_path(base: str, resource: dict[str, Any], query: dict[str, Any]) -> str:
    """The REST path of a query's object or list."""
    path = base
    if resource.get("namespaced") and query["namespace"]:
        path += f"/namespaces/{quote(query['namespace'], safe='')}"
    path += f"/{resource['name']}"
    if query["name"]:
        path += f"/{quote(query['name'], safe='')}"
    elif query["label_selectors"]:
        path += "?" + urlencode({"labelSelector": ",".join(query["label_selectors"])})
    return path


class Reader:
    def __init__(self, params: dict[str, Any]) -> None:
        self.api = make_api_client(params)
        self.discovered: dict[str, dict[str, Any] | None] = {}

    def get(self, path: str) -> dict[str, Any] | None:
        """GET a path as JSON; None when the API server answers 404."""
        try:
            response = self.api.call_api(
                path,
                "GET",
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return json.loads(response.data)

    def discovery(self, api_version: str) -> dict[str, Any] | None:
        if api_version not in self.discovered:
            self.discovered[api_version] = self.get(api_base(api_version))
        return self.discovered[api_version]

    def run(self, query: dict[str, Any]) -> dict[str, Any]:
        discovery = self.discovery(query["api_version"])
        resource = find_kind(discovery, query["kind"]) if discovery else None
        if resource is None:
            return {"api_found": False, "resources": []}
        found = self.get(object_path(api_base(query["api_version"]), resource, query))
        if found is None:
            return {"api_found": True, "resources": []}
        if query["name"]:
            return {"api_found": True, "resources": [found]}
        # List items carry no apiVersion and kind; k8s_info's and the roles' consumers expect them.
        items = [{"apiVersion": query["api_version"], "kind": query["kind"], **item} for item in found.get("items", [])]
        return {"api_found": True, "resources": items}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "queries": {"type": "dict", "required": True},
            **CONNECTION_ARGS,
        },
        supports_check_mode=True,
    )
    if not HAS_KUBERNETES:
        module.fail_json(msg="the kubernetes Python package is required (pip install kubernetes)")
    try:
        queries = {str(name): normalized(query, str(name)) for name, query in module.params["queries"].items()}
    except QueryError as err:
        module.fail_json(msg=str(err))
    try:
        reader = Reader(module.params)
    except Exception as err:  # the kubernetes client raises ConfigException, OSError, YAML errors
        module.fail_json(msg=f"cannot load the kubeconfig {module.params['kubeconfig'] or '(default)'}: {err}")
    results: dict[str, Any] = {}
    for name, query in queries.items():
        what = f"{query['kind']} {query['namespace'] + '/' if query['namespace'] else ''}{query['name'] or '(list)'}"
        try:
            results[name] = reader.run(query)
        except ApiException as err:
            module.fail_json(msg=f"query {name!r}: Kubernetes API error {err.status} {err.reason} reading {what}")
        except QueryError as err:
            module.fail_json(msg=str(err))
        except Exception as err:  # connection refused, TLS errors: urllib3 raises its own
            module.fail_json(msg=f"query {name!r}: cannot read {what} from the API server: {type(err).__name__}: {err}")
    module.exit_json(changed=False, results=results)


if __name__ == "__main__":
    main()
