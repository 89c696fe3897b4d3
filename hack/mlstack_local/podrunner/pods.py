"""One pod on the runner's node: sandbox (directories, volumes, pull checks), init containers in order,
then the containers; deletion with a grace period; the status kubelet would report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import rfc3339
from .containers import ContainerRunner, Prepared
from .envs import expand_command, resolve_env
from .images import ImageError, ImageResolver, check_pull
from .probes import ProbeTarget
from .process import Launch, ProcessBook
from .rewrite import PathMapper, rewrite
from .sources import ObjectSource
from .status import ContainerView, build_status, condition_values, conditions, pod_phase
from .volumes import MaterialiseContext, PodDirs, VolumeError, container_mounts, materialise, pod_dirs, prepare_pod_dirs

GRACE_CAP = 30.0
SANDBOX_RETRY = 5.0
log = logging.getLogger("podrunner")


@dataclass
class RunnerServices:
    """What every pod worker shares with the daemon."""

    state: Path
    source: ObjectSource
    images: ImageResolver
    executor: Executor
    book: ProcessBook
    # (namespace, enableServiceLinks) -> service link variables, the master service included.
    service_env: Callable[[str, bool], dict[str, str]]


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


class PodWorker:
    """Runs one pod (see the module docstring); the daemon calls :meth:`tick` and :meth:`status`."""

    def __init__(self, pod: Mapping[str, Any], pod_ip: str, services: RunnerServices, now: float) -> None:
        meta = pod["metadata"]
        spec = pod.get("spec") or {}
        self.pod: Mapping[str, Any] = pod
        self.uid: str = meta["uid"]
        self.key = pod_key(pod)
        self.pod_ip = pod_ip
        self.services = services
        self.dirs: PodDirs = pod_dirs(services.state, meta["namespace"], meta["name"])
        self.restart_policy: str = spec.get("restartPolicy") or "Always"
        self.volume_dirs: dict[str, Path] | None = None
        self.sandbox_message = ""
        self.next_sandbox = 0.0
        self.sandbox_failures = 0
        self.terminating = False
        self.node_shutdown = False
        self.start_time: str = (pod.get("status") or {}).get("startTime") or rfc3339(now)
        self.previous_conditions = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
        self.init = [self._runner(c, init=True) for c in spec.get("initContainers") or []]
        self.main = [self._runner(c, init=False) for c in spec.get("containers") or []]
        if self.init:
            for runner in self.main:
                runner.view.state = {"waiting": {"reason": "PodInitializing"}}
        self._restore(pod.get("status") or {})

    def _runner(self, container: Mapping[str, Any], *, init: bool) -> ContainerRunner:
        return ContainerRunner(
            container,
            pod_key=self.key,
            uid=self.uid,
            restart=self.restart_policy,
            init=init,
            prepare=self._prepare,
            book=self.services.book,
            executor=self.services.executor,
        )

    def _restore(self, status: Mapping[str, Any]) -> None:
        """Pick up what a previous runner reported for this pod (restart counts, finished containers)."""
        never = self.restart_policy == "Never"
        for runners, field in ((self.init, "initContainerStatuses"), (self.main, "containerStatuses")):
            previous = {s["name"]: s for s in status.get(field) or []}
            for runner in runners:
                if runner.name in previous:
                    runner.restore(previous[runner.name], never)

    def update(self, pod: Mapping[str, Any]) -> None:
        """A newer version of the pod object (labels may change; the runnable spec cannot)."""
        self.pod = pod

    # ---- the loop ------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        if self.volume_dirs is None and not self.terminating:
            if now < self.next_sandbox or not self._setup_sandbox(now):
                return
        for runner in self.init:
            if self.terminating:
                runner.tick(now)
                continue
            if runner.completed and not runner.sidecar:
                continue
            runner.tick(now)
            if not runner.completed:
                return  # the next init container waits for this one
        for runner in self.main:
            runner.tick(now)
        if not self.terminating and self.main and all(r.done for r in self.main):
            for runner in self.init:
                if runner.sidecar:
                    runner.stop(now, grace=self._grace())  # sidecars end with the main containers

    def _setup_sandbox(self, now: float) -> bool:
        """Directories, image pull checks and volumes; on failure retry later with the reason shown."""
        meta = self.pod["metadata"]
        spec = self.pod.get("spec") or {}
        try:
            prepare_pod_dirs(self.dirs, self.uid)
            pull_secrets = [ref["name"] for ref in spec.get("imagePullSecrets") or [] if ref.get("name")]
            for image in sorted({r.spec.get("image", "") for r in self.init + self.main}):
                self.services.images.resolve(image)
                check_pull(image, pull_secrets, meta["namespace"], self.services.source)
            context = MaterialiseContext(self.services.state, self.services.source, self.pod_ip)
            self.volume_dirs = materialise(self.pod, self.dirs, context)
        except (ImageError, VolumeError) as err:
            self.sandbox_failures += 1
            reason = "ContainerCreating"
            if isinstance(err, ImageError):
                reason = "ErrImagePull" if self.sandbox_failures == 1 else "ImagePullBackOff"
            if str(err) != self.sandbox_message:
                log.warning("%s: %s: %s", self.key, reason, err)
            self.sandbox_message = str(err)
            for runner in self.init[:1] + self.main:
                runner.view.state = {"waiting": {"reason": reason, "message": str(err)}}
            self.next_sandbox = now + min(60.0, SANDBOX_RETRY * self.sandbox_failures)
            return False
        self.sandbox_message = ""
        return True

    # ---- turning a container spec into a launch ------------------------------------------------
    def _prepare(self, container: Mapping[str, Any]) -> Prepared:
        """Resolve env, mounts, argv and working directory for one run of ``container``."""
        if self.volume_dirs is None:
            raise VolumeError("volumes are not set up yet")
        spec = self.pod.get("spec") or {}
        namespace = self.pod["metadata"]["namespace"]
        runtime = self.services.images.resolve(container.get("image", ""))
        links = self.services.service_env(namespace, spec.get("enableServiceLinks", True) is not False)
        pod_env, secret_names = resolve_env(self.pod, container, self.services.source, self.pod_ip, links)
        mounts = container_mounts(container, self.volume_dirs, pod_env)
        mapper = PathMapper(mounts)
        command, args = expand_command(container, pod_env)
        argv = [rewrite(part, mapper, self.pod_ip) for part in command + args]
        if not argv:
            raise VolumeError("no command or args: image entrypoints are not emulated by the pod runner")
        env = self._base_env(runtime.path, mapper)
        for name, value in pod_env.items():
            env[name] = value if name in secret_names else rewrite(value, mapper, self.pod_ip)
        cwd = self._working_dir(container.get("workingDir") or "", mapper)
        ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")}
        target = ProbeTarget(self.pod_ip, ports, env, str(cwd), lambda text: rewrite(text, mapper, self.pod_ip))
        launch = Launch(argv=argv, env=env, cwd=cwd, log=self.dirs.log(container["name"]))
        return Prepared(launch=launch, target=target, image_id=runtime.image_id)

    def _base_env(self, path: str, mapper: PathMapper) -> dict[str, str]:
        """What the image and runtime would provide: PATH, HOME, LANG, HOSTNAME, TMPDIR."""
        container_tmp = "/tmp"  # noqa: S108 - the container's /tmp, which a volume may cover
        tmp = mapper.host_dir(container_tmp) or str(self.dirs.tmp)
        spec = self.pod.get("spec") or {}
        return {
            "PATH": path,
            "HOME": str(self.dirs.home),
            "LANG": "C.UTF-8",
            "HOSTNAME": spec.get("hostname") or self.pod["metadata"]["name"],
            "TMPDIR": tmp,
        }

    def _working_dir(self, working_dir: str, mapper: PathMapper) -> Path:
        """A mounted working dir maps to its volume; any other image path falls back to HOME."""
        mapped = mapper.host_dir(working_dir) if working_dir else None
        if mapped is None:
            return self.dirs.home
        path = Path(mapped)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ---- deletion ------------------------------------------------------------------------------
    def _grace(self) -> float:
        spec = self.pod.get("spec") or {}
        meta = self.pod.get("metadata") or {}
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", 30)
        return min(GRACE_CAP, float(grace))

    def terminate(self, now: float) -> None:
        """Begin graceful termination (SIGTERM now, SIGKILL after the grace period, capped at 30 s)."""
        if self.terminating:
            return
        self.terminating = True
        grace = self._grace()
        log.info("%s: terminating (grace %.0fs)", self.key, grace)
        for runner in self.init + self.main:
            runner.stop(now, grace=grace)

    def shutdown(self, now: float, cap: float) -> None:
        """The runner is stopping (a node shutdown): stop the containers but keep the pod.

        Pods that restart their containers stay non-terminal and run again when the runner returns;
        a ``restartPolicy: Never`` pod ends Failed (or Succeeded), as on a real node shutdown.
        """
        self.node_shutdown = True
        self.terminating = True
        grace = min(cap, self._grace())
        for runner in self.init + self.main:
            runner.stop(now, grace=grace)

    def kill_now(self) -> None:
        self.terminating = True
        for runner in self.init + self.main:
            runner.kill_now()

    @property
    def stopped(self) -> bool:
        """No process of this pod is running any more."""
        return all(r.proc is None for r in self.init + self.main)

    @property
    def sandbox_ready(self) -> bool:
        return self.volume_dirs is not None

    # ---- status --------------------------------------------------------------------------------
    def phase(self) -> str:
        init_failed = any(r.failed_for_good and not r.sidecar for r in self.init)
        init_pending = not all(r.completed for r in self.init)
        if self.terminating and self.stopped and not self.node_shutdown:
            codes = [r.view.exit_code for r in self.main]
            return "Succeeded" if all(code == 0 for code in codes) else "Failed"
        return pod_phase(self.restart_policy, init_pending, init_failed, [r.view for r in self.main])

    @property
    def terminal(self) -> bool:
        return self.phase() in ("Succeeded", "Failed") and self.stopped

    def status(self, now: float) -> dict[str, Any]:
        """The status object to patch (see :func:`.status.build_status`)."""
        phase = self.phase()
        init_pending = not all(r.completed for r in self.init)
        ready_views: list[ContainerView] = [r.view for r in self.main] + [r.view for r in self.init if r.sidecar]
        values = condition_values(self.sandbox_ready, init_pending, phase, ready_views)
        conds = conditions(self.previous_conditions, values, now)
        self.previous_conditions = {c["type"]: c for c in conds}
        return build_status(
            phase=phase,
            pod_ip=self.pod_ip,
            start_time=self.start_time,
            conds=conds,
            init_views=[r.view for r in self.init],
            views=[r.view for r in self.main],
        )
