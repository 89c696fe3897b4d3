"""The two MLflow servers under test: pods on the local stack's node, how they start, what they cost.

* ``ours``: the bench deployment's ``mlflow`` Deployment exactly as the collection renders it.
* ``defaults``: a ``mlflow-defaults`` Deployment the benchmark creates in the same namespace: the same
  image with MLflow's defaults (4 workers, job runner on), on its own database, role and bucket of the
  same PostgreSQL and S3, with its own ClusterIP Service.

Both are started by scaling their Deployment 0 -> 1 and timed until ``/health`` answers at the pod IP
(MLflow does not check the Host header of /health); the loads go through the Service ClusterIP, which the
host reaches through kube-proxy's rules (at the pod IP, the API answers 403: --allowed-hosts). Memory and
CPU come from the pod's cgroup (v1, cgroupfs driver: ``<hierarchy>/<root>/kubepods/[<qos>/]pod<uid>``,
one child per container named by its ID), never from host process trees.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .common import OUT_DIR, BenchError, Ticker, http_status, pg_admin, s3_client, say

CGROUP_BASE = Path("/sys/fs/cgroup")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
CONTAINER = "mlflow"  # the server container's name, in ours and in the defaults Deployment
# Where pods reach the stack's PostgreSQL and S3 when ours' Secret or Deployment does not say (they do).
POD_PG_HOST, POD_PG_PORT = "postgresql-official.postgres.svc.cluster.local", "5432"
POD_S3_ENDPOINT = "http://seaweedfs-s3.seaweedfs.svc.cluster.local:8333"
# uvicorn's access-log line of a successful request: 'INFO:     10.89.0.1:4242 - "GET /health HTTP/1.1" 200 OK'
ACCESS_OK = re.compile(r'INFO: +[0-9.]+:[0-9]+ - "[A-Z]+ [^"]*" 2[0-9][0-9] ')
# Container states that will not get better by waiting.
BAD_WAITING = {
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


# ---- /proc and the pod cgroups ----------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the command name), or None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_age(pid: int) -> float | None:
    """Seconds since ``pid`` started (10 ms resolution), from /proc/uptime and its start time."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - int(fields[19]) / CLK_TCK


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PodCgroup:
    """One pod's cgroup directories in the memory and cpuacct hierarchies (cgroup v1, cgroupfs driver)."""

    # <root>/kubepods/pod<uid> (Guaranteed) or <root>/kubepods/<burstable|besteffort>/pod<uid>
    PATTERNS = ("*/kubepods/pod{uid}", "*/kubepods/*/pod{uid}", "kubepods/pod{uid}", "kubepods/*/pod{uid}")

    def __init__(self, memory: Path, cpuacct: Path) -> None:
        self.memory_dir = memory
        self.cpuacct_dir = cpuacct

    @classmethod
    def find(cls, uid: str) -> PodCgroup | None:
        found: dict[str, Path] = {}
        for controller in ("memory", "cpuacct"):
            for pattern in cls.PATTERNS:
                hits = sorted((CGROUP_BASE / controller).glob(pattern.format(uid=uid)))
                if hits:
                    found[controller] = hits[0]
                    break
        if len(found) < 2:
            return None
        return cls(found["memory"], found["cpuacct"])

    def pids(self, container_id: str | None = None) -> list[int]:
        """Processes of one container (its cgroup is named by its ID), or of the whole pod (with pause)."""
        try:
            dirs = [self.memory_dir / container_id] if container_id else list(self.memory_dir.iterdir())
        except OSError:
            return []
        pids: list[int] = []
        for directory in dirs:
            try:
                pids += [int(pid) for pid in (directory / "cgroup.procs").read_text().split()]
            except (OSError, NotADirectoryError):
                continue
        return pids

    def memory(self) -> dict[str, float]:
        """The pod's anonymous memory (total_rss), usage - page cache, in MiB."""
        stat = {}
        for line in (self.memory_dir / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            stat[key] = int(value)
        usage = int((self.memory_dir / "memory.usage_in_bytes").read_text())
        return {
            "rss_mib": stat["total_rss"] / MIB,
            "usage_minus_cache_mib": (usage - stat["total_cache"]) / MIB,
            "cache_mib": stat["total_cache"] / MIB,
        }

    def cpu_seconds(self) -> float:
        """CPU time consumed by the pod so far (cpuacct.usage, all its containers, exited processes too)."""
        return int((self.cpuacct_dir / "cpuacct.usage").read_text()) / 1e9


# ---- Kubernetes ---------------------------------------------------------------------------------------
def _kube() -> tuple[Any, Any, Any]:
    from kubernetes import client, config

    config.load_kube_config(config_file=os.environ["KUBECONFIG"])
    return client.CoreV1Api(), client.AppsV1Api(), client.BatchV1Api()


def _plain(obj: Any) -> Any:
    """A Kubernetes client model as the plain (camelCase) dictionary the API takes."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def _not_found(err: Exception) -> bool:
    return getattr(err, "status", None) == 404


# ---- the servers --------------------------------------------------------------------------------------
class PodServer:
    """A Deployment of one MLflow pod in ``namespace``: scaled 0 -> 1 and back, measured by its pod cgroup."""

    name = ""
    deployment = ""
    service = ""
    selector = ""

    def __init__(self, namespace: str) -> None:
        self.core, self.apps, self.batch = _kube()
        self.namespace = namespace
        self.host, self.port = "", 0  # the Service ClusterIP and port: what the loads use
        self.pod_name = ""
        self.pod_ip = ""
        self.container_id = ""
        self.cgroup: PodCgroup | None = None
        self.root_pid: int | None = None
        self.scaled_at = 0.0  # time.monotonic() of the last scale 0 -> 1

    # -- what the benchmark reads
    def cpu_seconds(self) -> float:
        if self.cgroup is None:
            raise BenchError(f"{self.name}: no pod cgroup (the server is not started)")
        return self.cgroup.cpu_seconds()

    def memory(self) -> dict[str, Any]:
        """Memory of the pod's cgroup, PSS summed over its processes, processes of the MLflow container."""
        if self.cgroup is None:
            raise BenchError(f"{self.name}: no pod cgroup (the server is not started)")
        mem: dict[str, Any] = self.cgroup.memory()
        mem["pss_mib"] = sum(_pss_kb(pid) for pid in self.cgroup.pids()) / 1024
        mem["processes"] = len(self.cgroup.pids(self.container_id))
        return mem

    def version(self) -> str:
        """What the running server's /version says (the MLflow version)."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/version", timeout=5) as response:
                return response.read().decode().strip()
        except OSError:
            return "?"

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- Kubernetes objects
    def service_address(self) -> tuple[str, int]:
        svc = self.core.read_namespaced_service(self.service, self.namespace)
        ports = svc.spec.ports or []
        port = next((p for p in ports if p.name == "http"), ports[0] if ports else None)
        if not svc.spec.cluster_ip or svc.spec.cluster_ip == "None" or port is None:
            raise BenchError(f"Service {self.namespace}/{self.service} has no ClusterIP or port")
        return str(svc.spec.cluster_ip), int(port.port)

    def _pods(self) -> list[Any]:
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items)

    def _scale(self, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(self.deployment, self.namespace, {"spec": {"replicas": replicas}})

    def _container_port(self) -> int:
        deployment = self.apps.read_namespaced_deployment(self.deployment, self.namespace)
        container = next(c for c in deployment.spec.template.spec.containers if c.name == CONTAINER)
        return int(next((p.container_port for p in container.ports or [] if p.name == "http"), 5000))

    @staticmethod
    def _container_status(pod: Any) -> Any:
        return next((s for s in pod.status.container_statuses or [] if s.name == CONTAINER), None)

    def _check(self, pod: Any) -> None:
        """Fail at once when the pod cannot become healthy (crash, restart, image, config)."""
        status = self._container_status(pod)
        problem = ""
        if pod.status.phase == "Failed":
            problem = f"pod phase Failed ({pod.status.reason or ''})"
        elif status is not None:
            if status.state.waiting and status.state.waiting.reason in BAD_WAITING:
                problem = f"{status.state.waiting.reason}: {status.state.waiting.message or ''}"
            elif status.state.terminated:
                problem = f"container exited with {status.state.terminated.exit_code}"
            elif status.restart_count:
                problem = f"container restarted {status.restart_count} times"
        if problem:
            log = self.save_logs(previous=bool(status and status.restart_count))
            raise BenchError(f"{self.name}: pod {pod.metadata.name}: {problem}; log {log}")

    @staticmethod
    def _pending_reason(pod: Any | None) -> str:
        if pod is None:
            return "no pod"
        notes = [f"phase {pod.status.phase}"]
        notes += [
            f"{c.type}={c.status} {c.reason or ''} {c.message or ''}".strip() for c in pod.status.conditions or []
        ]
        return "; ".join(notes)

    def save_logs(self, previous: bool = False) -> Path | None:
        """Append the MLflow container's log to .local/bench/logs/<name>-server.log (private)."""
        if not self.pod_name:
            return None
        path = OUT_DIR / "logs" / f"{self.name}-server.log"
        try:
            text = self.core.read_namespaced_pod_log(
                self.pod_name, self.namespace, container=CONTAINER, previous=previous, limit_bytes=64 * MIB
            )
        except Exception as err:  # noqa: BLE001 - a missing log must not hide the real problem
            text = f"(no log: {err})\n"
        # The benchmark's own successful requests are most of it: count them instead.
        lines = text.splitlines()
        kept = [line for line in lines if not ACCESS_OK.search(line)]
        if len(kept) < len(lines):
            kept.append(f"({len(lines) - len(kept)} access-log lines of 2xx answers left out)")
        text = "\n".join(kept)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as log:
            log.write(f"===== {self.pod_name} {'(previous container)' if previous else ''}\n{text}\n")
        return path

    # -- start and stop
    def request_stop(self) -> None:
        """Scale to 0 (keeping the server's log first); wait_stopped() waits for the pod to go."""
        if self.pod_name:
            self.save_logs()
        try:
            self._scale(0)
        except Exception as err:
            if not _not_found(err):
                raise

    def wait_stopped(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._pods():
                self.pod_name, self.pod_ip, self.container_id = "", "", ""
                self.cgroup, self.root_pid = None, None
                return
            time.sleep(0.5)
        raise BenchError(f"the {self.namespace}/{self.deployment} pod did not go away within {timeout:.0f} s")

    def stop(self) -> None:
        self.request_stop()
        self.wait_stopped()

    def _attach(self, pod: Any) -> None:
        """The pod's cgroup and the MLflow container's root process (its oldest), once it runs."""
        status = self._container_status(pod)
        if status is None or not status.container_id or not status.state.running:
            return
        container_id = status.container_id.split("://", 1)[-1]
        cgroup = PodCgroup.find(pod.metadata.uid)
        if cgroup is None:
            return
        started = {pid: fields[19] for pid in cgroup.pids(container_id) if (fields := _stat_fields(pid))}
        if not started:
            return
        self.cgroup, self.container_id = cgroup, container_id
        self.root_pid = min(started, key=lambda pid: (int(started[pid]), pid))

    def start(self, timeout: float = 300) -> dict[str, float | None]:
        """Scale 0 -> 1; time until the pod IP answers /health, and until the Service ClusterIP does."""
        self.host, self.port = self.service_address()
        pod_port = self._container_port()
        started = self.scaled_at = time.monotonic()
        self._scale(1)
        pod: Any | None = None
        pod_health_at: float | None = None
        service_health_at: float | None = None
        age_at_health: float | None = None
        last_listed = 0.0
        while True:
            now = time.monotonic()
            if now - started > timeout:
                raise BenchError(
                    f"{self.name}: the {self.namespace}/{self.deployment} pod did not answer /health within "
                    f"{timeout:.0f} s ({self._pending_reason(pod)}); log {self.save_logs()}"
                )
            if now - last_listed >= (0.25 if self.root_pid is None else 2.0):
                last_listed = now
                live = [p for p in self._pods() if p.metadata.deletion_timestamp is None]
                pod = max(live, key=lambda p: p.metadata.creation_timestamp) if live else None
                if pod is not None:
                    self.pod_name, self.pod_ip = pod.metadata.name, pod.status.pod_ip or ""
                    self._check(pod)
                    if self.root_pid is None:
                        self._attach(pod)
            if self.pod_ip and pod_health_at is None:
                if http_status(f"http://{self.pod_ip}:{pod_port}/health", timeout=0.5) == 200:
                    pod_health_at = time.monotonic()
            if pod_health_at is not None and self.root_pid is None and time.monotonic() - pod_health_at > 30:
                uid = pod.metadata.uid if pod is not None else "?"
                raise BenchError(
                    f"{self.name}: no cgroup of pod {self.pod_name} (pod{uid}) with the container's processes "
                    f"under {CGROUP_BASE}/{{memory,cpuacct}}/.../kubepods (cgroup v1 and the cgroupfs driver expected)"
                )
            if pod_health_at is not None and self.root_pid is not None and age_at_health is None:
                age = process_age(self.root_pid)
                age_at_health = None if age is None else age - (time.monotonic() - pod_health_at)
            if pod_health_at is not None and service_health_at is None:
                if http_status(f"http://{self.host}:{self.port}/health", timeout=0.5) == 200:
                    service_health_at = time.monotonic()
            if pod_health_at is not None and service_health_at is not None and age_at_health is not None:
                break
            time.sleep(0.1)
        return {
            "start_to_health_s": age_at_health,
            "scale_to_pod_health_s": pod_health_at - started,
            "scale_to_service_health_s": service_health_at - started,
        }

    def _describe(self, deployment: Any, extra: dict[str, Any]) -> dict[str, Any]:
        container = next(c for c in deployment.spec.template.spec.containers if c.name == CONTAINER)
        resources = container.resources.to_dict() if container.resources else {}
        host, port = self.service_address()
        return {
            "command": list(container.command or []) + list(container.args or []),
            "image": container.image,
            "resources": {key: value for key, value in resources.items() if value},
            "address": f"Service ClusterIP {host}:{port}",
            **extra,
        }


class Ours(PodServer):
    """The collection's Deployment ``mlflow`` in the bench namespace, as rendered."""

    name = "ours"
    deployment = "mlflow"
    service = "mlflow"
    selector = "app.kubernetes.io/name=mlflow,app.kubernetes.io/component=server"

    def read(self) -> Any:
        return self.apps.read_namespaced_deployment(self.deployment, self.namespace)

    def describe(self) -> dict[str, Any]:
        deployment = self.read()
        container = next(c for c in deployment.spec.template.spec.containers if c.name == CONTAINER)
        env = {item.name: item.value for item in container.env or [] if item.value is not None}
        args = list(container.args or [])
        workers = next((arg.split("=", 1)[1] for arg in args if arg.startswith("--workers=")), "4")
        return self._describe(
            deployment,
            {
                "workers": workers,
                "job_execution": "off" if env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") == "false" else "on",
            },
        )


def image_of(namespace: str) -> str:
    """The image of the bench deployment's MLflow container (``?`` when it is not deployed)."""
    try:
        deployment = Ours(namespace).read()
    except Exception:  # noqa: BLE001 - only for the report's header
        return "?"
    return str(next(c.image for c in deployment.spec.template.spec.containers if c.name == CONTAINER))


class DefaultsResources:
    """The defaults server's database, role and bucket, created as the PostgreSQL and S3 admin."""

    db = "mlflow_bench_defaults"
    role = "mlflow_bench_defaults"
    bucket = "mlflow-bench-defaults"

    def __init__(self) -> None:
        self.password = ""

    def uri(self, host: str, port: str) -> str:
        """The store URI as the pods use it (percent-encoded credentials; only ever in a Secret)."""
        user = urllib.parse.quote(self.role, safe="")
        password = urllib.parse.quote(self.password, safe="")
        return f"postgresql+psycopg2://{user}:{password}@{host}:{port}/{self.db}?sslmode=disable"

    def create(self) -> None:
        self.drop()
        self.password = secrets.token_urlsafe(24)
        conn = pg_admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE ROLE "{self.role}" LOGIN PASSWORD %s', (self.password,))
                cur.execute(f'CREATE DATABASE "{self.db}" OWNER "{self.role}"')
        finally:
            conn.close()
        s3_client().create_bucket(Bucket=self.bucket)

    def drop(self) -> None:
        conn = pg_admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
                cur.execute(f'DROP ROLE IF EXISTS "{self.role}"')
        finally:
            conn.close()
        purge_bucket(self.bucket)

    def leftovers(self) -> list[str]:
        from botocore.exceptions import ClientError

        found = []
        conn = pg_admin()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.db,))
                found += [f"database {self.db}"] if cur.fetchall() else []
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.role,))
                found += [f"role {self.role}"] if cur.fetchall() else []
        finally:
            conn.close()
        try:
            s3_client().head_bucket(Bucket=self.bucket)
            found.append(f"bucket {self.bucket}")
        except ClientError:
            pass
        return found


