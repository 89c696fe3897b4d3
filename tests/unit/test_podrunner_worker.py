"""A pod worker really running processes (no API server): init order, env, volumes, exit codes,
restart policies, probes and graceful termination."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local.podrunner import containers  # noqa: E402
from mlstack_local.podrunner.images import ImageResolver  # noqa: E402
from mlstack_local.podrunner.pods import PodWorker, RunnerServices  # noqa: E402
from mlstack_local.podrunner.process import ProcessBook, start_time  # noqa: E402
from podrunner_fakes import FakeSource, make_pod  # noqa: E402

IMAGE = "docker.io/library/busybox:1.36"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def services(tmp_path: Path) -> Iterator[RunnerServices]:
    source = FakeSource()
    source.secrets[("ns1", "db")] = {"password": "p@ss:/%#?"}
    source.configmaps[("ns1", "conf")] = {"greeting.txt": "hello from configmap"}
    executor = ThreadPoolExecutor(4)
    yield RunnerServices(
        state=tmp_path,
        source=source,
        images=ImageResolver(None),
        executor=executor,
        book=ProcessBook(tmp_path / "processes.json"),
        service_env=lambda namespace, links: {"KUBERNETES_SERVICE_HOST": "127.0.0.1"},
    )
    executor.shutdown(wait=False)


def run_until(worker: PodWorker, done: Callable[[], bool], timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.tick(time.time())
        if done():
            return worker.status(time.time())
        time.sleep(0.05)
    raise AssertionError(f"timed out; status: {worker.status(time.time())}")


def sh(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, "command": ["sh", "-c", script], **extra}


def test_job_like_pod_sees_env_and_volumes(services: RunnerServices, tmp_path: Path) -> None:
    script = 'printf "%s|%s|%s|%s" "$PASSWORD" "$(cat /config/greeting.txt)" "$HOME" "$SECRETISH" > /out/result'
    main = sh(
        "main",
        script,
        env=[
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "SECRETISH", "value": "/config"},
        ],
        volumeMounts=[{"name": "config", "mountPath": "/config"}, {"name": "out", "mountPath": "/out"}],
    )
    init = sh("init", "echo init > /out/init-ran", volumeMounts=[{"name": "out", "mountPath": "/out"}])
    volumes = [{"name": "config", "configMap": {"name": "conf"}}, {"name": "out", "emptyDir": {}}]
    worker = PodWorker(
        make_pod([main], init=[init], volumes=volumes, restart="Never"), "127.0.1.2", services, time.time()
    )
    status = run_until(worker, lambda: worker.terminal)
    assert status["phase"] == "Succeeded"
    out = worker.dirs.volume("out")
    assert (out / "init-ran").exists()
    password, greeting, home, mapped = (out / "result").read_text().split("|")
    assert password == "p@ss:/%#?"
    assert greeting == "hello from configmap"
    assert home == str(worker.dirs.home)
    assert mapped == str(worker.dirs.volume("config"))
    assert status["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Initialized"] == "True"
    assert conditions["Ready"] == "False"


def test_environment_is_minimal(services: RunnerServices, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACK_SECRET", "must-not-leak")
    pod = make_pod([sh("main", "env > $HOME/env.txt")], restart="Never")
    worker = PodWorker(pod, "127.0.1.2", services, time.time())
    run_until(worker, lambda: worker.terminal)
    names = {line.split("=", 1)[0] for line in (worker.dirs.home / "env.txt").read_text().splitlines()}
    assert "STACK_SECRET" not in names
    assert {"PATH", "HOME", "LANG", "HOSTNAME", "TMPDIR", "KUBERNETES_SERVICE_HOST"} <= names


def test_exit_code_under_never_fails_the_pod(services: RunnerServices) -> None:
    worker = PodWorker(make_pod([sh("main", "exit 3")], restart="Never"), "127.0.1.2", services, time.time())
    status = run_until(worker, lambda: worker.terminal)
    assert status["phase"] == "Failed"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"


def test_failed_init_container_under_never_fails_the_pod(services: RunnerServices) -> None:
    pod = make_pod([sh("main", "true")], init=[sh("init", "exit 1")], restart="Never")
    worker = PodWorker(pod, "127.0.1.2", services, time.time())
    status = run_until(worker, lambda: worker.phase() == "Failed")
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"


def test_on_failure_restarts_with_backoff(services: RunnerServices, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "BACKOFF_FIRST", 0.2)
    script = 'n=$(cat $HOME/n 2>/dev/null || echo 0); echo $((n+1)) > $HOME/n; [ "$n" -ge 2 ]'
    worker = PodWorker(make_pod([sh("main", script)], restart="OnFailure"), "127.0.1.2", services, time.time())
    status = run_until(worker, lambda: worker.terminal)
    assert status["phase"] == "Succeeded"
    assert status["containerStatuses"][0]["restartCount"] == 2
    assert status["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1


def test_always_restarts_and_reports_crash_loop(services: RunnerServices) -> None:
    worker = PodWorker(make_pod([sh("main", "exit 0")]), "127.0.1.2", services, time.time())
    status = run_until(worker, lambda: "waiting" in worker.main[0].view.state)
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert worker.main[0].next_start - time.time() > 5  # the first back-off is 10 s


def test_readiness_probe_gates_ready_and_termination(services: RunnerServices) -> None:
    port = free_port()
    server = sh(
        "web",
        f"sleep 1; exec python3 -m http.server {port} --bind 0.0.0.0 --directory $HOME",
        readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        ports=[{"name": "http", "containerPort": port}],
    )
    pod = make_pod([server], terminationGracePeriodSeconds=5)
    worker = PodWorker(pod, "127.0.1.2", services, time.time())
    status = run_until(worker, lambda: worker.main[0].proc is not None)
    assert status["phase"] == "Running"
    assert not status["containerStatuses"][0]["ready"]
    status = run_until(worker, lambda: worker.main[0].view.ready)
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == conditions["ContainersReady"] == "True"
    with socket.create_connection(("127.0.1.2", port), timeout=2):
        pass  # bound to the pod IP (0.0.0.0 was rewritten)
    pid = worker.main[0].proc.pid
    worker.terminate(time.time())
    run_until(worker, lambda: worker.stopped, timeout=10)
    assert start_time(pid) is None
    assert worker.phase() == "Failed"  # python's SIGTERM exit (143) makes the terminated pod Failed


def test_liveness_failure_restarts_the_container(services: RunnerServices, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "BACKOFF_FIRST", 0.2)
    probe = {"exec": {"command": ["test", "-e", "/state/alive"]}, "periodSeconds": 1, "failureThreshold": 1}
    main = sh(
        "main",
        "touch /state/alive; sleep 1; rm /state/alive; sleep 60",
        livenessProbe=probe,
        terminationGracePeriodSeconds=1,
        volumeMounts=[{"name": "state", "mountPath": "/state"}],
    )
    pod = make_pod([main], volumes=[{"name": "state", "emptyDir": {}}])
    worker = PodWorker(pod, "127.0.1.2", services, time.time())
    status = run_until(worker, lambda: worker.main[0].view.restart_count >= 1, timeout=20)
    assert status["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] in (137, 143)
    worker.kill_now()
    run_until(worker, lambda: worker.stopped)


def test_missing_secret_waits_with_config_error(services: RunnerServices) -> None:
    main = sh("main", "true", env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}])
    worker = PodWorker(make_pod([main], restart="Never"), "127.0.1.2", services, time.time())
    status = run_until(worker, lambda: "CreateContainerConfigError" in str(worker.main[0].view.state))
    assert status["phase"] == "Pending"
    services.source.secrets[("ns1", "later")] = {"k": "v"}  # type: ignore[attr-defined]
    worker.main[0].next_start = 0
    assert run_until(worker, lambda: worker.terminal)["phase"] == "Succeeded"


def test_missing_pull_secret_is_err_image_pull(services: RunnerServices) -> None:
    pod = make_pod([sh("main", "true")], imagePullSecrets=[{"name": "harbor"}], restart="Never")
    worker = PodWorker(pod, "127.0.1.2", services, time.time())
    status = run_until(worker, lambda: "ErrImagePull" in str(worker.main[0].view.state))
    assert 'image pull secret "harbor" not found' in status["containerStatuses"][0]["state"]["waiting"]["message"]


def test_process_book_kills_leftovers(tmp_path: Path, services: RunnerServices) -> None:
    worker = PodWorker(make_pod([sh("main", "sleep 60")]), "127.0.1.2", services, time.time())
    run_until(worker, lambda: worker.main[0].proc is not None)
    pid = worker.main[0].proc.pid
    book = ProcessBook(tmp_path / "processes.json")  # what a restarted runner reads
    assert book.kill_leftovers()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and worker.main[0].proc.poll() is None:
        time.sleep(0.05)
    assert worker.main[0].proc is None or worker.main[0].proc.exit_code == 137
    assert not os.path.exists(f"/proc/{pid}/cmdline") or start_time(pid) is None
