"""The community Helm chart beside ours: ``helm upgrade --install`` timed on the same cluster, in the same run.

The chart is /work/shared/peers/community-charts-mlflow (override with ``MLSTACK_HELM_CHART``), Helm is
built from the Go module proxy (cached under ~/.cache/mlstack/bin/helm-<version>/). Its values are made
equivalent to the bench deployment's: the stack's PostgreSQL (a store and an auth database, one role), S3
proxied artifacts on the stack's SeaweedFS (a bucket of its own), basic auth with a generated admin
password, an Ingress (class nginx, TLS from the same wildcard Secret ours copies), our MLflow image with
our pull secret, ours' resources and uvicorn workers. Every credential is in a Secret the benchmark
creates before the install and the chart references by name (``existing*Secret``), so the values file
holds none and nothing secret is on a command line.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .common import OUT_DIR, REPO, BenchError, Ticker, pg_admin, s3_client, say, warn
from .common import leftovers as common_leftovers

HELM_VERSION = "v3.22.0"
HELM_PACKAGE = "helm.sh/helm/v3/cmd/helm"
CHART = Path(os.environ.get("MLSTACK_HELM_CHART", "/work/shared/peers/community-charts-mlflow"))
NAMESPACE = "bench-helm"
RELEASE = "wtc-mlflow"  # not "mlflow": a Service named mlflow would inject MLFLOW_PORT=tcp://... into the pod
DB, AUTH_DB, ROLE, BUCKET = "wtc_helm", "wtc_helm_auth", "wtc_helm", "wtc-helm"
ADMIN_USER = "admin"
# The Secrets the benchmark creates for the chart (it takes existing Secrets by name).
DB_SECRET, S3_SECRET, ADMIN_SECRET = "wtc-helm-db", "wtc-helm-s3", "wtc-helm-admin"  # noqa: S105 - names
PULL_SECRET, TLS_SECRET = "mlflow-registry", "wtc-helm-tls"  # noqa: S105 - names
BENCH_LABELS = {"app.kubernetes.io/part-of": "mlflow-bench", "app.kubernetes.io/managed-by": "mlflow-bench"}
# Kinds a controller creates from another object; counted, but shown apart from what the tool applied.
DERIVED_KINDS = {"ReplicaSet", "Pod", "EndpointSlice", "Endpoints", "ControllerRevision"}
# What every namespace gets from Kubernetes itself (not counted for either tool).
NAMESPACE_DEFAULTS = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}
HELM_TIMEOUT = "600s"


@dataclass
class Where:
    """What the chart's pod needs from ours': image, pull secret, resources, and where the services are."""

    image: str
    pull_policy: str
    resources: dict[str, Any]
    workers: str | None
    job_execution: str | None
    pg_host: str
    pg_port: str
    s3_endpoint: str
    region: str
    hostname: str
    pull_secret: str | None = PULL_SECRET  # ours' pull secret, copied into bench-helm; None when ours has none


def chart_values(where: Where) -> dict[str, Any]:
    """The chart's values, equivalent to ours. No credential: every one is an existing Secret's key."""
    repository, _, tag = where.image.rpartition(":")
    image = {"repository": repository, "tag": tag, "pullPolicy": where.pull_policy}
    extra_env = {"MLFLOW_S3_ENDPOINT_URL": where.s3_endpoint, "AWS_DEFAULT_REGION": where.region}
    if where.job_execution is not None:
        extra_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = where.job_execution
    postgres = {"enabled": True, "host": where.pg_host, "port": int(where.pg_port), "driver": "psycopg2"}
    return {
        "image": image,
        # The chart's init containers use busybox (not offline) and burakince/mlflow: ours has sh and sed too.
        "initImages": {"mlflowDbMigration": image, "iniFileInitializer": image},
        "imagePullSecrets": [{"name": where.pull_secret}] if where.pull_secret else [],
        # The chart's defaults lack seccompProfile, which `restricted` Pod Security requires; uid 1000 is our image's.
        "podSecurityContext": {
            "fsGroup": 1000,
            "fsGroupChangePolicy": "OnRootMismatch",
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "privileged": False,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": where.resources,
        "backendStore": {
            "databaseMigration": True,  # an init container runs the schema migration, as our migration Job does
            "postgres": {**postgres, "database": DB},
            "existingDatabaseSecret": {"name": DB_SECRET, "usernameKey": "username", "passwordKey": "password"},
        },
        "artifactRoot": {
            "proxiedArtifactStorage": True,  # --serve-artifacts --artifacts-destination=s3://...
            "s3": {
                "enabled": True,
                "bucket": BUCKET,
                "path": "artifacts",
                "existingSecret": {
                    "name": S3_SECRET,
                    "keyOfAccessKeyId": "AWS_ACCESS_KEY_ID",
                    "keyOfSecretAccessKey": "AWS_SECRET_ACCESS_KEY",
                },
            },
        },
        "auth": {
            "enabled": True,
            "existingAdminSecret": {"name": ADMIN_SECRET, "usernameKey": "username", "passwordKey": "password"},
            "postgres": {
                **postgres,
                "database": AUTH_DB,
                "existingSecret": {"name": DB_SECRET, "usernameKey": "username", "passwordKey": "password"},
            },
        },
        "extraArgs": {"workers": where.workers} if where.workers else {},
        "extraEnvVars": extra_env,
        "serverAllowedHosts": [where.hostname, f"{where.hostname}:443", "localhost", "localhost:5000"],
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "0"},
            "hosts": [{"host": where.hostname, "paths": [{"path": "/", "pathType": "Prefix"}]}],
            "tls": [{"hosts": [where.hostname], "secretName": TLS_SECRET}],
        },
    }


@contextmanager
def private_values_file(values: dict[str, Any]) -> Iterator[Path]:
    """The values as a file only its owner reads (0600 in a 0700 temp dir), removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="wtc-helm-values-"))  # mkdtemp makes it 0700
    try:
        path = tmp / "values.json"  # JSON is YAML
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(values, handle, indent=2)
        yield path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def helm_argv(helm: Path, values_file: Path) -> list[str]:
    """``helm upgrade --install`` with --wait, as comparable with our deploy (it waits for the rollout)."""
    return [
        str(helm),
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--values",
        str(values_file),
        "--wait",
        "--timeout",
        HELM_TIMEOUT,
    ]


