"""Container probes: how one probe is executed, and how results turn into started/ready/alive.

Execution is blocking, so the runner submits probes to a thread pool and collects the results on
later ticks (:class:`ProbeTracker`); a slow probe never stalls other pods.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProbeTarget:
    """Where and how a container's probes run."""

    pod_ip: str
    ports: Mapping[str, int]  # named container ports
    env: Mapping[str, str]
    cwd: str
    map_arg: Callable[[str], str]  # the container's path/address rewriting, for exec probes


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    message: str = ""


def _port(value: Any, target: ProbeTarget) -> int:
    if isinstance(value, int):
        return value
    if str(value).isdigit():
        return int(value)
    if value in target.ports:
        return int(target.ports[value])
    raise ValueError(f"unknown named port {value!r}")


def http_get(spec: Mapping[str, Any], target: ProbeTarget, timeout: float) -> ProbeResult:
    """httpGet: success for a status in [200, 400); HTTPS is not verified, as in kubelet."""
    host = spec.get("host") or target.pod_ip
    port = _port(spec.get("port"), target)
    headers = {"User-Agent": "kube-probe/1.35", "Accept": "*/*"}
    for header in spec.get("httpHeaders") or []:
        headers[header["name"]] = header.get("value", "")
    if str(spec.get("scheme", "HTTP")).upper() == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", spec.get("path") or "/", headers=headers)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as err:
        return ProbeResult(False, f"Get {host}:{port}{spec.get('path') or '/'}: {err}")
    finally:
        conn.close()
    if 200 <= status < 400:
        return ProbeResult(True)
    return ProbeResult(False, f"HTTP probe failed with statuscode: {status}")


def tcp_socket(spec: Mapping[str, Any], target: ProbeTarget, timeout: float) -> ProbeResult:
    host = spec.get("host") or target.pod_ip
    port = _port(spec.get("port"), target)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ProbeResult(True)
    except OSError as err:
        return ProbeResult(False, f"dial tcp {host}:{port}: {err}")


def exec_command(command: Sequence[str], target: ProbeTarget, timeout: float) -> ProbeResult:
    """exec: the command runs with the container's environment, paths and working directory."""
    argv = [target.map_arg(part) for part in command]
    try:
        done = subprocess.run(  # noqa: S603 - argv comes from the pod spec, like kubelet's exec
            argv, env=dict(target.env), cwd=target.cwd, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(False, f"command timed out after {timeout}s")
    except OSError as err:
        return ProbeResult(False, str(err))
    if done.returncode == 0:
        return ProbeResult(True)
    output = (done.stdout + done.stderr).decode(errors="replace").strip()[-200:]
    return ProbeResult(False, f"exit {done.returncode}: {output}")


def run_probe(probe: Mapping[str, Any], target: ProbeTarget) -> ProbeResult:
    """Execute one probe once (a gRPC probe is approximated by a TCP connect)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in probe:
            return http_get(probe["httpGet"], target, timeout)
        if "tcpSocket" in probe:
            return tcp_socket(probe["tcpSocket"], target, timeout)
        if "grpc" in probe:
            return tcp_socket({"port": probe["grpc"]["port"]}, target, timeout)
        if "exec" in probe:
            return exec_command(probe["exec"].get("command") or [], target, timeout)
    except ValueError as err:
        return ProbeResult(False, str(err))
    return ProbeResult(False, "probe has no handler")


@dataclass
class ProbeTracker:
    """One probe of one container run: timing, thresholds and the current verdict.

    ``verdict`` is None until a threshold is reached, then True (``successThreshold`` consecutive
    successes) or False (``failureThreshold`` consecutive failures), like kubelet's prober workers.
    """

    spec: Mapping[str, Any]
    started_at: float
    run: Callable[[Mapping[str, Any], ProbeTarget], ProbeResult] = run_probe
    verdict: bool | None = None
    message: str = ""
    successes: int = 0
    failures: int = 0
    next_due: float = field(init=False)
    _pending: Future[ProbeResult] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.next_due = self.started_at + float(self.spec.get("initialDelaySeconds") or 0)

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds") or 10)

    def tick(self, now: float, executor: Executor, target: ProbeTarget) -> bool:
        """Collect a finished result and start the next one when due; True if the verdict changed."""
        changed = False
        if self._pending is not None and self._pending.done():
            changed = self.record(self._pending.result())
            self._pending = None
        if self._pending is None and now >= self.next_due:
            self._pending = executor.submit(self.run, self.spec, target)
            self.next_due = now + self.period
        return changed

    def record(self, result: ProbeResult) -> bool:
        """Account for one result; True if the verdict changed."""
        before = self.verdict
        self.message = result.message
        if result.ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= int(self.spec.get("successThreshold") or 1):
                self.verdict = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= int(self.spec.get("failureThreshold") or 3):
                self.verdict = False
        return self.verdict != before
