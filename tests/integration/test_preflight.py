"""Bad input fails before any change, with a message naming the variable and the expected form.

Every case runs the whole component (``site.yml --tags mlflow``), whose first playbook (10) creates the
Keycloak client: a check that only ran in 11 would fail after that first change, and the run's changed=0
would not hold.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from psycopg2 import sql

from .conftest import REPO_ROOT, Kubectl, admin_sql, pg_connect

NAMESPACE = "mlflow-bad-input"
# Names of its own, so a check that let a value through would not touch the stack's `mlflow` deployment
# (its Keycloak client, database role and bucket).
NAMES = {
    "mlflow_namespace": NAMESPACE,
    "mlflow_hostname": "mlflow-bad-input.{{ domain_name }}",
    "mlflow_client_id": "mlflow-bad-input",
    "mlflow_db_name": "mlflow_bad_input",
    "mlflow_auth_db_name": "mlflow_bad_input_auth",
    "mlflow_db_user": "mlflow_bad_input",
    "mlflow_artifacts_bucket": "mlflow-bad-input",
}
# Values that must not appear in the output, even in a failure message.
SECRETS = ("mlflow_db_admin_password", "mlflow_s3_secret_key")


def deploy(
    tmp_path: Path,
    extra: dict[str, object],
    drop_env: tuple[str, ...] = (),
    playbook: str = "site.yml",
    tags: str = "mlflow",
) -> subprocess.CompletedProcess[str]:
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({**NAMES, **extra}))
    script = " ".join(f"unset {name};" for name in drop_env)
    tag_args = f"--tags {tags}" if playbook == "site.yml" or tags != "mlflow" else ""
    command = (
        f"{script} exec {Path(sys.executable).parent / 'ansible-playbook'} -i {REPO_ROOT / 'inventory' / 'local'} "
        f"{REPO_ROOT / playbook} {tag_args} -e @{variables}"
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
    "no auth on the ingress": (
        {"mlflow_auth_mode": "none"},
        (),
        "mlflow_auth_mode is 'none' (no login: anyone who reaches MLflow can read and change everything) with "
        "mlflow_expose 'ingress'",
    ),
    "no auth on a load balancer": (
        {"mlflow_auth_mode": "none", "mlflow_expose": "loadbalancer"},
        (),
        "set mlflow_auth_none_acknowledged: true to run it this way anyway (got mlflow_expose 'loadbalancer'",
    ),
    "invalid bucket name": (
        {"mlflow_artifacts_bucket": "MLflow_Artifacts"},
        (),
        "mlflow_artifacts_bucket and mlflow_backup_bucket must be S3 bucket names",
    ),
    "bucket name with a trailing newline": (
        {"mlflow_backup_bucket": "mlflow\n"},
        (),
        "mlflow_artifacts_bucket and mlflow_backup_bucket must be S3 bucket names",
    ),
    "server port out of range": (
        {"mlflow_port": 70000},
        (),
        "mlflow_port, mlflow_db_port and mlflow_db_admin_port must be TCP ports in 1-65535 (got '70000', '5432'",
    ),
    "database port out of range": (
        {"mlflow_db_port": 0},
        (),
        "mlflow_port, mlflow_db_port and mlflow_db_admin_port must be TCP ports in 1-65535 (got '5000', '0'",
    ),
    "egress port out of range": (
        {"mlflow_network_policy_extra_egress_ports": [8443, 65536]},
        (),
        "and so must every entry of mlflow_network_policy_extra_egress_ports (got [8443, 65536])",
    ),
    "resources not a quantity": (
        {"mlflow_resources": {"limits": {"cpu": "two", "memory": "2Gi"}}},
        (),
        "mlflow_resources: limits.cpu 'two' is not a Kubernetes quantity",
    ),
    "resources with an unknown key": (
        {"mlflow_resources": {"cpu": "1"}},
        (),
        "mlflow_resources: unknown key 'cpu' (only requests, limits and claims)",
    ),
    "request over the limit": (
        {"mlflow_migration_resources": {"requests": {"memory": "4Gi"}, "limits": {"memory": "1Gi"}}},
        (),
        "mlflow_migration_resources: requests.memory 4Gi is more than limits.memory 1Gi",
    ),
    "missing storage class": (
        {"storage_class_name": "no-such-class"},
        (),
        "the StorageClass 'no-such-class' (storage_class_name) does not exist",
    ),
    "missing models storage class": (
        {"mlflow_models_storage_class": "no-such-class"},
        (),
        "the StorageClass 'no-such-class' (mlflow_models_storage_class) does not exist",
    ),
    "PostgreSQL refuses the password": (
        {"mlflow_db_admin_password": "not-the-password"},
        (),
        "Could not log in to PostgreSQL at",
    ),
    "PostgreSQL unreachable": (
        {"mlflow_db_admin_port": 1},
        (),
        "Could not log in to PostgreSQL at",
    ),
    "S3 refuses the keys": (
        {"mlflow_s3_access_key": "nobody", "mlflow_s3_secret_key": "not-the-secret-key"},
        (),
        "S3 at",
    ),
    # Checked by the roles' own argument specs, which used to run only when each role started (after 10 had
    # created the Keycloak client and 11 the namespace, databases and bucket).
    "server spec": (
        {"mlflow_rollout_timeout": "soon"},
        (),
        "argument 'mlflow_rollout_timeout' is of type",
    ),
    "workstation spec": (
        {"mlflow_workstation_rollout_timeout": "an hour"},
        (),
        "argument 'mlflow_workstation_rollout_timeout' is of type",
    ),
    "S3 unreachable": (
        {"mlflow_s3_admin_endpoint_url": "http://127.0.0.1:1"},
        (),
        "S3 at http://127.0.0.1:1 (mlflow_s3_admin_endpoint_url) could not be reached",
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
    for name in SECRETS:
        if extra.get(name):
            assert str(extra[name]) not in result.stdout + result.stderr, f"{name}'s value is in the output"


@pytest.mark.parametrize(
    "extra",
    [{"mlflow_expose": "none"}, {"mlflow_auth_none_acknowledged": True}],
    ids=["no exposure", "acknowledged"],
)
def test_no_auth_is_allowed_without_exposure_or_when_acknowledged(
    extra: dict[str, object], tmp_path: Path, kubectl: Kubectl
) -> None:
    """10 runs the whole preflight, then changes nothing without a Keycloak client to configure."""
    result = deploy(tmp_path, {"mlflow_auth_mode": "none", **extra}, playbook="playbooks/10_configure_keycloak.yaml")
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, output[-2000:]
    assert "changed=0" in output
    assert kubectl.run("get", "namespace", NAMESPACE, check=False).returncode != 0


def secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, object]:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "data": encoded}


def test_existing_secrets_lacking_keys_fail_before_any_change(
    tmp_path: Path, kubectl: Kubectl, namespace: str, stack_env: dict[str, str]
) -> None:
    kubectl.apply(
        secret("mlflow-db", namespace, {"password": "p", "MLFLOW_BACKEND_STORE_URI": "postgresql://x"}),
        secret("mlflow-session", namespace, {"SECRET_KEY": "k"}),
    )
    result = deploy(tmp_path, {"mlflow_namespace": namespace, "mlflow_secrets_backend": "existing"})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert f"{namespace}/mlflow-db lacks the key(s) username, host, port, MLFLOW_AUTH_DB_URI" in output, output[-2000:]
    assert f"{namespace}/mlflow-s3 does not exist" in output
    assert f"{namespace}/mlflow-registry does not exist" in output
    assert "changed=0" in output
    with pg_connect(stack_env, stack_env["PGUSER"], stack_env["PGPASSWORD"]) as conn, conn.cursor() as cursor:
        cursor.execute("select count(*) from pg_roles where rolname = %s", (NAMES["mlflow_db_user"],))
        assert cursor.fetchone()[0] == 0


def test_the_existing_backend_never_changes_the_database_roles_password(
    tmp_path: Path, kubectl: Kubectl, namespace: str, stack_env: dict[str, str]
) -> None:
    """You own the credentials: a Secret whose password differs from the role's leaves the role's alone."""
    user, kept = "mlflow_bad_existing", "kept-" + base64.b32encode(os.urandom(10)).decode()
    admin_sql(stack_env, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))
    admin_sql(stack_env, sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(user)), kept)
    db = {"username": user, "password": "other", "host": "h", "port": "5432"}
    db |= {"MLFLOW_BACKEND_STORE_URI": "postgresql://x", "MLFLOW_AUTH_DB_URI": "postgresql://y"}
    kubectl.apply(
        secret("mlflow-db", namespace, db),
        secret("mlflow-session", namespace, {"SECRET_KEY": "k"}),
        secret("mlflow-s3", namespace, {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}),
        secret("mlflow-registry", namespace, {".dockerconfigjson": "{}"}),
    )
    names = {"mlflow_namespace": namespace, "mlflow_secrets_backend": "existing", "mlflow_db_user": user}
    names |= {"mlflow_db_name": "mlflow_bad_existing", "mlflow_auth_db_name": "mlflow_bad_existing_auth"}
    try:
        result = deploy(tmp_path, names, playbook="playbooks/11_deploy.yaml", tags="database")
        assert result.returncode == 0, result.stdout[-3000:]
        pg_connect(stack_env, user, kept).close()  # the role's own password still logs in
    finally:
        for name in ("mlflow_bad_existing", "mlflow_bad_existing_auth"):
            admin_sql(stack_env, sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin_sql(stack_env, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))


def test_an_api_server_that_cannot_be_reached_is_named_before_any_change(
    tmp_path: Path, stack_env: dict[str, str]
) -> None:
    """The read of the cluster holds Secrets, so its output is hidden; its failure still says what failed."""
    kubeconfig = yaml.safe_load(Path(stack_env["KUBECONFIG"]).read_text())
    for cluster in kubeconfig["clusters"]:
        cluster["cluster"]["server"] = "https://127.0.0.1:1"
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(yaml.safe_dump(kubeconfig))
    result = deploy(tmp_path, {"kubeconfig": str(dead)})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert f"Could not read the cluster through {dead} (kubeconfig): query 's3': cannot read Secret" in output, output[
        -2000:
    ]
    assert "127.0.0.1" in output
    assert "censored" not in output
    assert "changed=0" in output