def count_kinds(items: list[dict[str, Any]], skip_labels: dict[str, str] | None = None) -> dict[str, int]:
    """Objects by kind; Events, a namespace's own kube-root-ca.crt and default ServiceAccount, and objects
    carrying all of ``skip_labels`` (what the benchmark made for the chart) left out."""
    counts: Counter[str] = Counter()
    for item in items:
        kind = str(item.get("kind", "?"))
        labels = (item.get("metadata") or {}).get("labels") or {}
        if kind == "Event" or (kind, (item.get("metadata") or {}).get("name")) in NAMESPACE_DEFAULTS:
            continue
        if skip_labels and all(labels.get(k) == v for k, v in skip_labels.items()):
            continue
        counts[kind] += 1
    return dict(sorted(counts.items()))


def kinds_line(counts: dict[str, int]) -> str:
    """``10 (Deployment 1, ...) + 4 made by controllers (Pod 1, ...)``: what a tool applied, then the rest."""
    applied = {k: v for k, v in counts.items() if k not in DERIVED_KINDS}
    derived = {k: v for k, v in counts.items() if k in DERIVED_KINDS}

    def part(group: dict[str, int]) -> str:
        return ", ".join(f"{kind} {count}" for kind, count in group.items())

    line = f"{sum(applied.values())} ({part(applied)})"
    if derived:
        line += f" + {sum(derived.values())} made by controllers ({part(derived)})"
    return line


