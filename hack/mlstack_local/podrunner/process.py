"""Container processes: one process group (its own session) per container run.

The group stands in for the container's cgroup: stopping a container signals the whole group, and when
the main process exits the rest of its group is killed too (as the runtime does when PID 1 exits).
Every running group is recorded in ``STATE/processes.json`` so a restarted runner can kill what a
crashed runner left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .common import read_json, write_json


def start_time(pid: int) -> str | None:
    """The start time of ``pid`` from /proc (field 22), to tell a recycled PID from ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def group_members(pgid: int) -> list[int]:
    """PIDs whose process group and session are ``pgid`` (a container's surviving processes)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and int(fields[3]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass(frozen=True)
class Launch:
    """Everything needed to start one container run."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    log: Path


class ContainerProcess:
    """A started container run; the runner is its parent, so the exit code is exact."""

    def __init__(self, launch: Launch) -> None:
        launch.log.parent.mkdir(parents=True, exist_ok=True)
        with launch.log.open("ab") as log:
            self._popen = subprocess.Popen(  # noqa: S603 - argv is the pod spec's command, by design
                list(launch.argv),
                env=dict(launch.env),
                cwd=launch.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.pid = self._popen.pid
        self.start_time = start_time(self.pid)
        self.exit_code: int | None = None

    def poll(self) -> int | None:
        """The exit code once the main process has exited (128+signal if killed), else None.

        The exit is detected without reaping first, so the group ID cannot be recycled before the
        rest of the group is killed.
        """
        if self.exit_code is not None:
            return self.exit_code
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = None
            self._popen.poll()
        if info is None and self._popen.returncode is None:
            return None
        signal_group(self.pid, signal.SIGKILL)
        code = self._popen.wait()
        self.exit_code = 128 - code if code < 0 else code
        return self.exit_code

    def signal(self, sig: int) -> None:
        if self.exit_code is None:
            signal_group(self.pid, sig)


class ProcessBook:
    """Persistent record of running container groups: pod UID -> container -> {pid, start}."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, dict[str, str | int | None]]] = read_json(path, {})

    def add(self, uid: str, container: str, proc: ContainerProcess) -> None:
        with self._lock:
            self._records.setdefault(uid, {})[container] = {"pid": proc.pid, "start": proc.start_time}
            write_json(self._path, self._records)

    def remove(self, uid: str, container: str | None = None) -> None:
        with self._lock:
            if container is None:
                self._records.pop(uid, None)
            else:
                self._records.get(uid, {}).pop(container, None)
                if not self._records.get(uid):
                    self._records.pop(uid, None)
            write_json(self._path, self._records)

    def kill_leftovers(self) -> list[str]:
        """Kill every recorded group (what a previous runner left running); return what was killed."""
        killed = []
        with self._lock:
            for uid, containers in self._records.items():
                for name, record in containers.items():
                    pid = int(record["pid"] or 0)
                    alive = pid > 0 and start_time(pid) == record.get("start")
                    if pid > 0 and (alive or group_members(pid)):
                        signal_group(pid, signal.SIGKILL)
                        killed.append(f"{uid}/{name} (pgid {pid})")
            self._records = {}
            write_json(self._path, self._records)
        return killed
