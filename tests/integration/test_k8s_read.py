"""mlstack.mlflow.k8s_read against the local stack's API server: many reads in one module run.

Preflight reads the cluster with it once per run (the Secrets a previous run left, the certificate, the
Gateway API, the StorageClasses, the namespace, what an upgrade starts from), so what it returns has to
match what kubernetes.core.k8s_info returns, and its failures have to name the query without data.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import yaml

from .conftest import Kubectl, run_playbook

VALUE = "k8s-read-s3cr3t-value"


def read(tmp_path: Path, queries: dict[str, Any], *args: str, kubeconfig: str = "") -> tuple[Any, str]:
    """Run k8s_read in a playbook; return its registered result (or None when it failed) and the output."""
    out = tmp_path / "result.json"
    play = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "module_defaults": {"group/mlstack.mlflow.k8s": {"kubeconfig": kubeconfig or "{{ kubeconfig }}"}},
            "tasks": [
                {"name": "Read", "mlstack.mlflow.k8s_read": {"queries": queries}, "register": "found", "no_log": True},
                {
                    "name": "Keep the result",
                    "ansible.builtin.copy": {"content": "{{ found | to_json }}", "dest": str(out), "mode": "0600"},
                    "check_mode": False,
                    "no_log": True,
                },
            ],
        }
    ]
    playbook = tmp_path / "read.yml"
    playbook.write_text(yaml.safe_dump(play))
    result = run_playbook(tmp_path, str(playbook), {}, *args)
    output = result.stdout + result.stderr
    return (json.loads(out.read_text()) if result.returncode == 0 else None), output


def test_one_run_reads_objects_lists_and_kinds_the_cluster_does_not_serve(
    tmp_path: Path, kubectl: Kubectl, namespace: str
) -> None:
    labels = {"app.kubernetes.io/name": "k8s-read"}
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "one", "namespace": namespace, "labels": labels},
            "data": {"password": base64.b64encode(VALUE.encode()).decode()},
        },
        *(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
            }
            for name in ("cm-a", "cm-b")
        ),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-other", "namespace": namespace}},
    )
    queries = {
        "secret": {"kind": "Secret", "namespace": namespace, "name": "one"},
        "missing": {"kind": "ConfigMap", "namespace": namespace, "name": "not-there"},
        "labelled": {
            "kind": "ConfigMap",
            "namespace": namespace,
            "label_selectors": ["app.kubernetes.io/name=k8s-read"],
        },
        # A namespace given for a cluster-scoped kind is ignored, as k8s_info ignores it.
        "namespace": {"kind": "Namespace", "namespace": "elsewhere", "name": namespace},
        "classes": {"api_version": "storage.k8s.io/v1", "kind": "StorageClass"},
        "no group": {"api_version": "not-installed.example.com/v1", "kind": "Widget", "namespace": namespace},
        "no kind": {"api_version": "apps/v1", "kind": "Widget", "namespace": namespace},
    }
    found, output = read(tmp_path, queries)
    assert found is not None, output[-2000:]
    assert not found["changed"]
    results = found["results"]
    assert set(results) == set(queries)
    secret = results["secret"]
    assert secret["api_found"]
    assert base64.b64decode(secret["resources"][0]["data"]["password"]).decode() == VALUE
    assert results["missing"] == {"api_found": True, "resources": []}
    # List items carry their apiVersion and kind, as the roles that delete what they find need.
    assert sorted(r["metadata"]["name"] for r in results["labelled"]["resources"]) == ["cm-a", "cm-b"]
    assert {(r["apiVersion"], r["kind"]) for r in results["labelled"]["resources"]} == {("v1", "ConfigMap")}
    assert [r["metadata"]["name"] for r in results["namespace"]["resources"]] == [namespace]
    assert "local-path" in [r["metadata"]["name"] for r in results["classes"]["resources"]]
    assert results["no group"] == {"api_found": False, "resources": []}
    assert results["no kind"] == {"api_found": False, "resources": []}
    assert VALUE not in output

    # Check mode reads the same.
    checked, output = read(tmp_path, queries, "--check")
    assert checked is not None, output[-2000:]
    assert checked["results"] == results


def test_a_failed_read_names_the_query_and_the_error_never_data(
    tmp_path: Path, kubectl: Kubectl, namespace: str, stack_env: dict[str, str]
) -> None:
    # Forbidden: a service account without rights, through a kubeconfig of its own.
    kubectl.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody", "namespace": namespace}}
    )
    token = kubectl.run("create", "token", "nobody", "-n", namespace, "--duration=10m").stdout.strip()
    admin = yaml.safe_load(Path(stack_env["KUBECONFIG"]).read_text())
    cluster = admin["clusters"][0]
    limited = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "nobody", "user": {"token": token}}],
        "contexts": [{"name": "nobody", "context": {"cluster": cluster["name"], "user": "nobody"}}],
        "current-context": "nobody",
    }
    path = tmp_path / "nobody.kubeconfig"
    path.write_text(yaml.safe_dump(limited))
    queries = {"the db secret": {"kind": "Secret", "namespace": namespace, "name": "mlflow-db"}}
    found, output = read(tmp_path, queries, kubeconfig=str(path))
    assert found is None
    assert f"query 'the db secret': Kubernetes API error 403 Forbidden reading Secret {namespace}/mlflow-db" in output
    assert token not in output

    # A query the module cannot run is refused before anything is read.
    found, output = read(tmp_path, {"bad": {"kind": "Secret", "api_version": "apps"}})
    assert found is None
    assert "api_version must be v1 or GROUP/VERSION such as apps/v1 (got 'apps')" in output