def namespace_objects(namespace: str) -> list[dict[str, Any]]:
    """Every listable namespaced object of ``namespace`` (kubectl get over all namespaced resource types)."""
    names = subprocess.run(
        ["kubectl", "api-resources", "--verbs=list", "--namespaced", "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    names = [name for name in names if name not in ("events", "events.events.k8s.io")]
    out = subprocess.run(
        ["kubectl", "get", "-n", namespace, ",".join(names), "-o", "json", "--ignore-not-found"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return list(json.loads(out or '{"items": []}').get("items", []))


def build_helm(version: str = HELM_VERSION) -> tuple[Path, float | None]:
    """Helm from the Go module proxy, with the stack's Go builder; (binary, build seconds or None if cached)."""
    sys.path.insert(0, str(REPO / "hack"))
    from mlstack_local.base import Context
    from mlstack_local.config import default_paths
    from mlstack_local.gobuild import binaries_present, go_install
    from mlstack_local.proc import StackError

    ctx = Context(paths=default_paths(), secrets={})
    target = ctx.paths.bin / f"helm-{version}"
    if binaries_present(target, ["helm"]):
        return target / "helm", None
    say(f"helm: building {HELM_PACKAGE}@{version} from the Go module proxy (once; cached in {target})")
    started = time.monotonic()
    try:
        go_install(ctx, label="helm", version=version, packages=[HELM_PACKAGE], names=["helm"])
    except StackError as err:
        if "sum.golang.org" not in str(err) and "verifying" not in str(err):
            raise BenchError(f"building helm {version} failed: {err}") from err
        warn("sum.golang.org not reachable: building helm again with GOSUMDB=off (no checksum database check)")
        before = os.environ.get("GOSUMDB")
        os.environ["GOSUMDB"] = "off"  # go_install passes os.environ on; only for this build
        try:
            go_install(ctx, label="helm", version=version, packages=[HELM_PACKAGE], names=["helm"])
        finally:
            if before is None:
                del os.environ["GOSUMDB"]
            else:
                os.environ["GOSUMDB"] = before
    return target / "helm", time.monotonic() - started


@dataclass
class HelmRun:
    label: str
    rc: int
    wall_s: float
    output: str = ""


@dataclass
class HelmBench:
    """Creates the chart's prerequisites, installs and re-runs the chart, checks it, and removes it all."""

    helm: Path
    repeats: int = 3
    password: str = ""
    runs: list[HelmRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _home: Path | None = None

    def _env(self) -> dict[str, str]:
        if self._home is None:
            self._home = Path(tempfile.mkdtemp(prefix="wtc-helm-home-"))
        home = self._home
        # Helm's cache, config and data in a private temp dir: nothing lands in ~/.cache/helm or ~/.config/helm.
        return {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def version(self) -> str:
        done = subprocess.run(
            [str(self.helm), "version", "--short"], capture_output=True, text=True, check=False, env=self._env()
        )
        return done.stdout.strip() or done.stderr.strip()

    # --- prerequisites -----------------------------------------------------------------------------------
    def prepare(self, ours_namespace: str, where: Where) -> None:
        """Namespace (restricted Pod Security, as ours), databases, role, bucket and the Secrets the chart takes."""
        from kubernetes import client, config

        config.load_kube_config(config_file=os.environ["KUBECONFIG"])
        core = client.CoreV1Api()
        self.password = secrets.token_hex(16)  # hex: the chart puts it into its auth .ini with sed
        admin_password = secrets.token_hex(16)
        conn = pg_admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE ROLE "{ROLE}" LOGIN PASSWORD %s', (self.password,))
                cur.execute(f'CREATE DATABASE "{DB}" OWNER "{ROLE}"')
                cur.execute(f'CREATE DATABASE "{AUTH_DB}" OWNER "{ROLE}"')
        finally:
            conn.close()
        s3_client().create_bucket(Bucket=BUCKET)
        labels = {
            **BENCH_LABELS,
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
            "pod-security.kubernetes.io/warn": "restricted",
        }
        core.create_namespace({"metadata": {"name": NAMESPACE, "labels": labels}})
        meta = {"namespace": NAMESPACE, "labels": BENCH_LABELS}

        def secret(name: str, data: dict[str, str], kind: str = "Opaque", encoded: bool = False) -> None:
            body = {"metadata": {"name": name, **meta}, "type": kind, ("data" if encoded else "stringData"): data}
            core.create_namespaced_secret(NAMESPACE, body)

        secret(DB_SECRET, {"username": ROLE, "password": self.password})
        secret(
            S3_SECRET,
            {"AWS_ACCESS_KEY_ID": os.environ["S3_ACCESS_KEY"], "AWS_SECRET_ACCESS_KEY": os.environ["S3_SECRET_KEY"]},
        )
        secret(ADMIN_SECRET, {"username": ADMIN_USER, "password": admin_password})
        if where.pull_secret:
            pull = core.read_namespaced_secret(where.pull_secret, ours_namespace)
            secret(where.pull_secret, dict(pull.data or {}), kind=pull.type, encoded=True)
        tls_ns = os.environ.get("TLS_SOURCE_NAMESPACE") or "default"
        tls_name = os.environ.get("TLS_SOURCE_SECRET") or f"{os.environ.get('DOMAIN_NAME', 'mlstack.test')}-tls"
        tls = core.read_namespaced_secret(tls_name.replace(".", "-"), tls_ns)
        secret(TLS_SECRET, dict(tls.data or {}), kind="kubernetes.io/tls", encoded=True)

    def admin_password(self) -> str:
        from kubernetes import client

        data = client.CoreV1Api().read_namespaced_secret(ADMIN_SECRET, NAMESPACE).data or {}
        return base64.b64decode(data["password"]).decode()

    # --- the timed runs ----------------------------------------------------------------------------------
    def run(self, label: str, values: dict[str, Any]) -> HelmRun:
        """One ``helm upgrade --install --wait``; the values file is 0600 in a private temp dir, then deleted."""
        OUT_DIR.joinpath("logs").mkdir(parents=True, exist_ok=True)
        with private_values_file(values) as path:
            argv = helm_argv(self.helm, path)
            say(f"helm: {label}: helm upgrade --install {RELEASE} <chart> -n {NAMESPACE} --wait")
            started = time.monotonic()
            with Ticker(f"helm {label}"):
                done = subprocess.run(argv, capture_output=True, text=True, check=False, env=self._env())
            wall = time.monotonic() - started
        output = (done.stdout + done.stderr).strip()
        (OUT_DIR / "logs" / f"helm-{label}.log").write_text(output + "\n")
        run = HelmRun(label=label, rc=done.returncode, wall_s=wall, output=output[-2000:])
        self.runs.append(run)
        say(f"helm: {label}: rc={run.rc} wall {wall:.1f} s")
        if run.rc != 0:
            raise BenchError(f"helm {label} failed (rc={run.rc}): {output[-800:]}")
        return run

    def timings(self, values: dict[str, Any]) -> dict[str, Any]:
        first = self.run("install", values)
        noops = [self.run(f"noop-{index}", values) for index in range(1, self.repeats + 1)]
        return {
            "first": asdict(first),
            "noop": [asdict(run) for run in noops],
            "noop_median_s": statistics.median(run.wall_s for run in noops),
        }

    def revisions(self) -> int:
        done = subprocess.run(
            [str(self.helm), "history", RELEASE, "-n", NAMESPACE, "-o", "json"],
            capture_output=True,
            text=True,
            check=False,
            env=self._env(),
        )
        return len(json.loads(done.stdout or "[]")) if done.returncode == 0 else 0

    # --- cleanup -----------------------------------------------------------------------------------------
    def destroy(self, label: str) -> None:
        """helm uninstall, the namespace (helm leaves its hook Secret), databases, role, bucket; then checks."""
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException

        from .servers import purge_bucket

        say(f"cleanup: {label}: helm uninstall {RELEASE}, namespace {NAMESPACE}, databases, role, bucket")
        config.load_kube_config(config_file=os.environ["KUBECONFIG"])
        core = client.CoreV1Api()
        try:
            core.read_namespace(NAMESPACE)
            exists = True
        except ApiException as err:
            exists = err.status != 404
        if exists:
            subprocess.run(
                [str(self.helm), "uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--ignore-not-found"],
                capture_output=True,
                text=True,
                check=False,
                env=self._env(),
                timeout=300,
            )
            try:
                core.delete_namespace(NAMESPACE)
            except ApiException as err:
                if err.status != 404:
                    raise
        conn = pg_admin()
        try:
            with conn.cursor() as cur:
                for name in (DB, AUTH_DB):
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cur.execute(f'DROP ROLE IF EXISTS "{ROLE}"')
        finally:
            conn.close()
        purge_bucket(BUCKET)
        left = leftovers()
        for _ in range(36):  # a namespace takes a few seconds to terminate
            if not left:
                break
            time.sleep(5)
            left = leftovers()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None
        if left:
            raise BenchError(f"{label} left {', '.join(left)} behind")


def leftovers() -> list[str]:
    """What of the helm release's namespace, databases, role and bucket still exists."""
    return common_leftovers(NAMESPACE, [DB, AUTH_DB], ROLE, BUCKET)


def where_from_ours(ours_namespace: str) -> Where:
    """Image, pull policy, resources, workers and service addresses from the bench deployment's Deployment."""
    from .servers import Defaults, DefaultsResources, _plain

    spec, container, where = Defaults(ours_namespace, DefaultsResources())._ours_pod()
    args = [*(container.command or []), *(container.args or [])]
    workers = next((arg.split("=", 1)[1] for arg in args if arg.startswith("--workers=")), None)
    env = {item.name: item.value for item in container.env or [] if item.value is not None}
    return Where(
        image=container.image,
        pull_policy=container.image_pull_policy or "IfNotPresent",
        resources=_plain(container.resources) or {},
        workers=workers,
        job_execution=env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION"),
        pg_host=where["pg_host"],
        pg_port=where["pg_port"],
        s3_endpoint=where["s3"],
        region=where["region"],
        hostname=f"{NAMESPACE}.{os.environ.get('DOMAIN_NAME', 'mlstack.test')}",
        pull_secret=next((ref.name for ref in spec.image_pull_secrets or []), None),
    )


def through_ingress(host: str, method: str, path: str, body: bytes | None = None, auth: str | None = None) -> int:
    """Status of a request to https://<host><path> through the local ingress (like curl --resolve), CA verified."""
    import http.client
    import socket
    import ssl

    context = ssl.create_default_context(cafile=os.environ.get("MLSTACK_CA_CERT") or None)
    address = (os.environ.get("INGRESS_ADDRESS") or "127.0.0.1", int(os.environ.get("INGRESS_HTTPS_PORT") or "443"))
    connection = http.client.HTTPSConnection(host, address[1], context=context, timeout=30)
    connection._create_connection = lambda *_a, **_k: socket.create_connection(address, timeout=30)  # type: ignore[attr-defined]
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return int(response.status)
    finally:
        connection.close()


def check_release(host: str, admin_password: str) -> dict[str, Any]:
    """Basic auth through the Ingress (401 without, 200 as admin) and a proxied artifact upload landing in S3."""
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    found = {
        "anonymous_search": through_ingress(host, "GET", search),
        "admin_search": through_ingress(host, "GET", search, auth=f"{ADMIN_USER}:{admin_password}"),
        "admin_upload": through_ingress(
            host,
            "PUT",
            "/api/2.0/mlflow-artifacts/artifacts/bench/check.txt",
            body=b"proxied",
            auth=f"{ADMIN_USER}:{admin_password}",
        ),
    }
    listed = s3_client().list_objects_v2(Bucket=BUCKET, Prefix="artifacts/bench/")
    found["object_in_bucket"] = [obj["Key"] for obj in listed.get("Contents", [])]
    problems = []
    if found["anonymous_search"] != 401:
        problems.append(f"anonymous search answered {found['anonymous_search']}, not 401")
    if found["admin_search"] != 200 or found["admin_upload"] != 200:
        problems.append(f"admin search / upload answered {found['admin_search']} / {found['admin_upload']}")
    if "artifacts/bench/check.txt" not in found["object_in_bucket"]:
        problems.append(f"the proxied upload is not in s3://{BUCKET}/artifacts/bench/")
    found["problems"] = problems
    return found


def rollout_state(namespace: str) -> dict[str, Any]:
    """Generations of the namespace's Deployments and its ReplicaSet count: a no-op leaves both as they are."""
    from kubernetes import client

    apps = client.AppsV1Api()
    deployments = apps.list_namespaced_deployment(namespace).items
    return {
        "generations": {d.metadata.name: d.metadata.generation for d in deployments},
        "replicasets": len(apps.list_namespaced_replica_set(namespace).items),
    }


def run_helm_part(bench: HelmBench, ours_namespace: str) -> dict[str, Any]:
    """Prerequisites, the timed install and no-op upgrades, what the release created, and a check that it works."""
    result: dict[str, Any] = {"chart": str(CHART), "release": RELEASE, "namespace": NAMESPACE, "helm": bench.version()}
    chart_meta = (CHART / "Chart.yaml").read_text()
    result["chart_version"] = next(
        (line.split(":", 1)[1].strip() for line in chart_meta.splitlines() if line.startswith("version:")), "?"
    )
    where = where_from_ours(ours_namespace)
    values = chart_values(where)
    result["values"] = values  # no credential in them (tests/unit/test_bench_helm.py)
    say(
        f"helm: creating namespace {NAMESPACE} (restricted Pod Security), databases {DB} and {AUTH_DB}, "
        f"role {ROLE}, bucket {BUCKET} and the Secrets the chart takes"
    )
    started = time.monotonic()
    bench.prepare(ours_namespace, where)
    result["prepare_s"] = time.monotonic() - started
    first = bench.run("install", values)
    result["first"] = asdict(first)
    result["objects"] = count_kinds(namespace_objects(NAMESPACE), skip_labels=BENCH_LABELS)
    result["pod"] = pod_phases(NAMESPACE, f"app.kubernetes.io/instance={RELEASE}")
    before = rollout_state(NAMESPACE)
    noops = [bench.run(f"noop-{index}", values) for index in range(1, bench.repeats + 1)]
    after = rollout_state(NAMESPACE)
    result["noop"] = [asdict(run) for run in noops]
    result["noop_median_s"] = statistics.median(run.wall_s for run in noops)
    result["noop_rollout"] = {"before": before, "after": after, "unchanged": before == after}
    result["revisions"] = bench.revisions()
    result["check"] = check_release(where.hostname, bench.admin_password())
    return result


def pod_phases(namespace: str, selector: str) -> dict[str, Any]:
    """Where a server pod's start went, from its status (1 s resolution): seconds after the pod was created
    until its init containers ended, its container started, and it turned Ready (the probes' period shows)."""
    from kubernetes import client

    pods = client.CoreV1Api().list_namespaced_pod(namespace, label_selector=selector).items
    pods = [pod for pod in pods if pod.metadata.deletion_timestamp is None]
    if not pods:
        return {}
    pod = max(pods, key=lambda p: p.metadata.creation_timestamp)
    created = pod.metadata.creation_timestamp

    def since(moment: Any) -> float | None:
        return None if moment is None else (moment - created).total_seconds()

    inits = {
        status.name: since(status.state.terminated.finished_at)
        for status in pod.status.init_container_statuses or []
        if status.state and status.state.terminated
    }
    started = [
        status.state.running.started_at
        for status in pod.status.container_statuses or []
        if status.state and status.state.running
    ]
    ready = next((c.last_transition_time for c in pod.status.conditions or [] if c.type == "Ready"), None)
    return {
        "pod": pod.metadata.name,
        "init_containers_ended_s": inits,
        "container_started_s": since(min(started)) if started else None,
        "ready_s": since(ready) if ready and (pod.status.phase == "Running") else None,
    }
