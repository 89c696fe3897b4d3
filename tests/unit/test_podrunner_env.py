"""Environment resolution like kubelet: precedence, references, optional, downward API, service links."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local.podrunner.envs import (  # noqa: E402
    expand_command,
    field_value,
    resolve_env,
    resource_value,
    service_env,
)
from mlstack_local.podrunner.sources import MissingReference  # noqa: E402
from podrunner_fakes import FakeSource, make_pod  # noqa: E402


@pytest.fixture
def source() -> FakeSource:
    fake = FakeSource()
    fake.secrets[("ns1", "db")] = {"password": "p@ss:/%#?", "user": "mlflow"}
    fake.configmaps[("ns1", "settings")] = {"LEVEL": "debug", "ROOT": "/data", "bad=key": "x"}
    return fake


def test_precedence_and_references(source: FakeSource) -> None:
    container = {
        "name": "app",
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}, {"secretRef": {"name": "db"}}],
        "env": [
            {"name": "LEVEL", "value": "info"},
            {"name": "CFG_LEVEL", "value": "override-$(LEVEL)"},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "ROOT", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "ROOT"}}},
            {"name": "GONE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
            {"name": "EMPTY", "value": ""},
            {"name": "LINK", "value": "$(FOO_SERVICE_HOST)"},
        ],
    }
    pod = make_pod([container])
    env, secret_names = resolve_env(pod, container, source, "127.0.1.3", {"FOO_SERVICE_HOST": "127.0.2.1"})
    assert env["CFG_LEVEL"] == "override-info"
    assert env["LEVEL"] == "info"
    assert env["PASSWORD"] == "p@ss:/%#?"
    assert env["user"] == "mlflow"
    assert env["ROOT"] == "/data"
    assert "GONE" not in env
    assert env["EMPTY"] == ""
    assert env["LINK"] == "127.0.2.1"
    assert env["FOO_SERVICE_HOST"] == "127.0.2.1"
    assert "CFG_bad=key" not in env
    assert secret_names == {"PASSWORD", "user", "password"}


@pytest.mark.parametrize(
    "ref",
    [
        {"secretKeyRef": {"name": "nope", "key": "k"}},
        {"secretKeyRef": {"name": "db", "key": "nokey"}},
        {"configMapKeyRef": {"name": "settings", "key": "nokey"}},
    ],
)
def test_missing_reference_raises(source: FakeSource, ref: dict) -> None:
    container = {"name": "app", "env": [{"name": "X", "valueFrom": ref}]}
    with pytest.raises(MissingReference):
        resolve_env(make_pod([container]), container, source, "127.0.1.3", {})


def test_missing_env_from_honours_optional(source: FakeSource) -> None:
    optional = {"name": "app", "envFrom": [{"secretRef": {"name": "nope", "optional": True}}]}
    assert resolve_env(make_pod([optional]), optional, source, "127.0.1.3", {})[0] == {}
    required = {"name": "app", "envFrom": [{"configMapRef": {"name": "nope"}}]}
    with pytest.raises(MissingReference):
        resolve_env(make_pod([required]), required, source, "127.0.1.3", {})


def test_field_refs() -> None:
    pod = make_pod([], name="web-1")
    pod["metadata"]["annotations"] = {"team": "ml"}
    assert field_value(pod, "127.0.1.4", "metadata.name") == "web-1"
    assert field_value(pod, "127.0.1.4", "metadata.namespace") == "ns1"
    assert field_value(pod, "127.0.1.4", "status.podIP") == "127.0.1.4"
    assert field_value(pod, "127.0.1.4", "spec.nodeName") == "mlstack-runner"
    assert field_value(pod, "127.0.1.4", "spec.serviceAccountName") == "default"
    assert field_value(pod, "127.0.1.4", "metadata.labels['app']") == "web-1"
    assert field_value(pod, "127.0.1.4", "metadata.annotations['team']") == "ml"
    with pytest.raises(MissingReference):
        field_value(pod, "127.0.1.4", "spec.bogus")


def test_resource_field_refs() -> None:
    container = {"name": "app", "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}}}
    bare = {"name": "bare"}
    pod = make_pod([container, bare])
    assert resource_value(pod, "app", {"resource": "limits.cpu"}) == "2"  # rounded up
    assert resource_value(pod, "app", {"resource": "limits.cpu", "divisor": "1m"}) == "1500"
    assert resource_value(pod, "app", {"resource": "limits.memory", "divisor": "1Mi"}) == "1024"
    assert resource_value(pod, "bare", {"resource": "limits.memory"}) == str(8 * 1024**3)  # node allocatable
    assert resource_value(pod, "x", {"resource": "limits.cpu", "containerName": "app"}) == "2"


def test_command_expansion_uses_final_env() -> None:
    container = {"command": ["sh", "-c", "echo $(GREETING) $$(GREETING) $HOME"], "args": ["$(MISSING)"]}
    command, args = expand_command(container, {"GREETING": "hi"})
    assert command == ["sh", "-c", "echo hi $(GREETING) $HOME"]
    assert args == ["$(MISSING)"]


def test_service_links() -> None:
    services = [
        {
            "metadata": {"name": "mlflow-server"},
            "spec": {"clusterIP": "127.0.2.5", "ports": [{"name": "http", "port": 5000, "protocol": "TCP"}]},
        },
        {"metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}},
    ]
    env = service_env(services)
    assert env["MLFLOW_SERVER_SERVICE_HOST"] == "127.0.2.5"
    assert env["MLFLOW_SERVER_SERVICE_PORT"] == "5000"
    assert env["MLFLOW_SERVER_SERVICE_PORT_HTTP"] == "5000"
    assert env["MLFLOW_SERVER_PORT"] == "tcp://127.0.2.5:5000"
    assert env["MLFLOW_SERVER_PORT_5000_TCP_ADDR"] == "127.0.2.5"
    assert not any(key.startswith("HEADLESS") for key in env)
