"""Client load: N processes (not threads: the GIL) hammering one endpoint for a fixed duration.

Each client keeps one HTTP/1.1 keep-alive connection (as MLflow's own client does with its session) and
speaks MLflow's REST API directly with http.client, so the client costs as little CPU as possible: it
shares the machine's cores with the server.

Workloads:
* ``runs``: POST runs/create, runs/log-batch (10 metrics, 5 params), runs/update (FINISHED) = one op.
* ``search``: POST runs/search of an experiment of seeded runs, 50 results = one op.
* ``upload``: PUT mlflow-artifacts/artifacts/<path> of 1 MB = one op (the server proxies it to S3).
* ``raw_s3``: boto3 put_object of 1 MB straight to the bucket = one op (the physical reference).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import resource
import threading
import time
import urllib.parse
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any

from .common import BenchError

PAYLOAD_BYTES = 1_000_000  # "1 MB"; MB/s below are 10^6 bytes per second
SEARCH_RESULTS = 50
WARMUP_OPS = 2
_ctx = multiprocessing.get_context("fork")


class ApiError(RuntimeError):
    pass


class RestClient:
    """One keep-alive connection to an MLflow server; reconnects once when the connection dropped."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=120)

    def request(self, method: str, path: str, body: bytes | None, content_type: str) -> tuple[int, bytes]:
        headers = {"Content-Type": content_type} if body is not None else {}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def call(self, path: str, payload: dict[str, Any] | None = None, method: str = "POST") -> dict[str, Any]:
        body = json.dumps(payload).encode() if payload is not None else None
        status, data = self.request(method, path, body, "application/json")
        if status != 200:
            raise ApiError(f"{method} {path}: {status} {data[:200]!r}")
        return json.loads(data) if data else {}


def experiment_id(client: RestClient, name: str) -> str:
    """The id of experiment ``name``, created when missing."""
    query = urllib.parse.urlencode({"experiment_name": name})
    status, data = client.request("GET", f"/api/2.0/mlflow/experiments/get-by-name?{query}", None, "")
    if status == 200:
        return str(json.loads(data)["experiment"]["experiment_id"])
    return str(client.call("/api/2.0/mlflow/experiments/create", {"name": name})["experiment_id"])


@dataclass(frozen=True)
class Workload:
    """What one client process does; ``params`` depend on the kind (experiment id, paths, bucket)."""

    kind: str
    host: str
    port: int
    params: dict[str, str]


def _op_run(client: RestClient, experiment: str, seq: int) -> None:
    now = int(time.time() * 1000)
    created = client.call(
        "/api/2.0/mlflow/runs/create", {"experiment_id": experiment, "start_time": now, "run_name": f"bench-{seq}"}
    )
    run_id = created["run"]["info"]["run_id"]
    client.call(
        "/api/2.0/mlflow/runs/log-batch",
        {
            "run_id": run_id,
            "metrics": [{"key": f"metric_{i}", "value": i * 0.25, "timestamp": now, "step": 0} for i in range(10)],
            "params": [{"key": f"param_{i}", "value": f"value-{i}"} for i in range(5)],
        },
    )
    client.call(
        "/api/2.0/mlflow/runs/update",
        {"run_id": run_id, "status": "FINISHED", "end_time": int(time.time() * 1000)},
    )


def _op_search(client: RestClient, experiment: str) -> None:
    found = client.call("/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment], "max_results": SEARCH_RESULTS})
    if len(found.get("runs", [])) != SEARCH_RESULTS:
        raise ApiError(f"runs/search returned {len(found.get('runs', []))} runs, expected {SEARCH_RESULTS}")


def _op_upload(client: RestClient, prefix: str, payload: bytes, seq: int) -> None:
    path = urllib.parse.quote(f"/api/2.0/mlflow-artifacts/artifacts/{prefix}/{seq}.bin")
    status, data = client.request("PUT", path, payload, "application/octet-stream")
    if status != 200:
        raise ApiError(f"PUT {path}: {status} {data[:200]!r}")


def _client_main(index: int, work: Workload, duration: float, max_ops: int, barrier: Barrier, out: Any) -> None:
    """One client process: set up, warm up, wait for the others, then loop until the time is up."""
    result: dict[str, Any] = {"index": index, "ops": 0, "errors": 0, "first_error": ""}
    try:
        payload = os.urandom(PAYLOAD_BYTES)
        prefix = f"{work.params.get('prefix', 'bench')}/c{index}"
        if work.kind == "raw_s3":
            from .common import s3_client

            s3 = s3_client()
            bucket = work.params["bucket"]

            def op(seq: int) -> None:
                s3.put_object(Bucket=bucket, Key=f"{prefix}/{seq}.bin", Body=payload)
        else:
            client = RestClient(work.host, work.port)
            experiment = work.params.get("experiment", "")
            ops = {
                "runs": lambda seq: _op_run(client, experiment, seq),
                "search": lambda seq: _op_search(client, experiment),
                "upload": lambda seq: _op_upload(client, prefix, payload, seq),
            }
            op = ops[work.kind]
        if max_ops == 0:
            for seq in range(WARMUP_OPS):
                op(-1 - seq)
    except Exception as err:  # noqa: BLE001 - reported to the coordinator, which fails the step
        result["setup_error"] = f"{type(err).__name__}: {err}"
        out.put(result)
        barrier.abort()
        return
    try:
        barrier.wait(timeout=120)
    except threading.BrokenBarrierError:
        out.put({**result, "setup_error": "another client failed to set up"})
        return
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    deadline = start + duration
    seq = 0
    while time.monotonic() < deadline and (max_ops == 0 or result["ops"] < max_ops):
        try:
            op(seq)
            result["ops"] += 1
        except Exception as err:  # noqa: BLE001 - counted; the run goes on
            result["errors"] += 1
            result["first_error"] = result["first_error"] or f"{type(err).__name__}: {err}"[:300]
            time.sleep(0.05)
        seq += 1
    end = time.monotonic()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    result.update(
        start=start,
        end=end,
        cpu_s=(cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime),
    )
    out.put(result)


def run_load(work: Workload, clients: int, duration: float, max_ops: int = 0) -> dict[str, Any]:
    """Run ``clients`` processes of ``work`` for ``duration`` s (or ``max_ops`` ops each); aggregate."""
    barrier = _ctx.Barrier(clients + 1)
    out = _ctx.Queue()
    procs = [
        _ctx.Process(target=_client_main, args=(i, work, duration, max_ops, barrier, out), daemon=True)
        for i in range(clients)
    ]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(timeout=180)
    except threading.BrokenBarrierError:
        pass
    results = [out.get(timeout=duration + 300) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    setup_errors = [r["setup_error"] for r in results if r.get("setup_error")]
    if setup_errors:
        raise BenchError(f"{work.kind} clients could not start: {setup_errors[0]}")
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    ops = sum(r["ops"] for r in results)
    errors = sum(r["errors"] for r in results)
    aggregate: dict[str, Any] = {
        "ops": ops,
        "elapsed_s": elapsed,
        "ops_per_s": ops / elapsed if elapsed > 0 else 0.0,
        "errors": errors,
        "first_error": next((r["first_error"] for r in results if r["first_error"]), ""),
        "client_cpu_s": sum(r["cpu_s"] for r in results),
    }
    if work.kind in ("upload", "raw_s3"):
        aggregate["mb_per_s"] = ops * PAYLOAD_BYTES / 1e6 / elapsed if elapsed > 0 else 0.0
    return aggregate
