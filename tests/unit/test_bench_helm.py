"""The benchmark's helm part: the chart's values hold no credential, the argv neither, object counting."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from benchlib import helm  # noqa: E402

WHERE = helm.Where(
    image="127.0.0.1:35000/mlstack/mlflow:3.18.0-mlstack.1",
    pull_policy="Always",
    resources={"limits": {"cpu": "2", "memory": "2Gi"}, "requests": {"cpu": "100m", "memory": "1Gi"}},
    workers="2",
    job_execution="false",
    pg_host="postgresql-official.postgres.svc.cluster.local",
    pg_port="5432",
    s3_endpoint="http://seaweedfs-s3.seaweedfs.svc.cluster.local:8333",
    region="us-east-1",
    hostname="bench-helm.mlstack.test",
)


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in [str(key), *_strings(item)]]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [str(value)]


def test_values_hold_no_credential_only_secret_references() -> None:
    values = helm.chart_values(WHERE)
    # The chart's inline credential fields stay unset: the Secrets are referenced by name instead.
    assert values["backendStore"]["postgres"].get("password") is None
    assert values["backendStore"]["existingDatabaseSecret"]["name"] == helm.DB_SECRET
    assert values["auth"].get("adminPassword") is None
    assert values["auth"]["existingAdminSecret"]["name"] == helm.ADMIN_SECRET
    assert values["auth"]["postgres"].get("password") is None
    assert values["auth"]["postgres"]["existingSecret"]["name"] == helm.DB_SECRET
    s3 = values["artifactRoot"]["s3"]
    assert "awsSecretAccessKey" not in s3 and "awsAccessKeyId" not in s3
    assert s3["existingSecret"]["name"] == helm.S3_SECRET
    # Nothing in them is one of the stack's credentials (nor looks like the generated hex passwords).
    credentials = {os.environ.get(name, "") for name in ("PGPASSWORD", "S3_SECRET_KEY", "REGISTRY_PASSWORD")} - {""}
    for text in _strings(values):
        assert text not in credentials
        assert not (len(text) == 32 and all(c in "0123456789abcdef" for c in text)), text


def test_values_are_equivalent_to_ours() -> None:
    values = helm.chart_values(WHERE)
    assert values["image"] == {
        "repository": "127.0.0.1:35000/mlstack/mlflow",
        "tag": "3.18.0-mlstack.1",
        "pullPolicy": "Always",
    }
    # busybox is not available offline; our image runs the chart's init containers too.
    assert values["initImages"]["iniFileInitializer"] == values["image"]
    assert values["initImages"]["mlflowDbMigration"] == values["image"]
    assert values["imagePullSecrets"] == [{"name": "mlflow-registry"}]
    assert values["artifactRoot"]["proxiedArtifactStorage"] is True
    assert values["backendStore"]["postgres"]["driver"] == "psycopg2"
    assert values["backendStore"]["databaseMigration"] is True
    assert values["extraArgs"] == {"workers": "2"}
    assert values["extraEnvVars"]["MLFLOW_S3_ENDPOINT_URL"] == WHERE.s3_endpoint
    assert values["extraEnvVars"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert values["resources"] == WHERE.resources
    ingress = values["ingress"]
    assert ingress["className"] == "nginx"
    assert ingress["hosts"][0]["host"] == "bench-helm.mlstack.test"
    assert ingress["tls"] == [{"hosts": ["bench-helm.mlstack.test"], "secretName": helm.TLS_SECRET}]
    # restricted Pod Security needs seccompProfile, which the chart's defaults do not set.
    assert values["podSecurityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert values["podSecurityContext"]["runAsNonRoot"] is True
    assert values["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert values["securityContext"]["allowPrivilegeEscalation"] is False


def test_what_ours_does_not_set_stays_the_charts_default() -> None:
    values = helm.chart_values(
        helm.Where(**{**WHERE.__dict__, "workers": None, "job_execution": None, "pull_secret": None})
    )
    assert values["extraArgs"] == {}
    assert values["imagePullSecrets"] == []
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION" not in values["extraEnvVars"]


def test_argv_waits_and_carries_only_the_values_file(tmp_path: Path) -> None:
    argv = helm.helm_argv(Path("/cache/helm"), tmp_path / "values.json")
    assert argv[:4] == ["/cache/helm", "upgrade", "--install", helm.RELEASE]
    assert "--wait" in argv
    assert argv[argv.index("--namespace") + 1] == "bench-helm"
    assert argv[argv.index("--values") + 1] == str(tmp_path / "values.json")
    assert not any(arg.startswith("--set") for arg in argv), "values on argv would show in ps"


def test_values_file_is_private_and_removed() -> None:
    values = helm.chart_values(WHERE)
    with helm.private_values_file(values) as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert json.loads(path.read_text()) == values
        kept = path
    assert not kept.exists() and not kept.parent.exists()


def test_values_file_is_removed_on_failure() -> None:
    with pytest.raises(RuntimeError), helm.private_values_file({"a": 1}) as path:
        raise RuntimeError(str(path))
    assert not path.parent.exists()


def _obj(kind: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "labels": labels or {}}}


def test_count_kinds_leaves_out_events_namespace_defaults_and_prepared_objects() -> None:
    items = [
        _obj("Deployment", "wtc-mlflow"),
        _obj("Secret", "wtc-mlflow-env-secret"),
        _obj("Secret", "sh.helm.release.v1.wtc-mlflow.v1"),
        _obj("Secret", helm.DB_SECRET, helm.BENCH_LABELS),
        _obj("ConfigMap", "kube-root-ca.crt"),
        _obj("ServiceAccount", "default"),
        _obj("ServiceAccount", "wtc-mlflow"),
        _obj("Event", "wtc-mlflow.1"),
        _obj("Pod", "wtc-mlflow-abc"),
        _obj("ReplicaSet", "wtc-mlflow-78bd"),
    ]
    counts = helm.count_kinds(items, skip_labels=helm.BENCH_LABELS)
    assert counts == {"Deployment": 1, "Pod": 1, "ReplicaSet": 1, "Secret": 2, "ServiceAccount": 1}
    assert helm.count_kinds(items)["Secret"] == 3
    assert helm.kinds_line(counts) == (
        "4 (Deployment 1, Secret 2, ServiceAccount 1) + 2 made by controllers (Pod 1, ReplicaSet 1)"
    )


def test_report_prints_both_tools_and_the_ratios() -> None:
    from benchlib.report import render_helm

    results = {
        "deploy": {"first": {"wall_s": 90.0}, "noop": {"wall_s": 60.0}},
        "deploy_objects": {"Deployment": 1, "Pod": 2},
        "deploy_pod": {"pod": "mlflow-1", "init_containers_ended_s": {}, "container_started_s": 2.0, "ready_s": 12.0},
        "helm": {
            "namespace": "bench-helm",
            "chart_version": "1.11.5",
            "helm": "v3.22",
            "prepare_s": 0.3,
            "first": {"wall_s": 45.0},
            "noop": [{"wall_s": 0.9}, {"wall_s": 0.8}, {"wall_s": 1.2}],
            "noop_median_s": 0.9,
            "objects": {"Deployment": 1, "Secret": 3},
            "pod": {
                "pod": "wtc-mlflow-1",
                "init_containers_ended_s": {"mlflow-db-migration": 9.0, "ini-file-initializer": 10.0},
                "container_started_s": 11.0,
                "ready_s": 41.0,
            },
            "noop_rollout": {"unchanged": True},
            "revisions": 4,
            "check": {"anonymous_search": 401, "admin_search": 200, "admin_upload": 200, "object_in_bucket": ["x"]},
        },
    }
    text = "\n".join(render_helm(results))
    first = next(line for line in text.splitlines() if line.startswith("first deploy"))
    noop = next(line for line in text.splitlines() if line.startswith("no-op re-run"))
    assert first.split()[-3:] == ["90.0", "45.0", "2.00"]
    assert noop.split()[-4:] == ["60.0", "0.9", "[0.8-1.2]", "66.67"]
    assert "ours: 1 (Deployment 1) + 2 made by controllers (Pod 2)" in text
    assert "helm's server pod, s after its creation: mlflow-db-migration ended 9, ini-file-initializer ended 10" in text
    assert "no new rollout" in text and "anonymous search 401" in text
    assert render_helm({"deploy": {}, "helm": {}}) == []
