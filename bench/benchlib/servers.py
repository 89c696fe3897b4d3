"""The two MLflow servers under test, how they start, and what their process trees cost.

* ``ours``: the bench deployment's pod, run by the pod runner exactly as the collection renders it.
  Started by scaling the Deployment 0 -> 1; its processes are found through the pod status
  (``containerID: mlstack://<pid>``), and it is loaded at its pod address (or its Service address).
* ``defaults``: a plain ``mlflow server`` from the same MLflow venv the runner uses, with MLflow's
  defaults, on its own database and bucket of the same PostgreSQL and S3.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from .common import OUT_DIR, REPO, STATE, BenchError, http_status, pg_admin, s3_client, say

SELECTOR = "app.kubernetes.io/name=mlflow,app.kubernetes.io/component=server"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# ---- /proc ------------------------------------------------------------------------------------------
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


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants (by parent PID), zombies excluded."""
    children: dict[int, list[int]] = {}
    alive: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or fields[0] == "Z":
            continue
        alive.add(int(entry.name))
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in alive:
            tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (a container's or our server's session)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(root: int) -> dict[str, Any]:
    """Sum of VmRSS and of PSS over the process tree, in MiB, and the number of processes."""
    pids = process_tree(root)
    return {
        "rss_mib": sum(_status_kb(pid, "VmRSS") for pid in pids) / 1024,
        "pss_mib": sum(_pss_kb(pid) for pid in pids) / 1024,
        "processes": len(pids),
    }


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds consumed so far by the live processes of the tree."""
    total = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _running_runner_venv() -> Path | None:
    """The ``--mlflow-venv`` of the running pod runner daemon (its PID file is .local/pids/runner.json)."""
    try:
        record = json.loads((STATE / "pids" / "runner.json").read_text())
        pid = int(record["pid"])
        fields = _stat_fields(pid)
        if fields is None or fields[19] != str(record.get("start_time")):
            return None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except (OSError, ValueError, KeyError):
        return None
    if "--mlflow-venv" in argv[:-1]:
        return Path(argv[argv.index("--mlflow-venv") + 1])
    return None


def mlflow_venv() -> Path:
    """The MLflow venv the pod runner runs MLflow pods with.

    That of the running daemon when there is one (it keeps the venv it was started with), otherwise the
    one the runner would pick: ``<cache>/venvs/mlflow-<hash of images/mlflow/requirements.txt>``.
    """
    venv = _running_runner_venv()
    if venv is None:
        sys.path.insert(0, str(REPO / "hack"))
        try:
            from mlstack_local.config import default_paths
            from mlstack_local.podrunner.images import requirements_hash
            from mlstack_local.runner import REQUIREMENTS
        finally:
            sys.path.pop(0)
        venv = default_paths().cache / "venvs" / f"mlflow-{requirements_hash(REQUIREMENTS)}"
    if not (venv / "bin" / "mlflow").exists():
        raise BenchError(f"the MLflow runtime venv {venv} is missing (make up builds it)")
    return venv


# ---- the servers --------------------------------------------------------------------------------------
class Server:
    """What the benchmark needs from a server under test."""

    name = ""
    host = ""
    port = 0
    root_pid: int | None = None

    def start(self, timeout: float) -> dict[str, float | None]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def _health_url(self) -> str:
        return f"http://{self.host}:{self.port}/health"


class Ours(Server):
    """The collection's deployment in ``namespace``, run by the pod runner."""

    name = "ours"

    def __init__(self, namespace: str, via_service: bool = False) -> None:
        from kubernetes import client, config

        config.load_kube_config(config_file=os.environ["KUBECONFIG"])
        self.core = client.CoreV1Api()
        self.apps = client.AppsV1Api()
        self.namespace = namespace
        self.via_service = via_service
        self.pod_host = ""
        self.pod_port = 5000

    def _service(self) -> tuple[str, int]:
        services = json.loads(Path(os.environ["RUNNER_SERVICES"]).read_text())
        entry = services.get(f"{self.namespace}/mlflow")
        if not entry:
            raise BenchError(
                f"no runner Service address for {self.namespace}/mlflow in {os.environ['RUNNER_SERVICES']}"
            )
        return str(entry["address"]), int(entry["ports"].get("http", next(iter(entry["ports"].values()))))

    def _pods(self) -> list[Any]:
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=SELECTOR).items)

    def _scale(self, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale("mlflow", self.namespace, {"spec": {"replicas": replicas}})

    def describe(self) -> dict[str, Any]:
        deployment = self.apps.read_namespaced_deployment("mlflow", self.namespace)
        container = deployment.spec.template.spec.containers[0]
        env = {item.name: item.value for item in container.env or [] if item.value is not None}
        args = list(container.args or [])
        workers = next((arg.split("=", 1)[1] for arg in args if arg.startswith("--workers=")), "4")
        resources = container.resources.to_dict() if container.resources else {}
        return {
            "command": list(container.command or []) + args,
            "workers": workers,
            "job_execution": "off" if env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") == "false" else "on",
            "resources": {key: value for key, value in resources.items() if value},
            "address": "Service (runner proxy)" if self.via_service else "pod IP (no proxy)",
        }

    def stop(self, timeout: float = 180) -> None:
        self._scale(0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._pods() and (self.root_pid is None or not group_members(self.root_pid)):
                self.root_pid = None
                return
            time.sleep(0.5)
        raise BenchError(f"the {self.namespace} MLflow pod did not go away within {timeout:.0f} s")

    def start(self, timeout: float = 300) -> dict[str, float | None]:
        """Scale 0 -> 1; time until the pod answers /health, and until the Service does."""
        service = self._service()
        started = time.monotonic()
        self._scale(1)
        pod_ready_at: float | None = None
        service_ready_at: float | None = None
        age: float | None = None
        pod_host = ""
        last_listed = 0.0
        while time.monotonic() - started < timeout:
            now = time.monotonic()
            if self.root_pid is None and now - last_listed > 0.25:
                last_listed = now
                for pod in self._pods():
                    statuses = pod.status.container_statuses or []
                    container_id = statuses[0].container_id if statuses else None
                    if pod.status.pod_ip and container_id and container_id.startswith("mlstack://"):
                        pod_host = pod.status.pod_ip
                        self.root_pid = int(container_id.removeprefix("mlstack://"))
            if self.root_pid is not None and pod_ready_at is None:
                if http_status(f"http://{pod_host}:{self.pod_port}/health") == 200:
                    pod_ready_at = time.monotonic()
                    age = process_age(self.root_pid)
            if pod_ready_at is not None and service_ready_at is None:
                if http_status(f"http://{service[0]}:{service[1]}/health") == 200:
                    service_ready_at = time.monotonic()
            if pod_ready_at is not None and service_ready_at is not None:
                break
            time.sleep(0.1)
        else:
            raise BenchError(f"the {self.namespace} MLflow pod did not answer /health within {timeout:.0f} s")
        self.pod_host = pod_host
        self.host, self.port = service if self.via_service else (pod_host, self.pod_port)
        return {
            "start_to_health_s": age,
            "scale_to_pod_health_s": (pod_ready_at - started) if pod_ready_at else None,
            "scale_to_service_health_s": (service_ready_at - started) if service_ready_at else None,
        }


class DefaultsResources:
    """The database and bucket of the defaults server, created as the PostgreSQL and S3 admin."""

    db = "mlflow_bench_defaults"
    bucket = "mlflow-bench-defaults"

    def uri(self) -> str:
        user = urllib.parse.quote(os.environ["PGUSER"], safe="")
        password = urllib.parse.quote(os.environ["PGPASSWORD"], safe="")
        host, port = os.environ["PGHOST"], os.environ["PGPORT"]
        return f"postgresql+psycopg2://{user}:{password}@{host}:{port}/{self.db}?sslmode=disable"

    def create(self) -> None:
        self.drop()
        conn = pg_admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{self.db}"')
        finally:
            conn.close()
        s3_client().create_bucket(Bucket=self.bucket)

    def drop(self) -> None:
        conn = pg_admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        finally:
            conn.close()
        purge_bucket(self.bucket)


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


class Defaults(Server):
    """``mlflow server`` with MLflow's defaults: only the store, the artifact destination and the address."""

    name = "defaults"

    def __init__(self, venv: Path, resources: DefaultsResources) -> None:
        self.venv = venv
        self.resources = resources
        self.host = "127.0.0.1"
        self.port = free_port()
        self.workdir = OUT_DIR / "defaults"
        self.log = OUT_DIR / "logs" / "defaults-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [
            str(self.venv / "bin" / "mlflow"),
            "server",
            f"--artifacts-destination=s3://{self.resources.bucket}/",
            f"--host={self.host}",
            f"--port={self.port}",
        ]

    def env(self) -> dict[str, str]:
        """A minimal environment like the runner's, with the store and S3 settings.

        The store URI goes in MLFLOW_BACKEND_STORE_URI (the option's environment variable, also what our
        Deployment uses) so the admin password is not on a command line.
        """
        return {
            "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.workdir / "home"),
            "TMPDIR": str(self.workdir / "tmp"),
            "LANG": "C.UTF-8",
            "MLFLOW_BACKEND_STORE_URI": self.resources.uri(),
            "AWS_ACCESS_KEY_ID": os.environ["S3_ACCESS_KEY"],
            "AWS_SECRET_ACCESS_KEY": os.environ["S3_SECRET_KEY"],
            "AWS_DEFAULT_REGION": os.environ.get("S3_REGION", "us-east-1"),
            "MLFLOW_S3_ENDPOINT_URL": os.environ["S3_ENDPOINT_URL"],
        }

    def describe(self) -> dict[str, Any]:
        return {
            "command": [*self.argv(), "(MLFLOW_BACKEND_STORE_URI in the environment)"],
            "workers": "4",
            "job_execution": "on",
            "resources": {},
            "address": f"{self.host}:{self.port}",
        }

    def migrate(self) -> None:
        """Create the schema first, as our migration Job does, so no start includes a migration."""
        for sub in ("home", "tmp"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        code = (
            "import os\nfrom mlflow.db import upgrade\n"
            "upgrade.main([os.environ['MLFLOW_BACKEND_STORE_URI']], prog_name='mlflow db upgrade')\n"
        )
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            done = subprocess.run(
                [str(self.venv / "bin" / "python"), "-c", code],
                env=self.env(),
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            raise BenchError(f"mlflow db upgrade of {self.resources.db} failed; see {self.log}")

    def start(self, timeout: float = 300) -> dict[str, float | None]:
        for sub in ("home", "tmp"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                env=self.env(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.root_pid = self.proc.pid
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise BenchError(f"mlflow server (defaults) exited with {self.proc.returncode}; see {self.log}")
            if http_status(self._health_url()) == 200:
                return {"start_to_health_s": process_age(self.proc.pid)}
            time.sleep(0.1)
        raise BenchError(f"mlflow server (defaults) did not answer /health within {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        """SIGTERM to its process group (it has its own session), SIGKILL after 30 s."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.proc.poll()
                if self.proc.returncode is not None and not group_members(pgid):
                    break
                time.sleep(0.2)
            if self.proc.returncode is not None and not group_members(pgid):
                break
        # Children re-parented to init after the main process exited: still in our process group.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None
        self.root_pid = None

    def cleanup_files(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_timed(server: Server, what: str) -> dict[str, float | None]:
    say(f"server: starting {server.name} ({what})")
    result = server.start()
    parts = ", ".join(f"{key.removesuffix('_s')} {value:.1f} s" for key, value in result.items() if value is not None)
    say(f"server: {server.name} answers /health: {parts}")
    return result
