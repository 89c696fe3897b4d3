"""One container of a pod: start, restart with backoff, probes, stop; its status as a :class:`ContainerView`."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from .common import rfc3339
from .images import ImageError
from .probes import ProbeTarget, ProbeTracker
from .process import ContainerProcess, Launch, ProcessBook
from .sources import MissingReference
from .status import ContainerView
from .volumes import VolumeError

BACKOFF_FIRST = 10.0
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 120.0  # a run this long resets the backoff, like kubelet after a stable run
CONFIG_RETRY = 5.0
log = logging.getLogger("podrunner")


@dataclass(frozen=True)
class Prepared:
    """A resolved launch plus what its probes need."""

    launch: Launch
    target: ProbeTarget
    image_id: str


class ContainerRunner:
    """Drives one container (an init container, a sidecar or a regular one) through its runs.

    ``restart`` says which exits lead to a new run: ``Always``, ``OnFailure`` or ``Never``.
    """

    def __init__(
        self,
        spec: Mapping[str, Any],
        *,
        pod_key: str,
        uid: str,
        restart: str,
        init: bool,
        prepare: Callable[[Mapping[str, Any]], Prepared],
        book: ProcessBook,
        executor: Executor,
    ) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.pod_key = pod_key
        self.uid = uid
        self.restart = restart
        self.init = init
        self.sidecar = init and spec.get("restartPolicy") == "Always"
        self._prepare = prepare
        self._book = book
        self._executor = executor
        self.view = ContainerView(name=self.name, image=spec.get("image", ""))
        self.proc: ContainerProcess | None = None
        self.done = False  # terminated and will not run again
        self.runs = 0
        self.next_start = 0.0
        self.backoff = 0.0
        self.started_at = 0.0
        self.kill_deadline: float | None = None
        self.kill_reason = ""
        self.stopping = False
        self.probes: dict[str, ProbeTracker] = {}
        self.target: ProbeTarget | None = None

    # ---- state queries -------------------------------------------------------------------------
    @property
    def completed(self) -> bool:
        """An init container that exited 0 (a sidecar counts once started)."""
        if self.sidecar:
            return self.view.started
        return self.done and self.view.exit_code == 0

    @property
    def failed_for_good(self) -> bool:
        return self.done and (self.view.exit_code or 0) != 0

    # ---- recovery after a runner restart -------------------------------------------------------
    def restore(self, previous: Mapping[str, Any], never: bool) -> None:
        """Carry restart count and finished runs over from the status a previous runner reported."""
        self.view.restart_count = int(previous.get("restartCount") or 0)
        state = previous.get("state") or {}
        ran = bool(state.get("running") or state.get("terminated") or (previous.get("lastState") or {}))
        self.runs = 1 if ran else 0
        terminated = state.get("terminated")
        if terminated and (never or (self.init and not self.sidecar and terminated.get("exitCode") == 0)):
            self._finish(dict(terminated), ready=self.init and terminated.get("exitCode") == 0)
        elif state.get("running") and never:
            self._finish(
                {
                    "exitCode": 137,
                    "reason": "ContainerStatusUnknown",
                    "message": "The container could not be located when the pod was terminated",
                    "startedAt": state["running"].get("startedAt"),
                    "finishedAt": rfc3339(),
                },
                ready=False,
            )

    # ---- the loop ------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        if self.proc is not None:
            code = self.proc.poll()
            if code is None:
                self._tick_running(now)
                return
            self._on_exit(code, now)
        if self.done or self.stopping or now < self.next_start:
            return
        self._start(now)

    def _tick_running(self, now: float) -> None:
        if self.kill_deadline is not None:
            if now >= self.kill_deadline and self.proc is not None:
                self.proc.signal(signal.SIGKILL)
            return
        if self.target is None:
            return
        startup = self.probes.get("startup")
        if startup is not None and not self.view.started:
            startup.tick(now, self._executor, self.target)
            if startup.verdict is True:
                self.view.started = True
                log.info("%s: %s startup probe succeeded", self.pod_key, self.name)
            elif startup.verdict is False:
                self._probe_kill(now, "startup", startup.message)
            return
        self.view.started = True
        readiness = self.probes.get("readiness")
        if readiness is None:
            self.view.ready = True
        else:
            before = self.view.ready
            readiness.tick(now, self._executor, self.target)
            self.view.ready = readiness.verdict is True
            if before != self.view.ready:
                log.info("%s: %s ready=%s %s", self.pod_key, self.name, self.view.ready, readiness.message)
        liveness = self.probes.get("liveness")
        if liveness is not None:
            liveness.tick(now, self._executor, self.target)
            if liveness.verdict is False:
                self._probe_kill(now, "liveness", liveness.message)

    def _probe_kill(self, now: float, which: str, message: str) -> None:
        log.warning("%s: %s failed %s probe, restarting: %s", self.pod_key, self.name, which, message)
        self.kill_reason = which
        self.stop(now, grace=float(self.spec.get("terminationGracePeriodSeconds") or 30), final=False)

    def _start(self, now: float) -> None:
        try:
            prepared = self._prepare(self.spec)
        except ImageError as err:
            self._wait("ErrImagePull" if self.runs == 0 else "ImagePullBackOff", str(err), now + CONFIG_RETRY)
            return
        except (MissingReference, VolumeError) as err:
            self._wait("CreateContainerConfigError", str(err), now + CONFIG_RETRY)
            return
        try:
            proc = ContainerProcess(prepared.launch)
        except (OSError, ValueError) as err:  # not found, not executable, NUL in argv
            log.warning("%s: %s cannot start: %s", self.pod_key, self.name, err)
            self.view.image_id = prepared.image_id
            self.started_at = now
            self._count_run()
            self._record_exit(128, now, reason="StartError", message=str(err))
            return
        self._count_run()
        self.proc = proc
        self._book.add(self.uid, self.name, proc)
        self.started_at = now
        self.target = prepared.target
        self.kill_deadline = None
        self.kill_reason = ""
        self.view.image_id = prepared.image_id
        self.view.container_id = f"mlstack://{proc.pid}"
        self.view.state = {"running": {"startedAt": rfc3339(now)}}
        self.view.started = "startupProbe" not in self.spec
        self.view.ready = False
        self.probes = {
            kind: ProbeTracker(self.spec[f"{kind}Probe"], started_at=now)
            for kind in ("startup", "readiness", "liveness")
            if self.spec.get(f"{kind}Probe")
        }
        log.info("%s: %s started pid %d: %s", self.pod_key, self.name, proc.pid, " ".join(prepared.launch.argv)[:300])

    def _count_run(self) -> None:
        if self.runs > 0:
            self.view.restart_count += 1
        self.runs += 1

    def _wait(self, reason: str, message: str, retry_at: float) -> None:
        if self.view.state.get("waiting", {}).get("reason") != reason:
            log.warning("%s: %s %s: %s", self.pod_key, self.name, reason, message)
        self.view.state = {"waiting": {"reason": reason, "message": message}}
        self.next_start = retry_at

    def _on_exit(self, code: int, now: float) -> None:
        pid = self.proc.pid if self.proc is not None else 0
        self._book.remove(self.uid, self.name)
        self.proc = None
        reason = "Completed" if code == 0 else "Error"
        log.info("%s: %s (pid %d) exited with %d", self.pod_key, self.name, pid, code)
        self._record_exit(code, now, reason=reason, message="")

    def _record_exit(self, code: int, now: float, *, reason: str, message: str) -> None:
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": rfc3339(self.started_at),
            "finishedAt": rfc3339(now),
        }
        if message:
            terminated["message"] = message
        if self.view.container_id:
            terminated["containerID"] = self.view.container_id
        self.probes = {}
        self.target = None
        self.kill_deadline = None
        if self.stopping or not self._restarts(code):
            self._finish(terminated, ready=self.init and not self.sidecar and code == 0)
            return
        if now - self.started_at >= BACKOFF_RESET_AFTER:
            self.backoff = 0.0
        self.backoff = min(BACKOFF_MAX, self.backoff * 2 if self.backoff else BACKOFF_FIRST)
        self.view.last_state = {"terminated": terminated}
        self.view.ready = False
        self.view.started = False
        self.view.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {self.backoff:.0f}s restarting failed container={self.name}",
            }
        }
        self.next_start = now + self.backoff

    def _restarts(self, code: int) -> bool:
        """Whether an exit with ``code`` leads to another run."""
        if self.kill_reason and self.restart != "Never":
            return True
        if self.sidecar or self.restart == "Always":
            return not (self.init and not self.sidecar and code == 0)
        if self.init:
            return code != 0 and self.restart != "Never"
        return self.restart == "OnFailure" and code != 0

    def _finish(self, terminated: dict[str, Any], *, ready: bool) -> None:
        self.done = True
        self.view.state = {"terminated": terminated}
        self.view.ready = ready
        self.view.started = False

    # ---- stopping ------------------------------------------------------------------------------
    def stop(self, now: float, *, grace: float, final: bool = True) -> None:
        """SIGTERM the group now and SIGKILL it after ``grace``; ``final`` means no further runs."""
        if final:
            self.stopping = True
            if self.proc is None and not self.done:
                self.done = True
        if self.proc is not None:
            self.proc.signal(signal.SIGTERM)
            deadline = now + grace
            self.kill_deadline = deadline if self.kill_deadline is None else min(deadline, self.kill_deadline)

    def kill_now(self) -> None:
        """SIGKILL immediately (the pod object is gone, or the runner is shutting down late)."""
        self.stopping = True
        if self.proc is not None:
            self.proc.signal(signal.SIGKILL)
