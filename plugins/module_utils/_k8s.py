# Copyright: (c) 2026, mlstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Kubernetes connection of the collection's Kubernetes modules (documented by doc_fragments/k8s.py)."""

from __future__ import annotations

from typing import Any

# module_defaults: {group/mlstack.mlflow.k8s: {kubeconfig: ..., context: ...}} sets them for every task.
CONNECTION_ARGS: dict[str, dict[str, Any]] = {
    "kubeconfig": {"type": "path"},
    "context": {"type": "str"},
}


def make_api_client(params: dict[str, Any]) -> Any:
    """An API client from the kubeconfig and context in ``params`` (the default kubeconfig when unset)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=params["kubeconfig"], context=params["context"])
