"""Process bookkeeping: start daemons with a log and a PID file, stop them by PID, wait for readiness.

A PID file records the PID and the process start time (from /proc), so a recycled PID is never
mistaken for ours and never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .config import Paths


class StackError(RuntimeError):
    """A step failed; the message says what, where the log is and how to retry."""


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) counted after the ")" that closes the command name.
    return stat.rsplit(")", 1)[1].split()[19]


def pid_file(paths: Paths, name: str) -> Path:
    return paths.pids / f"{name}.json"


def recorded_pid(paths: Paths, name: str) -> int | None:
    """The PID recorded for ``name`` if that very process is still alive, else None."""
    path = pid_file(paths, name)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(record["pid"])
    if _start_time(pid) != record.get("start_time") or _is_zombie(pid):
        return None
    return pid


def record_pid(paths: Paths, name: str, pid: int) -> None:
    paths.pids.mkdir(parents=True, exist_ok=True)
    start = _start_time(pid)
    pid_file(paths, name).write_text(json.dumps({"pid": pid, "start_time": start}))


def start_daemon(
    paths: Paths,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` detached in its own session, output appended to logs/<name>.log."""
    paths.logs.mkdir(parents=True, exist_ok=True)
    log = (paths.logs / f"{name}.log").open("ab")
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.Popen(  # noqa: S603 - argv is built by us, never from a shell string
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )
    log.close()
    record_pid(paths, name, proc.pid)
    return proc.pid


def stop(paths: Paths, name: str, timeout: float = 20.0) -> bool:
    """Stop the recorded process group of ``name``; True if something was stopped."""
    pid = recorded_pid(paths, name)
    pid_file(paths, name).unlink(missing_ok=True)
    if pid is None:
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _start_time(pid) is None or _is_zombie(pid):
            break
        time.sleep(0.2)
    else:
        _signal_group(pid, signal.SIGKILL)
    _reap(pid)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group when ``pid`` leads one (our daemons do), else the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        return


def log_tail(paths: Paths, name: str, lines: int = 25) -> str:
    path = paths.logs / f"{name}.log"
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(content[-lines:])


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def http_status(
    url: str, *, context: ssl.SSLContext | None = None, headers: Mapping[str, str] | None = None
) -> int | None:
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - local URLs only
    try:
        with urllib.request.urlopen(request, timeout=3, context=context) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (OSError, ValueError):
        return None


def wait_until(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    paths: Paths | None = None,
    name: str | None = None,
    interval: float = 0.5,
) -> float:
    """Poll ``check`` until true; report progress every 15 s; raise with the log tail on timeout."""
    start = time.monotonic()
    next_note = start + 15
    while True:
        if check():
            return time.monotonic() - start
        if name and paths and recorded_pid(paths, name) is None:
            raise StackError(
                f"{what}: the process exited.\n--- last lines of {paths.logs / (name + '.log')} ---\n"
                + log_tail(paths, name)
            )
        now = time.monotonic()
        if now - start > timeout:
            tail = log_tail(paths, name) if (paths and name) else ""
            raise StackError(f"{what}: not ready after {timeout:.0f}s.\n{tail}")
        if now >= next_note:
            log_hint = f" (log: {paths.logs / (name + '.log')})" if paths and name else ""
            print(f"    … still waiting for {what}, {now - start:.0f}s{log_hint}", flush=True)
            next_note = now + 15
        time.sleep(interval)


def run_logged(
    paths: Paths,
    log_name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    what: str,
    heartbeat: float = 30.0,
) -> None:
    """Run a long foreground command with its output in a log, printing a heartbeat while it runs."""
    paths.logs.mkdir(parents=True, exist_ok=True)
    log_path = paths.logs / f"{log_name}.log"
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    start = time.monotonic()
    with log_path.open("ab") as log:
        log.write(f"\n$ {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd)  # noqa: S603
        while True:
            try:
                code = proc.wait(timeout=heartbeat)
                break
            except subprocess.TimeoutExpired:
                print(f"    … {what}: {time.monotonic() - start:.0f}s so far (log: {log_path})", flush=True)
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise StackError(
            f"{what} failed (exit {code}).\n--- last lines of {log_path} ---\n{tail}\n"
            f"Retry with: make up   (cached steps are skipped)"
        )


def say(message: str) -> None:
    print(message, flush=True)
    sys.stdout.flush()
