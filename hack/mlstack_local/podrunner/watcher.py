"""A small informer for the pods bound to the runner's node: list, then watch from that version.

Survives the API server going away (retries with backoff and re-watches from the last version seen)
and an expired version (410 Gone, or an ERROR event): then it lists again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kubernetes.client.exceptions import ApiException

from .kubeapi import Api

WATCH_SECONDS = 240
log = logging.getLogger("podrunner")


class Gone(Exception):
    """The resourceVersion is too old: list again."""


class PodInformer:
    """Keeps ``uid -> pod`` current in a thread; ``changed`` is set on every change."""

    def __init__(self, api: Api, changed: threading.Event) -> None:
        self.api = api
        self.changed = changed
        self.synced = threading.Event()
        self._pods: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-informer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._pods)

    def _run(self) -> None:
        version: str | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._relist()
                version = self._watch(version)
                failures = 0
            except Gone:
                log.info("pod watch: resourceVersion expired, listing again")
                version = None
            except Exception as err:  # noqa: BLE001 - the informer must outlive any API error
                if isinstance(err, ApiException) and err.status == 410:
                    version = None
                    continue
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                log.warning("pod watch failed (%s), retrying in %.0fs", _short(err), delay)
                self._stop.wait(delay)

    def _relist(self) -> str:
        pods, version = self.api.list_pods()
        with self._lock:
            self._pods = {pod["metadata"]["uid"]: pod for pod in pods}
        self.synced.set()
        self.changed.set()
        return version

    def _watch(self, version: str) -> str:
        """Apply events until the watch ends; return the version to resume from."""
        for event in self.api.watch_pods(version, WATCH_SECONDS):
            if self._stop.is_set():
                break
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone
                raise RuntimeError(f"watch error: {obj.get('message')}")
            version = obj.get("metadata", {}).get("resourceVersion") or version
            if kind == "BOOKMARK":
                continue
            self._apply(kind or "", obj)
        return version

    def _apply(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if kind == "DELETED":
                self._pods.pop(uid, None)
            else:
                self._pods[uid] = pod
        self.changed.set()


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
