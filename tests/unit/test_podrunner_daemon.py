"""The daemon's reconciliation and the pod informer, against an in-memory API (no network)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local.podrunner.daemon import Daemon  # noqa: E402
from mlstack_local.podrunner.volumes import pod_dirs  # noqa: E402
from mlstack_local.podrunner.watcher import PodInformer  # noqa: E402
from podrunner_fakes import FakeSource, make_pod  # noqa: E402


class FakeApi(FakeSource):
    """Enough of kubeapi.Api for the daemon and the informer."""

    host = "https://127.0.0.1:36443"

    def __init__(self) -> None:
        super().__init__()
        self.pods: list[dict[str, Any]] = []
        self.watches: list[list[dict[str, Any]]] = []
        self.lists = 0
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        self.deleted: list[tuple[str, str, str]] = []

    def endpoint(self) -> tuple[str, int]:
        return "127.0.0.1", 36443

    def list_pods(self) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        return list(self.pods), str(self.lists * 100)

    def watch_pods(self, resource_version: str, timeout: int) -> Iterator[dict[str, Any]]:
        if not self.watches:
            time.sleep(0.05)
            return
        yield from self.watches.pop(0)

    def patch_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.patches.append((namespace, name, status))

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        self.deleted.append((namespace, name, uid))

    def list_services(self) -> list[dict[str, Any]]:
        return []


def test_informer_relists_after_gone() -> None:
    api = FakeApi()
    first, second = make_pod([], name="a", uid="a"), make_pod([], name="b", uid="b")
    api.pods = [first]
    api.watches = [
        [
            {"type": "ADDED", "object": second | {"metadata": second["metadata"] | {"resourceVersion": "101"}}},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "150"}}},
            {"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}},
        ]
    ]
    changed = threading.Event()
    informer = PodInformer(api, changed)  # type: ignore[arg-type]
    informer.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and api.lists < 2:
            time.sleep(0.02)
        assert api.lists >= 2  # 410 Gone -> a fresh list
        assert set(informer.snapshot()) == {"a"}  # the relist is the truth (b is not in it)
        assert changed.is_set()
    finally:
        informer.stop()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, FakeApi]]:
    api = FakeApi()
    runner = Daemon(api, tmp_path, None, 0)  # type: ignore[arg-type]
    runner.informer.synced.set()
    yield runner, api
    for worker in runner.workers.values():
        worker.kill_now()
    runner.health.server.server_close()


def reconcile_until(runner: Daemon, check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runner.reconcile(time.time())
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_pod_runs_reports_and_is_deleted(daemon: tuple[Daemon, FakeApi], tmp_path: Path) -> None:
    runner, api = daemon
    container = {"name": "main", "image": "busybox", "command": ["sh", "-c", "echo hi"]}
    pod = make_pod([container], restart="Never", uid="u1")
    runner.informer._apply("ADDED", pod)
    reconcile_until(runner, lambda: "u1" in runner.finished)
    phases = [status["phase"] for _, _, status in api.patches]
    assert phases[-1] == "Succeeded"
    assert api.patches[0][2]["podIP"] == "127.0.1.2"
    assert not runner.workers  # a finished pod is never run again, and its IP is free
    assert runner.pod_ips.get("u1") is None
    patches = len(api.patches)
    runner.reconcile(time.time())
    assert len(api.patches) == patches  # nothing changed, nothing patched

    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    runner.informer._apply("MODIFIED", pod)
    runner.reconcile(time.time())
    assert api.deleted == [("ns1", "web", "u1")]
    assert not pod_dirs(tmp_path, "ns1", "web").root.exists()


def test_deletion_stops_a_running_pod_gracefully(daemon: tuple[Daemon, FakeApi]) -> None:
    runner, api = daemon
    container = {"name": "main", "image": "busybox", "command": ["sleep", "60"]}
    pod = make_pod([container], uid="u2", terminationGracePeriodSeconds=5)
    runner.informer._apply("ADDED", pod)
    reconcile_until(runner, lambda: runner._endpoints() and runner._endpoints()[0].ready)
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    runner.informer._apply("MODIFIED", pod)
    reconcile_until(runner, lambda: api.deleted)
    assert api.patches[-1][2]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143
    assert "u2" not in runner.workers


def test_force_deleted_pod_is_killed(daemon: tuple[Daemon, FakeApi]) -> None:
    runner, _ = daemon
    pod = make_pod([{"name": "main", "image": "busybox", "command": ["sleep", "60"]}], uid="u3")
    runner.informer._apply("ADDED", pod)
    reconcile_until(runner, lambda: runner.workers["u3"].main[0].proc is not None)
    process = runner.workers["u3"].main[0].proc
    runner.informer._apply("DELETED", pod)
    reconcile_until(runner, lambda: "u3" not in runner.workers)
    assert process.exit_code == 137


def test_service_env_points_at_reachable_addresses(daemon: tuple[Daemon, FakeApi]) -> None:
    runner, _ = daemon
    runner._services = [
        {
            "metadata": {"name": "mlflow", "namespace": "ns1"},
            "spec": {"clusterIP": "10.0.0.9", "selector": {"app": "x"}, "ports": [{"port": 5000}]},
        }
    ]
    runner.proxy.pool.allocate("ns1/mlflow")
    env = runner.service_env("ns1", True)
    assert env["MLFLOW_SERVICE_HOST"] == "127.0.2.1"
    assert env["MLFLOW_PORT"] == "tcp://127.0.2.1:5000"  # what `mlflow server` reads if --port is not given
    assert env["KUBERNETES_SERVICE_PORT"] == "36443"
    assert "MLFLOW_SERVICE_HOST" not in runner.service_env("ns1", False)
    assert "MLFLOW_SERVICE_HOST" not in runner.service_env("other", True)
