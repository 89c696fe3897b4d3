"""k8s_read: how a query becomes a REST path, and the queries it refuses before reading anything.

What it reads from a real API server is proven in tests/integration/test_k8s_read.py.
"""

from __future__ import annotations

import pytest
from ansible_collections.mlstack.mlflow.plugins.modules import k8s_read

DISCOVERY = {
    "resources": [
        {"name": "pods", "kind": "Pod", "namespaced": True},
        {"name": "pods/log", "kind": "Pod", "namespaced": True},
        {"name": "namespaces", "kind": "Namespace", "namespaced": False},
        {"name": "namespaces/status", "kind": "Namespace", "namespaced": False},
    ]
}


@pytest.mark.parametrize(
    ("api_version", "base"),
    [
        ("v1", "/api/v1"),
        ("apps/v1", "/apis/apps/v1"),
        ("gateway.networking.k8s.io/v1", "/apis/gateway.networking.k8s.io/v1"),
    ],
)
def test_api_base(api_version, base):
    assert k8s_read.api_base(api_version) == base


@pytest.mark.parametrize("api_version", ["apps", "/v1", "apps/", "a/b/c", "v2"])
def test_api_base_refuses_what_is_not_v1_or_group_version(api_version):
    with pytest.raises(k8s_read.QueryError, match="GROUP/VERSION"):
        k8s_read.api_base(api_version)


def test_find_kind_skips_subresources_and_unknown_kinds():
    assert k8s_read.find_kind(DISCOVERY, "Pod")["name"] == "pods"
    assert k8s_read.find_kind(DISCOVERY, "Namespace")["name"] == "namespaces"
    assert k8s_read.find_kind(DISCOVERY, "Deployment") is None
    assert k8s_read.find_kind({}, "Pod") is None


def query(**given):
    return k8s_read.normalized(given, "q")


def test_paths_of_named_objects_lists_and_cluster_scoped_kinds():
    pods = k8s_read.find_kind(DISCOVERY, "Pod")
    namespaces = k8s_read.find_kind(DISCOVERY, "Namespace")
    assert k8s_read.object_path("/api/v1", pods, query(kind="Pod", namespace="ml", name="p-1")) == (
        "/api/v1/namespaces/ml/pods/p-1"
    )
    # A list in every namespace, and one filtered by labels (the selector URL-encoded, terms joined by commas).
    assert k8s_read.object_path("/api/v1", pods, query(kind="Pod")) == "/api/v1/pods"
    assert (
        k8s_read.object_path(
            "/api/v1", pods, query(kind="Pod", namespace="ml", label_selectors=["app=mlflow", "tier in (a,b)"])
        )
        == "/api/v1/namespaces/ml/pods?labelSelector=app%3Dmlflow%2Ctier+in+%28a%2Cb%29"
    )
    # A namespace given for a cluster-scoped kind is ignored, as k8s_info ignores it.
    assert k8s_read.object_path("/api/v1", namespaces, query(kind="Namespace", namespace="ml", name="ml")) == (
        "/api/v1/namespaces/ml"
    )
    # A name is one path segment: a slash in it cannot reach another path.
    assert k8s_read.object_path("/api/v1", pods, query(kind="Pod", namespace="ml", name="../x")) == (
        "/api/v1/namespaces/ml/pods/..%2Fx"
    )


def test_a_query_gets_its_defaults():
    assert query(kind="Secret") == {
        "api_version": "v1",
        "kind": "Secret",
        "namespace": "",
        "name": "",
        "label_selectors": [],
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("Secret", "must be a mapping"),
        ({"name": "x"}, "needs a kind"),
        ({"kind": "Secret", "labels": ["a=b"]}, "unknown keys \\['labels'\\]"),
        ({"kind": "Secret", "label_selectors": "a=b"}, "label_selectors must be a list"),
    ],
)
def test_bad_queries_are_named(given, message):
    with pytest.raises(k8s_read.QueryError, match=f"query 'bad'.*{message}|{message}"):
        k8s_read.normalized(given, "bad")


def test_a_bad_query_fails_the_module_before_it_loads_a_kubeconfig(run_module, tmp_path):
    result = run_module(
        k8s_read.main,
        {"queries": {"db": {"kind": "Secret"}, "broken": {"name": "x"}}, "kubeconfig": str(tmp_path / "none")},
    )
    assert result["failed"]
    assert result["msg"] == "query 'broken' needs a kind"


def test_a_kubeconfig_that_cannot_be_loaded_is_named(run_module, tmp_path):
    missing = tmp_path / "missing.kubeconfig"
    result = run_module(k8s_read.main, {"queries": {"db": {"kind": "Secret"}}, "kubeconfig": str(missing)})
    assert result["failed"]
    assert result["msg"].startswith(f"cannot load the kubeconfig {missing}: ")
