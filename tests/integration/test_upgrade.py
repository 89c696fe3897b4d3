"""Day 2 on the real node with the two real images: upgrade MLflow 3.17.2 -> 3.18.0 with a verified backup,
a migration that fails on a held lock and is retried, a refused downgrade, a restore, scheduled backup and gc.

The tests run in order and share one deployment (basic auth, so a second user and a permission can be
made through MLflow's own API). Figures (backup, migration and rollout time, client-side downtime) are
printed, never asserted.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
from botocore.config import Config

from .conftest import Kubectl, changed_count, run_playbook, service_url, wait_for

NAME = "t9-upgrade"
OLD, NEW = "3.17.2", "3.18.0"
SCENARIO: dict[str, Any] = {
    "mlflow_namespace": NAME,
    "mlflow_hostname": f"{NAME}.mlstack.test",
    "mlflow_db_name": "mlflow_t9",
    "mlflow_auth_db_name": "mlflow_t9_auth",
    "mlflow_db_user": "mlflow_t9",
    "mlflow_artifacts_bucket": NAME,
    "mlflow_auth_mode": "basic",
    "mlflow_migration_lock_timeout": 5,
    "mlflow_backup_schedule": "17 3 * * *",
    "mlflow_backup_retention": 2,
    "mlflow_gc_schedule": "47 3 * * *",
    "mlflow_gc_older_than": "1s",
}
STATE: dict[str, Any] = {}


def image(version: str) -> str:
    return "{{ harbor_registry }}/{{ harbor_project }}/mlflow:" + version + "-mlstack.1"


def playbook(tmp_path: Path, name: str, *args: str, **extra: object) -> subprocess.CompletedProcess[str]:
    return run_playbook(tmp_path, name, {**SCENARIO, **extra}, *args, timeout=1200)


def said(result: subprocess.CompletedProcess[str], text: str) -> bool:
    """Whether the run printed ``text`` (the YAML callback folds long messages across lines)."""
    return " ".join(text.split()) in " ".join(result.stdout.split())


def s3(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_URL"],
        aws_access_key_id=env["S3_ACCESS_KEY"],
        aws_secret_access_key=env["S3_SECRET_KEY"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


def keys(env: dict[str, str], prefix: str) -> list[str]:
    listing = s3(env).list_objects_v2(Bucket=NAME, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def backups(env: dict[str, str]) -> list[str]:
    return sorted({key.split("/")[1] for key in keys(env, "backups/") if key.endswith("/manifest.json")})


def admin_db(env: dict[str, str], dbname: str) -> Any:
    return psycopg2.connect(
        host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], password=env["PGPASSWORD"], dbname=dbname
    )


def revision(env: dict[str, str], dbname: str, table: str) -> str:
    with admin_db(env, dbname) as conn, conn.cursor() as cursor:
        cursor.execute(f"select version_num from {table}")  # noqa: S608 - a fixed table name
        return cursor.fetchone()[0]


class Client:
    """MLflow's REST API and its Python client, as the platform admin or another user (basic auth)."""

    def __init__(self, env: dict[str, str], kubectl: Kubectl, user: str | None = None, password: str | None = None):
        self.url = service_url(kubectl, NAME)
        self.user = user or env["PLATFORM_ADMIN_USER"]
        self.password = password or env["ADMIN_PASSWORD"]

    def call(self, method: str, path: str, payload: dict | None = None) -> tuple[int, dict]:
        query = ""
        if method == "GET" and payload:
            query = "?" + "&".join(f"{k}={urllib.request.quote(str(v))}" for k, v in payload.items())
        request = urllib.request.Request(
            self.url + path + query,
            method=method,
            data=None if method == "GET" else json.dumps(payload or {}).encode(),
            headers={
                "Authorization": "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode(),
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                return response.status, json.loads(body) if body.strip().startswith(b"{") else {"text": body.decode()}
        except urllib.error.HTTPError as err:
            return err.code, {}

    def ok(self, method: str, path: str, payload: dict | None = None) -> dict:
        status, body = self.call(method, path, payload)
        assert status == 200, f"{method} {path} -> {status}"
        return body

    def environ(self) -> dict[str, str]:
        return {
            **os.environ,
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_USERNAME": self.user,
            "MLFLOW_TRACKING_PASSWORD": self.password,
            "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
        }

    def python(self, code: str) -> Any:
        result = subprocess.run(
            [sys.executable, "-c", code], env=self.environ(), capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout.strip().splitlines()[-1])


SEED = """
import json, mlflow, tempfile, pathlib
from mlflow import MlflowClient
c = MlflowClient()
out = {}
for name in ("t9-first", "t9-second"):
    exp = c.create_experiment(name)
    run = c.create_run(exp, tags={"team": "t9", "name": name})
    c.log_param(run.info.run_id, "alpha", "0.5")
    for step in range(3):
        c.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
    d = pathlib.Path(tempfile.mkdtemp()); (d / "model.txt").write_bytes(name.encode() * 1000)
    c.log_artifact(run.info.run_id, str(d / "model.txt"))
    c.set_terminated(run.info.run_id)
    out[name] = {"experiment": exp, "run": run.info.run_id}
c.create_registered_model("t9-model")
for key in ("t9-first", "t9-second"):
    c.create_model_version("t9-model", f"runs:/{out[key]['run']}/model.txt", run_id=out[key]["run"])
c.set_registered_model_alias("t9-model", "champion", "2")
print(json.dumps(out))
"""

SNAPSHOT = """
import json, mlflow, tempfile, os
from mlflow import MlflowClient
c = MlflowClient()
out = {"experiments": {}, "runs": {}}
for e in c.search_experiments():
    out["experiments"][e.name] = e.experiment_id
    for r in c.search_runs([e.experiment_id]):
        hist = [(m.step, m.value) for m in c.get_metric_history(r.info.run_id, "loss")]
        path = c.download_artifacts(r.info.run_id, "model.txt", tempfile.mkdtemp()) if r.data.params else None
        out["runs"][r.info.run_id] = {
            "params": r.data.params, "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")},
            "loss": hist, "artifact": open(path, "rb").read().decode() if path else None,
        }
m = c.get_registered_model("t9-model")
out["model"] = {"versions": sorted(v.version for v in c.search_model_versions("name='t9-model'")),
                "alias": m.aliases}
print(json.dumps(out))
"""


def grant(user: str, seeded: dict[str, str], permission: str = "") -> dict[str, str]:
    """A per-user permission on an experiment (MLflow 3.17+'s unified permission API)."""
    body = {"username": user, "resource_type": "experiment", "resource_id": seeded["experiment"]}
    return {**body, "permission": permission} if permission else body


class Watcher(threading.Thread):
    """Polls the MLflow Service and the server pods while an upgrade runs (the client's view)."""

    def __init__(self, kubectl: Kubectl, client: Client):
        super().__init__(daemon=True)
        self.kubectl, self.client, self.stop = kubectl, client, threading.Event()
        self.requests: list[tuple[float, bool]] = []
        self.pods: list[tuple[float, str, str]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            try:
                status, _ = self.client.call("GET", "/api/2.0/mlflow/experiments/search", {"max_results": 1})
                good = status == 200
            except OSError:
                good = False
            self.requests.append((now, good))
            for pod in items(self.kubectl, "pods", "-l", "app.kubernetes.io/component=server"):
                images = [c["image"] for c in pod["spec"]["containers"]]
                self.pods.append((now, pod["metadata"]["name"], images[0]))
            time.sleep(0.5)

    def downtime(self) -> float:
        first_bad = next((t for t, good in self.requests if not good), None)
        if first_bad is None:
            return 0.0
        first_good_after = next((t for t, good in self.requests if good and t > first_bad), None)
        return (first_good_after or self.requests[-1][0]) - first_bad


def kubectl_exec(kubectl: Kubectl, stdin: bytes, *command: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(  # noqa: S603
        [kubectl.binary, "--kubeconfig", kubectl.kubeconfig, "exec", "-i", "-n", NAME, "deploy/mlflow", "-c", "mlflow"]
        + ["--", *command],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=60,
    )


def items(kubectl: Kubectl, kind: str, *selector: str) -> list[dict]:
    return json.loads(kubectl.run("get", kind, "-n", NAME, *selector, "-o", "json").stdout)["items"]


def pod_image(pod_or_job: dict) -> str:
    return pod_or_job["spec"]["template"]["spec"]["containers"][0]["image"]


def job_seconds(job: dict) -> float:
    from datetime import datetime

    def parse(value: str) -> float:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

    return parse(job["status"]["completionTime"]) - parse(job["status"]["startTime"])


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("upgrade")


@pytest.fixture(scope="module")
def deployed(stack_env: dict[str, str], kubectl: Kubectl, tmp: Path):  # noqa: ANN201
    playbook(tmp, "playbooks/19_uninstall.yaml", mlflow_purge=True)
    result = playbook(tmp, "playbooks/11_deploy.yaml", mlflow_image=image(OLD))
    assert result.returncode == 0, result.stdout[-4000:]
    admin = Client(stack_env, kubectl)
    STATE["seed"] = admin.python(SEED)
    admin.ok("POST", "/api/2.0/mlflow/users/create", {"username": "t9-analyst", "password": "An@lyst pass 9"})
    admin.ok("POST", "/api/3.0/mlflow/users/permissions/grant", grant("t9-analyst", STATE["seed"]["t9-first"], "EDIT"))
    STATE["before"] = admin.python(SNAPSHOT)
    yield admin
    purged = playbook(tmp, "playbooks/19_uninstall.yaml", mlflow_purge=True)
    assert purged.returncode == 0, purged.stdout[-3000:]


def test_check_mode_reports_the_upgrade_and_changes_nothing(
    deployed: Client, kubectl: Kubectl, stack_env: dict[str, str], tmp: Path
) -> None:
    result = playbook(tmp, "playbooks/11_deploy.yaml", "--check", mlflow_image=image(NEW))
    assert result.returncode == 0, result.stdout[-4000:]
    assert said(result, f"Upgrade MLflow {OLD} -> {NEW}: back up the tracking")
    for step in ("Ensure the backup Job runs", "Stop every MLflow pod", "Ensure the migration Job runs"):
        assert any(step in line for line in result.stdout.split("TASK [")[1:] if "changed:" in line), step
    deployment = kubectl.get("deployment", "mlflow", NAME)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f"{OLD}-mlstack.1")
    assert deployment["spec"]["replicas"] == 1 and deployment["status"].get("readyReplicas") == 1
    assert backups(stack_env) == []
    assert items(kubectl, "jobs", "-l", "app.kubernetes.io/component=backup") == []


def test_upgrade_keeps_every_object_and_the_users_permission(
    deployed: Client, kubectl: Kubectl, stack_env: dict[str, str], tmp: Path
) -> None:
    watcher = Watcher(kubectl, deployed)
    watcher.start()
    started = time.monotonic()
    result = playbook(tmp, "playbooks/11_deploy.yaml", mlflow_image=image(NEW))
    wall = time.monotonic() - started
    time.sleep(2)
    watcher.stop.set()
    watcher.join()
    assert result.returncode == 0, result.stdout[-4000:]

    # A backup object exists and pg_restore can read it.
    names = backups(stack_env)
    assert len(names) == 1 and names[-1].endswith(f"-{OLD}-{NEW}"), names
    STATE["pre_upgrade_backup"] = names[-1]
    dump = s3(stack_env).get_object(Bucket=NAME, Key=f"backups/{names[-1]}/tracking.dump")["Body"].read()
    # The image's pg_restore (17) reads it; the host's (15) cannot read that archive version.
    listing = kubectl_exec(kubectl, dump, "pg_restore", "--list")
    assert listing.returncode == 0 and b"TABLE DATA public experiments" in listing.stdout, listing.stderr

    # No 3.17.2 pod existed once the migration Job started.
    migration = [
        job
        for job in items(kubectl, "jobs", "-l", "app.kubernetes.io/component=db-migration")
        if job["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f"{NEW}-mlstack.1")
    ][0]
    from datetime import datetime

    migration_start = datetime.fromisoformat(migration["status"]["startTime"].replace("Z", "+00:00")).timestamp()
    late_old = [pod for t, pod, img in watcher.pods if t >= migration_start and img.endswith(f"{OLD}-mlstack.1")]
    assert late_old == []
    assert any(img.endswith(f"{NEW}-mlstack.1") for _, _, img in watcher.pods)

    # Both databases at head: what the Job recorded is what the databases say.
    schema = kubectl.get("configmap", "mlflow-schema", NAME)["data"]
    assert schema["mlflow_version"] == NEW
    assert revision(stack_env, "mlflow_t9", "alembic_version") == schema["tracking_revision"]
    assert revision(stack_env, "mlflow_t9_auth", "alembic_version_auth") == schema["auth_revision"]
    assert deployed.ok("GET", "/version")["text"].strip() == NEW

    # Every object, with the same ids, values and artifact bytes; the user's permission holds.
    assert deployed.python(SNAPSHOT) == STATE["before"]
    analyst = Client(stack_env, kubectl, "t9-analyst", "An@lyst pass 9")
    first, second = STATE["seed"]["t9-first"]["experiment"], STATE["seed"]["t9-second"]["experiment"]
    permission = deployed.ok(
        "GET", "/api/3.0/mlflow/users/permissions/get", grant("t9-analyst", STATE["seed"]["t9-first"])
    )
    assert permission["permission"] == "EDIT" and permission["allowed"] is True
    assert (
        analyst.call("POST", "/api/2.0/mlflow/experiments/update", {"experiment_id": first, "new_name": "t9-first"})[0]
        == 200
    )
    renamed = {"experiment_id": second, "new_name": "t9-renamed"}
    assert analyst.call("POST", "/api/2.0/mlflow/experiments/update", renamed)[0] == 403
    # Deny by default (mlflow_basic_default_permission NO_PERMISSIONS): no grant, nothing to read.
    assert analyst.call("GET", "/api/2.0/mlflow/experiments/get", {"experiment_id": second})[0] == 403

    again = playbook(tmp, "playbooks/11_deploy.yaml", mlflow_image=image(NEW))
    assert again.returncode == 0 and changed_count(again.stdout) == 0, again.stdout[-3000:]

    jobs = {
        job["metadata"]["labels"]["app.kubernetes.io/component"]: job
        for job in items(kubectl, "jobs")
        if job["status"].get("succeeded")
    }
    print(
        f"\nUPGRADE {OLD}->{NEW}: playbook {wall:.1f}s; backup Job {job_seconds(jobs['backup']):.0f}s; "
        f"migration Job {job_seconds(jobs['db-migration']):.0f}s; client-side downtime {watcher.downtime():.1f}s "
        f"({len(watcher.requests)} requests)"
    )


def test_a_downgrade_below_the_schema_is_refused_before_any_change(
    deployed: Client, kubectl: Kubectl, tmp: Path
) -> None:
    result = playbook(tmp, "playbooks/11_deploy.yaml", mlflow_image=image(OLD))
    assert result.returncode != 0
    assert said(result, f"migrated by MLflow {NEW}") and said(result, "playbooks/20_restore.yaml")
    assert changed_count(result.stdout) == 0
    deployment = kubectl.get("deployment", "mlflow", NAME)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f"{NEW}-mlstack.1")
    assert deployment["status"].get("readyReplicas") == 1


def test_restore_brings_back_the_old_version_and_data(
    deployed: Client, kubectl: Kubectl, stack_env: dict[str, str], tmp: Path
) -> None:
    deployed.ok("POST", "/api/2.0/mlflow/experiments/create", {"name": "t9-after-upgrade"})
    missing = playbook(tmp, "playbooks/20_restore.yaml", mlflow_restore_backup="20000101T000000Z-none")
    assert missing.returncode != 0 and said(missing, "There is no backup '20000101T000000Z-none'")
    assert kubectl.get("deployment", "mlflow", NAME)["status"].get("readyReplicas") == 1

    result = playbook(tmp, "playbooks/20_restore.yaml", mlflow_image=image(NEW))
    assert result.returncode == 0, result.stdout[-4000:]
    assert said(result, f"Restore {STATE['pre_upgrade_backup']}")
    deployment = kubectl.get("deployment", "mlflow", NAME)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f"{OLD}-mlstack.1")
    wait_for("MLflow 3.17.2 answers", lambda: deployed.call("GET", "/version")[1].get("text", "").strip() == OLD)
    snapshot = deployed.python(SNAPSHOT)
    assert "t9-after-upgrade" not in snapshot["experiments"]
    assert snapshot == STATE["before"]

    again = playbook(tmp, "playbooks/20_restore.yaml", mlflow_image=image(NEW))
    assert again.returncode == 0 and changed_count(again.stdout) == 0, again.stdout[-3000:]
    assert said(again, "was restored already")


def test_a_migration_blocked_by_a_lock_stops_with_mlflow_down(
    deployed: Client, kubectl: Kubectl, stack_env: dict[str, str], tmp: Path
) -> None:
    old_revision = revision(stack_env, "mlflow_t9", "alembic_version")
    holder = admin_db(stack_env, "mlflow_t9")
    try:
        with holder.cursor() as cursor:
            # SHARE blocks the migration's writes to alembic_version but not pg_dump's reads.
            cursor.execute("LOCK TABLE alembic_version IN SHARE MODE")
            result = playbook(tmp, "playbooks/11_deploy.yaml", mlflow_image=image(NEW))
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode != 0
    assert said(result, "The schema migration Job") and said(result, "MLflow is stopped (0 pods)")
    assert said(result, "lock timeout")
    assert said(result, "playbooks/20_restore.yaml -e mlflow_restore_backup=")
    assert items(kubectl, "pods", "-l", "app.kubernetes.io/component=server") == []
    assert revision(stack_env, "mlflow_t9", "alembic_version") == old_revision
    assert len(backups(stack_env)) == 2

    # The lock is gone: the same run completes, with the data restored before.
    retried = playbook(tmp, "playbooks/11_deploy.yaml", mlflow_image=image(NEW))
    assert retried.returncode == 0, retried.stdout[-4000:]
    assert kubectl.get("configmap", "mlflow-schema", NAME)["data"]["mlflow_version"] == NEW
    assert deployed.ok("GET", "/version")["text"].strip() == NEW
    assert deployed.python(SNAPSHOT) == STATE["before"]
    assert len(backups(stack_env)) == 3


def test_scheduled_backup_and_gc_run_and_gc_frees_only_deleted_runs(
    deployed: Client, kubectl: Kubectl, stack_env: dict[str, str]
) -> None:
    kept_run = STATE["seed"]["t9-second"]["run"]
    doomed_run = STATE["seed"]["t9-first"]["run"]
    runs = {r: [k for k in keys(stack_env, "artifacts/") if f"/{r}/" in k] for r in (kept_run, doomed_run)}
    assert runs[kept_run] and runs[doomed_run]
    deployed.ok("POST", "/api/2.0/mlflow/runs/delete", {"run_id": doomed_run})
    time.sleep(2)  # older than mlflow_gc_older_than (1s)

    runs_of = (("mlflow-backup", "backup-1"), ("mlflow-backup", "backup-2"), ("mlflow-backup", "backup-3"))
    for cronjob, job in (*runs_of, ("mlflow-gc", "gc-1")):
        time.sleep(1)  # scheduled backups are named by the second
        kubectl.run("create", "job", "-n", NAME, job, f"--from=cronjob/{cronjob}")
        done = wait_for(
            f"{job} finished",
            lambda job=job: (
                kubectl.get("job", job, NAME)["status"].get("succeeded")
                or kubectl.get("job", job, NAME)["status"].get("failed")
            ),
            timeout=300,
            interval=2,
        )
        assert kubectl.get("job", job, NAME)["status"].get("succeeded") == 1, (job, done)
        pod_spec = kubectl.get("cronjob", cronjob, NAME)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod_spec["securityContext"]["runAsNonRoot"] is True
        assert all(c["resources"]["limits"] for c in pod_spec["containers"] + pod_spec.get("initContainers", []))

    scheduled = [name for name in backups(stack_env) if name.endswith("-scheduled")]
    assert len(scheduled) == 2  # mlflow_backup_retention: the oldest scheduled one is gone
    assert len([name for name in backups(stack_env) if not name.endswith("-scheduled")]) == 3  # upgrade ones stay
    assert [k for k in keys(stack_env, "artifacts/") if f"/{doomed_run}/" in k] == []
    assert [k for k in keys(stack_env, "artifacts/") if f"/{kept_run}/" in k] == runs[kept_run]
    status, _ = deployed.call("GET", "/api/2.0/mlflow/runs/get", {"run_id": doomed_run})
    assert status == 404
