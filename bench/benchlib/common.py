"""Shared pieces of the benchmark: locations, the stack's environment, progress lines, statistics."""

from __future__ import annotations

import os
import shlex
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
STATE = Path(os.environ.get("MLSTACK_STATE_DIR", REPO / ".local"))
OUT_DIR = STATE / "bench"
_T0 = time.monotonic()


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which and why."""


def say(message: str) -> None:
    """One progress line, prefixed with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", flush=True)


def load_stack_env() -> None:
    """Export .local/stack.env unless the caller (``make bench`` via hack/with-stack-env) already did."""
    if os.environ.get("KUBECONFIG") and os.environ.get("PGHOST") and os.environ.get("S3_ENDPOINT_URL"):
        return
    env_file = STATE / "stack.env"
    if not env_file.exists():
        raise BenchError(f"{env_file} not found: start the local stack first (make up)")
    for line in env_file.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "export":
            words = words[1:]
        for word in words:
            key, sep, value = word.partition("=")
            if sep:
                os.environ.setdefault(key, value)
    os.environ.setdefault("HARBOR_ROBOT_TOKEN", os.environ.get("REGISTRY_PASSWORD", ""))
    os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))


def require_env(*names: str) -> dict[str, str]:
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        raise BenchError(f"missing from the stack environment: {', '.join(missing)} (is the stack up?)")
    return {name: os.environ[name] for name in names}


class Ticker:
    """Prints "still <what>" every ``every`` seconds while a long step runs, so nothing is silent."""

    def __init__(self, what: str, every: float = 15.0, detail: Callable[[], str] | None = None) -> None:
        self.what = what
        self.every = every
        self.detail = detail
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = 0.0

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            extra = self.detail() if self.detail else ""
            say(f"  ... {self.what}: {time.monotonic() - self._start:.0f} s{(' - ' + extra) if extra else ''}")

    def __enter__(self) -> Ticker:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """Status code of a GET, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (OSError, ValueError):
        return None


def summary(values: list[float]) -> dict[str, Any]:
    """Median and spread (min-max) of repeated measurements; the raw values are kept too."""
    clean = [value for value in values if value is not None]
    if not clean:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "median": statistics.median(clean),
        "min": min(clean),
        "max": max(clean),
        "n": len(clean),
        "values": clean,
    }


def ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Per-repeat ratios of paired measurements (same repeat, so they shared the machine's noise)."""
    return [num / den for num, den in zip(numerators, denominators, strict=False) if num is not None and den]


def warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def pg_admin() -> Any:
    """An autocommit connection to the stack's PostgreSQL as its admin (PG* from stack.env)."""
    import psycopg2

    conn = psycopg2.connect(
        host=os.environ["PGHOST"],
        port=int(os.environ["PGPORT"]),
        user=os.environ["PGUSER"],
        password=os.environ["PGPASSWORD"],
        dbname=os.environ.get("PGDATABASE", "postgres"),
    )
    conn.autocommit = True
    return conn


def s3_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT_URL"],
        aws_access_key_id=os.environ["S3_ACCESS_KEY"],
        aws_secret_access_key=os.environ["S3_SECRET_KEY"],
        region_name=os.environ.get("S3_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def leftovers(namespace: str, databases: list[str], role: str, bucket: str) -> list[str]:
    """What of a bench deployment still exists: its namespace, databases, role and bucket."""
    from botocore.exceptions import ClientError
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    found: list[str] = []
    config.load_kube_config(config_file=os.environ["KUBECONFIG"])
    try:
        client.CoreV1Api().read_namespace(namespace)
        found.append(f"namespace {namespace}")
    except ApiException as err:
        if err.status != 404:
            found.append(f"namespace {namespace} (unknown: {err.status})")
    conn = pg_admin()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (databases,))
            found += [f"database {row[0]}" for row in cur.fetchall()]
            cur.execute("SELECT rolname FROM pg_roles WHERE rolname = %s", (role,))
            found += [f"role {row[0]}" for row in cur.fetchall()]
    finally:
        conn.close()
    try:
        s3_client().head_bucket(Bucket=bucket)
        found.append(f"bucket {bucket}")
    except ClientError:
        pass
    return found
