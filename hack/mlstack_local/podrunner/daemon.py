"""The runner daemon: node agent, pod informer, pod workers, service proxy and health endpoint.

The main thread reconciles every half second (or at once when the informer sees a change): it starts
workers for new pods, ticks them, patches ``pods/status`` when the status changed, finishes deletions
and feeds the service proxy with pod readiness. Everything blocking (probes, watches, heartbeats,
proxying) runs on other threads so one slow thing never stalls the rest.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

from .health import HealthServer
from .images import ImageResolver
from .ipam import POD_PREFIX, POD_RANGE, AddressPool
from .kubeapi import Api
from .node import NodeAgent
from .pods import PodWorker, RunnerServices
from .process import ProcessBook
from .services import PodEndpoint, ServiceProxy
from .volumes import pod_dirs, remove_pod_dirs
from .watcher import PodInformer

TICK = 0.5
SERVICES_EVERY = 2.0
SHUTDOWN_GRACE = 8.0
TERMINAL = ("Succeeded", "Failed")
log = logging.getLogger("podrunner")


class Daemon:
    def __init__(self, api: Api, state: Path, mlflow_venv: Path | None, port: int) -> None:
        self.api = api
        self.state = state
        self.stop_event = threading.Event()
        self.changed = threading.Event()
        self.informer = PodInformer(api, self.changed)
        self.node = NodeAgent(api, port)
        self.proxy = ServiceProxy(state)
        self.book = ProcessBook(state / "processes.json")
        self.pod_ips = AddressPool(state / "pod-ips.json", POD_PREFIX, POD_RANGE)
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        self.runner_services = RunnerServices(
            state=state,
            source=api,
            images=ImageResolver(mlflow_venv),
            executor=self.executor,
            book=self.book,
            service_env=self.service_env,
        )
        self.health = HealthServer(state, port, self.node.healthy, self.summary)
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()  # UIDs of pods that ended here: never run them again
        self.patched: dict[str, str] = {}
        self.next_delete: dict[str, float] = {}
        self._services: list[dict[str, Any]] = []
        self._services_thread = threading.Thread(target=self._poll_services, name="services-list", daemon=True)

    # ---- lifecycle -----------------------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for leftover in self.book.kill_leftovers():
            log.info("killed leftover container group %s", leftover)
        self.health.start()
        if not self._register():
            return 1
        self.node.start()
        self.proxy.start()
        self._services_thread.start()
        self.informer.start()
        log.info("pod runner up; state in %s", self.state)
        while not self.stop_event.is_set():
            if self.informer.synced.is_set():
                try:
                    self.reconcile(time.time())
                except Exception:  # noqa: BLE001 - the daemon must outlive any bug in one round
                    log.exception("reconcile failed; trying again")
            self.changed.wait(TICK)
            self.changed.clear()
        self.shutdown()
        return 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping every pod process, then exiting", signum)
        self.stop_event.set()
        self.changed.set()

    def _register(self) -> bool:
        """Register the node, retrying while the API server is not reachable yet."""
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                self.node.register()
                return True
            except Exception as err:  # noqa: BLE001 - the API server may still be starting
                log.warning("node registration failed (%s); retrying in %.0fs", str(err).splitlines()[0][:200], delay)
                self.stop_event.wait(delay)
                delay = min(10.0, delay * 2)
        return False

    def shutdown(self) -> None:
        """Stop every container (grace capped), report them not ready, stop the threads."""
        self.informer.stop()
        self.node.stop()
        now = time.time()
        for worker in self.workers.values():
            worker.shutdown(now, SHUTDOWN_GRACE)
        deadline = time.monotonic() + SHUTDOWN_GRACE + 2
        while time.monotonic() < deadline and not all(w.stopped for w in self.workers.values()):
            for worker in self.workers.values():
                worker.tick(time.time())
            time.sleep(0.1)
        for worker in self.workers.values():
            if not worker.stopped:
                worker.kill_now()
                time.sleep(0.2)
                worker.tick(time.time())
            self._patch(worker, time.time())
        self.proxy.stop()
        self.health.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        log.info("pod runner stopped")

    # ---- services ------------------------------------------------------------------------------
    def _poll_services(self) -> None:
        while not self.stop_event.is_set():
            try:
                services = self.api.list_services()
                self._services = services
                self.proxy.set_services(services)
            except Exception as err:  # noqa: BLE001 - keep the last known services
                log.warning("listing services failed: %s", str(err).splitlines()[0][:200] if str(err) else err)
            self.stop_event.wait(SERVICES_EVERY)

    def service_env(self, namespace: str, links: bool) -> dict[str, str]:
        """Service link variables as kubelet injects them, pointing at addresses that work here."""
        from .envs import service_env

        chosen: list[dict[str, Any]] = []
        if links:
            for service in self._services:
                meta = service.get("metadata") or {}
                if meta.get("namespace") != namespace:
                    continue
                address = self.proxy.address_of(namespace, meta.get("name", ""))
                spec = dict(service.get("spec") or {})
                if address:
                    spec["clusterIP"] = address
                chosen.append({"metadata": meta, "spec": spec})
        host, port = self.api.endpoint()
        master = {"name": "https", "port": port, "protocol": "TCP"}
        chosen.append({"metadata": {"name": "kubernetes"}, "spec": {"clusterIP": host, "ports": [master]}})
        return service_env(chosen)

    # ---- reconciliation ------------------------------------------------------------------------
    def reconcile(self, now: float) -> None:
        pods = self.informer.snapshot()
        for uid, pod in pods.items():
            try:
                self._sync(uid, pod, now)
            except Exception:  # noqa: BLE001 - one broken pod must not stop the others
                log.exception("pod %s/%s: sync failed", pod["metadata"].get("namespace"), pod["metadata"].get("name"))
        for uid in [uid for uid in self.workers if uid not in pods]:
            self._forget(uid, self.workers[uid], now)
        self.finished &= set(pods)
        self.proxy.set_endpoints(self._endpoints())

    def _sync(self, uid: str, pod: dict[str, Any], now: float) -> None:
        meta = pod["metadata"]
        worker = self.workers.get(uid)
        if meta.get("deletionTimestamp"):
            self._deleting(uid, pod, worker, now)
            return
        if worker is None:
            if uid in self.finished or (pod.get("status") or {}).get("phase") in TERMINAL:
                return
            worker = self._new_worker(uid, pod, now)
        worker.update(pod)
        worker.tick(now)
        if self._patch(worker, now) and worker.terminal:
            log.info("%s: %s", worker.key, worker.phase())
            self._drop(uid)
            self.finished.add(uid)

    def _new_worker(self, uid: str, pod: dict[str, Any], now: float) -> PodWorker:
        host_network = bool((pod.get("spec") or {}).get("hostNetwork"))
        ip = "127.0.0.1" if host_network else self.pod_ips.allocate(uid)
        worker = PodWorker(pod, ip, self.runner_services, now)
        self.workers[uid] = worker
        log.info("%s: new pod, IP %s", worker.key, ip)
        return worker

    def _deleting(self, uid: str, pod: dict[str, Any], worker: PodWorker | None, now: float) -> None:
        """Graceful termination, then the final delete with grace 0 (what a kubelet does)."""
        if worker is not None:
            worker.update(pod)
            worker.terminate(now)
            worker.tick(now)
            if not worker.stopped:
                return
            self._patch(worker, now)
        if now < self.next_delete.get(uid, 0):
            return
        self.next_delete[uid] = now + 5
        meta = pod["metadata"]
        self.api.delete_pod(meta["namespace"], meta["name"], uid)
        log.info("%s/%s: deleted", meta["namespace"], meta["name"])
        self._drop(uid)
        remove_pod_dirs(pod_dirs(self.state, meta["namespace"], meta["name"]), uid)

    def _forget(self, uid: str, worker: PodWorker, now: float) -> None:
        """The pod object is gone (force-deleted): kill its processes without grace."""
        if not worker.stopped:
            worker.kill_now()
            worker.tick(now)
        if worker.stopped:
            log.info("%s: pod object gone, processes stopped", worker.key)
            self._drop(uid)

    def _drop(self, uid: str) -> None:
        self.workers.pop(uid, None)
        self.patched.pop(uid, None)
        self.pod_ips.release(uid)
        self.book.remove(uid)

    def _patch(self, worker: PodWorker, now: float) -> bool:
        """Patch ``pods/status`` if it changed; True when the API has the current status."""
        status = worker.status(now)
        encoded = json.dumps(status, sort_keys=True)
        if self.patched.get(worker.uid) == encoded:
            return True
        namespace, name = worker.key.split("/", 1)
        try:
            self.api.patch_pod_status(namespace, name, status)
        except Exception as err:  # noqa: BLE001 - retried on the next tick
            if getattr(err, "status", None) == 404:
                return False
            log.warning("%s: status patch failed: %s", worker.key, str(err).splitlines()[0][:200])
            return False
        self.patched[worker.uid] = encoded
        return True

    def _endpoints(self) -> list[PodEndpoint]:
        endpoints = []
        for worker in self.workers.values():
            meta = worker.pod.get("metadata") or {}
            ports: dict[str, int] = {}
            for container in (worker.pod.get("spec") or {}).get("containers") or []:
                for port in container.get("ports") or []:
                    if port.get("name"):
                        ports[port["name"]] = int(port["containerPort"])
            ready = not worker.terminating and bool(worker.main) and all(r.view.ready for r in worker.main)
            labels = meta.get("labels") or {}
            endpoints.append(PodEndpoint(meta.get("namespace", ""), labels, worker.pod_ip, ready, ports))
        return sorted(endpoints, key=lambda e: (e.namespace, e.ip))

    def summary(self) -> list[dict[str, Any]]:
        """What /pods shows."""
        out = []
        for worker in list(self.workers.values()):
            containers = {}
            for runner in worker.init + worker.main:
                containers[runner.name] = {
                    "pid": runner.proc.pid if runner.proc else None,
                    "ready": runner.view.ready,
                    "restarts": runner.view.restart_count,
                    "state": runner.view.state,
                    "log": str(worker.dirs.log(runner.name)),
                }
            out.append({"pod": worker.key, "ip": worker.pod_ip, "phase": worker.phase(), "containers": containers})
        return out
