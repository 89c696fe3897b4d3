"""Bad input fails before any change, with a message naming the variable and the expected form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, Kubectl

NAMESPACE = "mlflow-bad-input"


def deploy(
    tmp_path: Path, extra: dict[str, object], drop_env: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({"mlflow_namespace": NAMESPACE, **extra}))
    script = " ".join(f"unset {name};" for name in drop_env)
    command = (
        f"{script} exec {Path(sys.executable).parent / 'ansible-playbook'} -i {REPO_ROOT / 'inventory' / 'local'} "
        f"{REPO_ROOT / 'playbooks' / '11_deploy.yaml'} -e @{variables}"
    )
    return subprocess.run(
        [str(REPO_ROOT / "hack" / "with-stack-env"), "bash", "-c", command],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "HOME": str(tmp_path)},  # no ~/.env with a token
    )


CASES = {
    "hostname": ({"mlflow_hostname": "mlflow_bad host"}, (), "mlflow_hostname must be a DNS name"),
    "capacity": (
        {"mlflow_capacity": "1Gb"},
        (),
        "mlflow_capacity and mlflow_models_capacity must be Kubernetes quantities",
    ),
    "backend": ({"mlflow_secrets_backend": "vault"}, (), "mlflow_secrets_backend"),
    "auth mode": ({"mlflow_auth_mode": "ldap"}, (), "mlflow_auth_mode"),
    "latest image": (
        {"mlflow_image": "registry.example.com/library/mlflow:latest"},
        (),
        "mlflow_image must name a fixed tag",
    ),
    "admin password": (
        {"mlflow_db_admin_password": "", "mlflow_admin_password": ""},
        ("ADMIN_PASSWORD",),
        "ADMIN_PASSWORD is not set",
    ),
    "zero replicas": ({"mlflow_replicas": 0}, (), "mlflow_replicas must be a whole number of at least 1"),
    "negative workers": ({"mlflow_workers": "-2"}, (), "mlflow_workers empty (one per CPU of the limit)"),
    "database name over 63 bytes": (
        {"mlflow_db_name": "m" * 64},
        (),
        "must be lowercase PostgreSQL identifiers of at most 63 bytes",
    ),
    "quoted database user": (
        {"mlflow_db_user": "mlflow'; drop"},
        (),
        "must be lowercase PostgreSQL identifiers",
    ),
    "trailing newline": ({"mlflow_hostname": "mlflow.mlstack.test\n"}, (), "mlflow_hostname must be a DNS name"),
    "harbor token": ({}, ("HARBOR_ROBOT_TOKEN", "REGISTRY_PASSWORD"), "HARBOR_ROBOT_TOKEN is not set"),
    "proxy mode without the ingress": (
        {"mlflow_auth_mode": "proxy", "mlflow_expose": "none"},
        (),
        "mlflow_auth_mode is 'proxy', which needs mlflow_expose: ingress or httproute (got 'none'",
    ),
    "proxy mode on a node port": (
        {"mlflow_auth_mode": "proxy", "mlflow_expose": "nodeport"},
        (),
        "mlflow_auth_mode is 'proxy', which needs mlflow_expose: ingress or httproute (got 'nodeport'",
    ),
    "proxy mode with a filter without a type": (
        {"mlflow_auth_mode": "proxy", "mlflow_expose": "httproute", "mlflow_proxy_httproute_filter": {"x": 1}},
        (),
        "mlflow_proxy_httproute_filter must be empty or an HTTPRoute filter with a type",
    ),
    "proxy mode with your own proxy but no URL": (
        {"mlflow_auth_mode": "proxy", "mlflow_proxy_deploy_oauth2_proxy": False, "mlflow_proxy_auth_url": "ak-outpost"},
        (),
        "mlflow_proxy_auth_url (and, for an Ingress, mlflow_proxy_signin_url) must be http(s) URLs",
    ),
    "proxy mode with a bad header name": (
        {"mlflow_auth_mode": "proxy", "mlflow_proxy_user_header": "X-User: admin"},
        (),
        "must be HTTP header names such as X-Auth-Request-User",
    ),
    "backup schedule": ({"mlflow_backup_schedule": "every night"}, (), "five-field cron schedule"),
    "gc age": ({"mlflow_gc_older_than": "30 days"}, (), "mlflow_gc_older_than a duration"),
    "backups inside the artifacts": (
        {"mlflow_backup_prefix": "artifacts/backups"},
        (),
        "apart from mlflow_artifacts_prefix",
    ),
    "unknown exposure": ({"mlflow_expose": "route"}, (), "mlflow_expose"),
    "node port out of range": (
        {"mlflow_expose": "nodeport", "mlflow_node_port": 8080},
        (),
        "mlflow_node_port must be empty (the cluster allocates a port) or a port in 30000-32767",
    ),
    "node port without nodeport": (
        {"mlflow_node_port": 30080},
        (),
        "is only used with mlflow_expose=nodeport (got mlflow_node_port='30080' with mlflow_expose=ingress)",
    ),
    "source ranges without loadbalancer": (
        {"mlflow_loadbalancer_source_ranges": ["10.0.0.0/8"]},
        (),
        "are only used with mlflow_expose=loadbalancer (got mlflow_expose=ingress)",
    ),
    "malformed source range": (
        {"mlflow_expose": "loadbalancer", "mlflow_loadbalancer_source_ranges": ["10.0.0.0/33"]},
        (),
        'every source range must be a CIDR such as 192.0.2.0/24 or 2001:db8::/32 (got ["10.0.0.0/33"])',
    ),
    "httproute without a gateway": (
        {"mlflow_expose": "httproute", "mlflow_gateway_name": ""},
        (),
        "an HTTPRoute needs a parent Gateway",
    ),
    "gateway to create without a class": (
        {"mlflow_expose": "httproute", "mlflow_gateway_create": True, "mlflow_gateway_namespace": ""},
        (),
        "mlflow_gateway_create: true with mlflow_gateway_class",
    ),
    "missing parent gateway": (
        {"mlflow_expose": "httproute", "mlflow_gateway_name": "no-such-gateway"},
        (),
        "the Gateway traefik/no-such-gateway (mlflow_gateway_namespace/mlflow_gateway_name) does not exist",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_fails_before_any_change(case: str, tmp_path: Path, kubectl: Kubectl) -> None:
    extra, drop_env, message = CASES[case]
    result = deploy(tmp_path, extra, drop_env)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert message in output, output[-2000:]
    assert "changed=0" in output
    assert kubectl.run("get", "namespace", NAMESPACE, check=False).returncode != 0
