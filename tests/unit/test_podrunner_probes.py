"""Probe execution against local servers, and the threshold logic of a probe tracker."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from mlstack_local.podrunner.probes import ProbeResult, ProbeTarget, ProbeTracker, run_probe  # noqa: E402


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/healthy" and self.headers.get("X-Probe") == "yes":
            code = 200
        elif self.path == "/redirect":
            code = 302
        else:
            code = 503
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.1.5", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()


def target(port: int) -> ProbeTarget:
    return ProbeTarget("127.0.1.5", {"http": port}, {"PATH": "/usr/bin:/bin"}, "/", lambda s: s)


def test_http_get(server: int) -> None:
    probe = {"httpGet": {"path": "/healthy", "port": "http", "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}}
    assert run_probe(probe, target(server)).ok
    assert run_probe({"httpGet": {"path": "/redirect", "port": server}}, target(server)).ok
    failed = run_probe({"httpGet": {"path": "/healthy", "port": server}}, target(server))
    assert not failed.ok
    assert "503" in failed.message
    assert not run_probe({"httpGet": {"path": "/", "port": "nope"}}, target(server)).ok


def test_tcp_and_exec(server: int) -> None:
    assert run_probe({"tcpSocket": {"port": server}}, target(server)).ok
    with socket.socket() as sock:
        sock.bind(("127.0.1.5", 0))
        closed = sock.getsockname()[1]
    assert not run_probe({"tcpSocket": {"port": closed}}, target(server)).ok
    assert run_probe({"exec": {"command": ["true"]}}, target(server)).ok
    failed = run_probe({"exec": {"command": ["sh", "-c", "echo broken; exit 2"]}}, target(server))
    assert not failed.ok
    assert "broken" in failed.message
    slow = run_probe({"exec": {"command": ["sleep", "5"]}, "timeoutSeconds": 1}, target(server))
    assert not slow.ok


def test_tracker_thresholds() -> None:
    tracker = ProbeTracker({"successThreshold": 2, "failureThreshold": 3}, started_at=0)
    assert tracker.verdict is None
    tracker.record(ProbeResult(True))
    assert tracker.verdict is None
    assert tracker.record(ProbeResult(True))
    assert tracker.verdict is True
    tracker.record(ProbeResult(False))
    tracker.record(ProbeResult(False))
    assert tracker.verdict is True  # not yet failureThreshold failures
    tracker.record(ProbeResult(False, "down"))
    assert tracker.verdict is False
    assert tracker.message == "down"


def test_tracker_timing() -> None:
    calls: list[float] = []

    def fake_run(spec: object, target: object) -> ProbeResult:
        calls.append(1)
        return ProbeResult(True)

    tracker = ProbeTracker({"initialDelaySeconds": 5, "periodSeconds": 2}, started_at=100, run=fake_run)
    with ThreadPoolExecutor(1) as executor:
        tracker.tick(104, executor, target(1))
        assert calls == []
        tracker.tick(105, executor, target(1))
        executor.submit(lambda: None).result()  # wait for the probe thread
        tracker.tick(106, executor, target(1))
        assert calls == [1]
        assert tracker.verdict is True
        assert tracker.next_due == 107