def purge_bucket(bucket: str) -> None:
    """Delete every object of ``bucket``, then the bucket; nothing when it does not exist."""
    from botocore.exceptions import ClientError

    s3 = s3_client()
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        return
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


# Restricted Pod Security, as the collection's pods have it.
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
DEFAULTS_MEMORY_LIMIT = "6Gi"  # MLflow's defaults use ~3 GB idle; the limit is only a safety net
TMP_DIR = "/tmp"  # noqa: S108 - the pod's own emptyDir


class Defaults(PodServer):
    """``mlflow server`` with MLflow's defaults, in a Deployment the benchmark creates beside ours.

    Only the address, the store (MLFLOW_BACKEND_STORE_URI, the --backend-store-uri option's environment
    variable, from a Secret), the artifact destination and the allowed hosts are set; everything else is
    MLflow's default (4 uvicorn workers, job runner on). The pod around it is ours' (image, pull secret,
    probes, CPU limit, security context), so only the server settings differ.
    """

    name = "defaults"
    deployment = "mlflow-defaults"
    service = "mlflow-defaults"
    secret_name = "mlflow-defaults"  # noqa: S105 - a Secret's name, not a password
    job = "mlflow-defaults-db-upgrade"
    selector = "app.kubernetes.io/name=mlflow-defaults,app.kubernetes.io/component=server"
    labels = {"app.kubernetes.io/name": "mlflow-defaults", "app.kubernetes.io/part-of": "mlflow-bench"}

    def __init__(self, namespace: str, resources: DefaultsResources) -> None:
        super().__init__(namespace)
        self.resources = resources
        self.created = False

    def args(self, cluster_ip: str, port: int) -> list[str]:
        names = [self.service, f"{self.service}.{self.namespace}", f"{self.service}.{self.namespace}.svc"]
        hosts = [f"{cluster_ip}:{port}", cluster_ip, *[f"{name}:{port}" for name in names], f"localhost:{port}"]
        return [
            "--host=0.0.0.0",
            f"--port={port}",
            f"--artifacts-destination=s3://{self.resources.bucket}/artifacts",
            f"--allowed-hosts={','.join(hosts)}",
        ]

    def _ours_pod(self) -> tuple[Any, Any, dict[str, str]]:
        """Ours' pod spec and container, and where its pods reach PostgreSQL and S3."""
        spec = Ours(self.namespace).read().spec.template.spec
        container = next(c for c in spec.containers if c.name == CONTAINER)
        env = {item.name: item for item in container.env or []}
        where = {
            "pg_host": POD_PG_HOST,
            "pg_port": POD_PG_PORT,
            "s3": getattr(env.get("MLFLOW_S3_ENDPOINT_URL"), "value", None) or POD_S3_ENDPOINT,
            "region": getattr(env.get("AWS_DEFAULT_REGION"), "value", None) or os.environ.get("S3_REGION", "us-east-1"),
        }
        store = env.get("MLFLOW_BACKEND_STORE_URI")
        ref = store.value_from.secret_key_ref if store and store.value_from else None
        if ref is not None:
            import base64

            data = self.core.read_namespaced_secret(ref.name, self.namespace).data or {}
            if data.get("host"):
                where["pg_host"] = base64.b64decode(data["host"]).decode()
            if data.get("port"):
                where["pg_port"] = base64.b64decode(data["port"]).decode()
        return spec, container, where

    def create(self, timeout: float = 300) -> None:
        """Database, role and bucket; Secret, Service, schema migration Job, and the Deployment at 0 replicas."""
        spec, container, where = self._ours_pod()
        self.resources.create()
        self.created = True
        meta = {"namespace": self.namespace, "labels": self.labels}
        self.core.create_namespaced_secret(
            self.namespace,
            {
                "metadata": {"name": self.secret_name, **meta},
                "type": "Opaque",
                "stringData": {
                    "MLFLOW_BACKEND_STORE_URI": self.resources.uri(where["pg_host"], where["pg_port"]),
                    "AWS_ACCESS_KEY_ID": os.environ["S3_ACCESS_KEY"],
                    "AWS_SECRET_ACCESS_KEY": os.environ["S3_SECRET_KEY"],
                },
            },
        )
        port = int(next((p.container_port for p in container.ports or [] if p.name == "http"), 5000))
        selector = {**self.labels, "app.kubernetes.io/component": "server"}
        self.core.create_namespaced_service(
            self.namespace,
            {
                "metadata": {"name": self.service, **meta},
                "spec": {
                    "type": "ClusterIP",
                    "selector": selector,
                    "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
                },
            },
        )
        cluster_ip, service_port = self.service_address()

        def secret_env(key: str) -> dict[str, Any]:
            return {"name": key, "valueFrom": {"secretKeyRef": {"name": self.secret_name, "key": key}}}

        env = [
            secret_env("MLFLOW_BACKEND_STORE_URI"),
            secret_env("AWS_ACCESS_KEY_ID"),
            secret_env("AWS_SECRET_ACCESS_KEY"),
            {"name": "MLFLOW_S3_ENDPOINT_URL", "value": where["s3"]},
            {"name": "AWS_DEFAULT_REGION", "value": where["region"]},
        ]
        pod_common = {
            # A Service named mlflow in the namespace would inject MLFLOW_PORT=tcp://..., read as the port.
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "securityContext": POD_SECURITY,
            "imagePullSecrets": [_plain(s) for s in spec.image_pull_secrets or []],
        }
        ours_resources = _plain(container.resources) or {}
        limits = {"memory": DEFAULTS_MEMORY_LIMIT}
        if (ours_resources.get("limits") or {}).get("cpu"):
            limits["cpu"] = ours_resources["limits"]["cpu"]
        self._migrate(container.image, env[:1], pod_common, timeout)
        server = {
            "name": CONTAINER,
            "image": container.image,
            "imagePullPolicy": container.image_pull_policy or "IfNotPresent",
            "command": ["mlflow", "server"],
            "args": self.args(cluster_ip, service_port),
            "env": env,
            "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
            "resources": {"requests": ours_resources.get("requests") or {"cpu": "100m"}, "limits": limits},
            "securityContext": CONTAINER_SECURITY,
            "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR}],
            **{
                key: _plain(getattr(container, attr))
                for key, attr in (
                    ("startupProbe", "startup_probe"),
                    ("readinessProbe", "readiness_probe"),
                    ("livenessProbe", "liveness_probe"),
                )
                if getattr(container, attr) is not None
            },
        }
        self.apps.create_namespaced_deployment(
            self.namespace,
            {
                "metadata": {"name": self.deployment, **meta},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": selector},
                    "strategy": {"type": "Recreate"},
                    "template": {
                        "metadata": {"labels": selector},
                        "spec": {
                            **pod_common,
                            "terminationGracePeriodSeconds": spec.termination_grace_period_seconds or 30,
                            "containers": [server],
                            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
                        },
                    },
                },
            },
        )

    def _migrate(self, image: str, env: list[dict[str, Any]], pod_common: dict[str, Any], timeout: float) -> None:
        """Create the schema first, as our migration Job does, so no timed start includes a migration."""
        say(f"server: defaults: migrating the schema of {self.resources.db} (Job {self.job})")
        code = (
            "import os\nfrom mlflow.db import upgrade\n"
            "upgrade.main([os.environ['MLFLOW_BACKEND_STORE_URI']], prog_name='mlflow db upgrade')\n"
        )
        labels = {**self.labels, "app.kubernetes.io/component": "db-migration"}
        self.batch.create_namespaced_job(
            self.namespace,
            {
                "metadata": {"name": self.job, "namespace": self.namespace, "labels": labels},
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": int(timeout),
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            **pod_common,
                            "restartPolicy": "Never",
                            "containers": [
                                {
                                    "name": "db-upgrade",
                                    "image": image,
                                    "command": ["python", "-c", code],
                                    "env": env,
                                    "resources": {
                                        "requests": {"cpu": "100m", "memory": "256Mi"},
                                        "limits": {"cpu": "1", "memory": "1Gi"},
                                    },
                                    "securityContext": CONTAINER_SECURITY,
                                    "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR}],
                                }
                            ],
                            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                        },
                    },
                },
            },
        )
        deadline = time.monotonic() + timeout + 30
        while time.monotonic() < deadline:
            status = self.batch.read_namespaced_job_status(self.job, self.namespace).status
            if status.succeeded:
                return
            if status.failed:
                break
            time.sleep(1)
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"job-name={self.job}").items
        tail = ""
        if pods:
            try:
                tail = self.core.read_namespaced_pod_log(pods[0].metadata.name, self.namespace, tail_lines=15)
            except Exception as err:  # noqa: BLE001 - the failure is reported either way
                tail = f"(no log: {err})"
        raise BenchError(f"the schema migration Job {self.job} did not succeed: {tail.strip()[-1500:]}")

    def describe(self) -> dict[str, Any]:
        deployment = self.apps.read_namespaced_deployment(self.deployment, self.namespace)
        return self._describe(
            deployment,
            {
                "workers": "4",
                "job_execution": "on",
                "env": "MLFLOW_BACKEND_STORE_URI, AWS_* from Secret mlflow-defaults; MLFLOW_S3_ENDPOINT_URL",
            },
        )


def start_timed(server: PodServer, what: str) -> dict[str, float | None]:
    say(f"server: starting {server.name} ({what}): scaling {server.namespace}/{server.deployment} 0 -> 1")
    with Ticker(f"starting {server.name}", detail=lambda: server.pod_name or "no pod yet"):
        result = server.start()
    parts = ", ".join(f"{key.removesuffix('_s')} {value:.1f} s" for key, value in result.items() if value is not None)
    say(f"server: {server.name} answers /health: {parts}")
    return result
