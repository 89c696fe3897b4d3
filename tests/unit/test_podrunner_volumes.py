"""Volumes materialised as directories, mounts with subPath, and the per-pod directory lifecycle."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local.podrunner.volumes import (  # noqa: E402
    MaterialiseContext,
    VolumeError,
    container_mounts,
    materialise,
    pod_dirs,
    prepare_pod_dirs,
    remove_pod_dirs,
)
from podrunner_fakes import FakeSource, make_pod  # noqa: E402


@pytest.fixture
def source() -> FakeSource:
    fake = FakeSource()
    fake.configmaps[("ns1", "conf")] = {"app.ini": "[main]\nx=1\n", "other.txt": "other"}
    fake.secrets[("ns1", "creds")] = {"password": "s3cr3t", "user": "bob"}
    return fake


def _materialise(tmp_path: Path, source: FakeSource, volumes: list[dict]) -> tuple[dict[str, Path], Path]:
    pod = make_pod([{"name": "app"}], volumes=volumes)
    dirs = pod_dirs(tmp_path, "ns1", "web")
    prepare_pod_dirs(dirs, "uid-1")
    return materialise(pod, dirs, MaterialiseContext(tmp_path, source, "127.0.1.2")), dirs.root


def test_configmap_and_secret(tmp_path: Path, source: FakeSource) -> None:
    volumes = [
        {"name": "conf", "configMap": {"name": "conf"}},
        {
            "name": "picked",
            "configMap": {"name": "conf", "items": [{"key": "app.ini", "path": "sub/a.ini", "mode": 0o600}]},
        },
        {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
    ]
    dirs, root = _materialise(tmp_path, source, volumes)
    assert dirs["conf"] == root / "volumes" / "conf"
    assert (dirs["conf"] / "app.ini").read_text() == "[main]\nx=1\n"
    assert (dirs["conf"] / "other.txt").read_text() == "other"
    assert sorted(p.name for p in dirs["picked"].rglob("*") if p.is_file()) == ["a.ini"]
    assert stat.S_IMODE((dirs["picked"] / "sub" / "a.ini").stat().st_mode) == 0o600
    assert (dirs["creds"] / "password").read_text() == "s3cr3t"
    assert stat.S_IMODE((dirs["creds"] / "user").stat().st_mode) == 0o400


def test_missing_sources(tmp_path: Path, source: FakeSource) -> None:
    with pytest.raises(VolumeError, match="not found"):
        _materialise(tmp_path, source, [{"name": "v", "secret": {"secretName": "nope"}}])
    with pytest.raises(VolumeError, match="non-existent key"):
        _materialise(
            tmp_path, source, [{"name": "v", "configMap": {"name": "conf", "items": [{"key": "x", "path": "x"}]}}]
        )
    dirs, _ = _materialise(tmp_path, source, [{"name": "v", "configMap": {"name": "nope", "optional": True}}])
    assert list(dirs["v"].iterdir()) == []
    with pytest.raises(VolumeError, match="not supported"):
        _materialise(tmp_path, source, [{"name": "v", "nfs": {"server": "x", "path": "/"}}])


def test_item_path_cannot_escape(tmp_path: Path, source: FakeSource) -> None:
    volume = {"name": "v", "configMap": {"name": "conf", "items": [{"key": "app.ini", "path": "../../evil"}]}}
    with pytest.raises(VolumeError, match="escapes"):
        _materialise(tmp_path, source, [volume])


def test_empty_dir_survives_restarts_but_not_a_new_pod(tmp_path: Path, source: FakeSource) -> None:
    dirs, _ = _materialise(tmp_path, source, [{"name": "scratch", "emptyDir": {"medium": "Memory"}}])
    (dirs["scratch"] / "kept").write_text("x")
    again, _ = _materialise(tmp_path, source, [{"name": "scratch", "emptyDir": {}}])
    assert (again["scratch"] / "kept").exists()
    new_pod = pod_dirs(tmp_path, "ns1", "web")
    prepare_pod_dirs(new_pod, "uid-2")  # a new pod under the same name starts from scratch
    assert not (again["scratch"] / "kept").exists()


def test_pvc_outlives_the_pod(tmp_path: Path, source: FakeSource) -> None:
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "mlflow-data"}}]
    dirs, root = _materialise(tmp_path, source, volumes)
    assert dirs["data"] == tmp_path / "pvcs" / "ns1" / "mlflow-data"
    (dirs["data"] / "db").write_text("rows")
    assert (root / "volumes" / "data").resolve() == dirs["data"]
    prepare_pod_dirs(pod_dirs(tmp_path, "ns1", "web"), "uid-2")
    again, _ = _materialise(tmp_path, source, volumes)
    assert (again["data"] / "db").read_text() == "rows"


def test_projected_and_downward(tmp_path: Path, source: FakeSource) -> None:
    volumes = [
        {
            "name": "kube-api-access",
            "projected": {
                "defaultMode": 0o644,
                "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"configMap": {"name": "conf", "items": [{"key": "app.ini", "path": "ca.crt"}]}},
                    {
                        "downwardAPI": {
                            "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                        }
                    },
                    {"secret": {"name": "creds", "items": [{"key": "user", "path": "user"}]}},
                ],
            },
        },
        {"name": "info", "downwardAPI": {"items": [{"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]}},
    ]
    dirs, _ = _materialise(tmp_path, source, volumes)
    projected = dirs["kube-api-access"]
    assert (projected / "token").read_text() == "token-for-default"
    assert (projected / "ca.crt").read_text().startswith("[main]")
    assert (projected / "namespace").read_text() == "ns1"
    assert (projected / "user").read_text() == "bob"
    assert (dirs["info"] / "ip").read_text() == "127.0.1.2"


def test_mounts_and_sub_path(tmp_path: Path, source: FakeSource) -> None:
    dirs, _ = _materialise(
        tmp_path, source, [{"name": "conf", "configMap": {"name": "conf"}}, {"name": "d", "emptyDir": {}}]
    )
    container = {
        "volumeMounts": [
            {"name": "conf", "mountPath": "/etc/app/app.ini", "subPath": "app.ini", "readOnly": True},
            {"name": "d", "mountPath": "/work", "subPathExpr": "$(POD)"},
        ]
    }
    mounts = container_mounts(container, dirs, {"POD": "web-1"})
    assert mounts[0].host_path == (dirs["conf"] / "app.ini").resolve()
    assert mounts[0].read_only
    assert mounts[1].host_path == (dirs["d"] / "web-1").resolve()
    assert mounts[1].host_path.is_dir()
    with pytest.raises(VolumeError):
        container_mounts({"volumeMounts": [{"name": "d", "mountPath": "/x", "subPath": "../../.."}]}, dirs, {})
    with pytest.raises(VolumeError):
        container_mounts({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}, dirs, {})


def test_remove_pod_dirs_only_for_the_owner(tmp_path: Path) -> None:
    dirs = pod_dirs(tmp_path, "ns1", "web-0")
    prepare_pod_dirs(dirs, "uid-new")
    remove_pod_dirs(dirs, "uid-old")  # a late delete of the previous pod with this name
    assert dirs.root.exists()
    remove_pod_dirs(dirs, "uid-new")
    assert not dirs.root.exists()
    remove_pod_dirs(dirs, "uid-new")  # idempotent
