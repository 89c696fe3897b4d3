"""The server part: ours vs MLflow's defaults, interleaved within each repeat to share the noise."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from .common import BenchError, Ticker, ratios, say, summary
from .deploy import BENCH_VARS
from .load import Workload, experiment_id, run_load
from .servers import Defaults, Ours, PodServer, start_timed

SEED_RUNS = 200  # runs in the searched experiment (searches return 50 of them)
LOADS = ("runs", "search", "upload")
SETTLE_CPU = 0.10  # a pod is quiet when it used less than this share of one core ...
SETTLE_WINDOW = 10.0  # ... over this many seconds
SETTLE_MAX = 150.0  # longest wait for both pods to get quiet before the idle window


def _prepare(server: PodServer, clients: int) -> dict[str, str]:
    """Experiments for the runs and search workloads; the search one gets SEED_RUNS runs once."""
    from .load import RestClient

    client = RestClient(server.host, server.port)
    runs = experiment_id(client, "bench-runs")
    search = experiment_id(client, "bench-search")
    found = client.call("/api/2.0/mlflow/runs/search", {"experiment_ids": [search], "max_results": SEED_RUNS})
    missing = SEED_RUNS - len(found.get("runs", []))
    if missing > 0:
        per_client = -(-missing // clients)
        say(f"server: {server.name}: seeding {per_client * clients} runs for the search workload")
        seeded = run_load(Workload("runs", server.host, server.port, {"experiment": search}), clients, 600, per_client)
        if seeded["errors"]:
            say(f"server: {server.name}: {seeded['errors']} errors while seeding: {seeded['first_error']}")
    return {"runs": runs, "search": search}


def _load(
    server: PodServer, kind: str, experiments: dict[str, str], repeat: int, clients: int, duration: float
) -> dict:
    params = {
        "runs": {"experiment": experiments["runs"]},
        "search": {"experiment": experiments["search"]},
        "upload": {"prefix": f"bench-upload/r{repeat}"},
    }[kind]
    cpu_before = server.cpu_seconds()
    result = run_load(Workload(kind, server.host, server.port, params), clients, duration)
    result["server_cpu_s"] = server.cpu_seconds() - cpu_before
    if result["server_cpu_s"] is not None and result["ops"]:
        result["server_cpu_ms_per_op"] = 1000 * result["server_cpu_s"] / result["ops"]
    rate = f"{result['mb_per_s']:.1f} MB/s" if "mb_per_s" in result else f"{result['ops_per_s']:.1f} ops/s"
    errors = f", {result['errors']} errors ({result['first_error']})" if result["errors"] else ""
    say(
        f"load: {kind:<6} {server.name:<8} {rate} ({result['ops']} ops in {result['elapsed_s']:.1f} s, "
        f"server {result['server_cpu_s'] or 0:.1f} CPU-s, clients {result['client_cpu_s']:.1f} CPU-s){errors}"
    )
    return result


class CpuSampler:
    """Samples each started pod's CPU counter once a second in a thread, from the starts to the end of _settle."""

    def __init__(self, servers: list[PodServer]) -> None:
        self.servers = servers
        self.series: dict[str, list[tuple[float, float]]] = {server.name: [] for server in servers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for server in self.servers:
                if server.cgroup is not None:
                    try:
                        self.series[server.name].append((time.monotonic(), server.cpu_seconds()))
                    except (OSError, BenchError):
                        pass

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def quiet_since(self, name: str, after: float) -> float | None:
        """Start of the first SETTLE_WINDOW after ``after`` in which the pod used < SETTLE_CPU of a core."""
        series = [sample for sample in list(self.series[name]) if sample[0] >= after]
        for i, (at, cpu) in enumerate(series):
            later = next(((t, c) for t, c in series[i + 1 :] if t - at >= SETTLE_WINDOW), None)
            if later is None:
                return None
            if (later[1] - cpu) / (later[0] - at) < SETTLE_CPU:
                return at
        return None


def _settle(sampler: CpuSampler, servers: list[PodServer], record: dict[str, Any]) -> None:
    """Wait until each pod is quiet (CPU under SETTLE_CPU of a core for SETTLE_WINDOW s), at most SETTLE_MAX s.

    MLflow's default job runner starts its huey consumers up to a minute after the server answers /health
    on this machine: without this wait they would run during the idle window or the first loads, on the
    cores the other server uses. Records when each pod got quiet, from its scale 0 -> 1.
    """
    pending = {server.name: server for server in servers}
    deadline = time.monotonic() + SETTLE_MAX
    with Ticker("waiting for the servers to get quiet", detail=lambda: ", ".join(pending)):
        while pending and time.monotonic() < deadline:
            for name, server in list(pending.items()):
                healthy_at = server.scaled_at + record["start"][name]["scale_to_pod_health_s"]
                since = sampler.quiet_since(name, healthy_at)
                if since is not None:
                    record["start"][name]["scale_to_quiet_s"] = since - server.scaled_at
                    del pending[name]
            time.sleep(1.0)
    for name in pending:
        record["start"][name]["scale_to_quiet_s"] = None
    quiet = {name: rec.get("scale_to_quiet_s") for name, rec in record["start"].items()}
    parts = ", ".join(f"{name} {'-' if at is None else format(at, '.1f') + ' s'}" for name, at in quiet.items())
    say(f"server: quiet (CPU < {100 * SETTLE_CPU:.0f} % of a core for {SETTLE_WINDOW:.0f} s) after scale 0->1: {parts}")
    # Each pod's CPU in % of a core over the 1 s samples, by seconds since its scale 0 -> 1 (in the JSON).
    record["cpu_trace"] = {
        server.name: [
            [round(t1 - server.scaled_at, 1), round(100 * (c1 - c0) / (t1 - t0), 1)]
            for (t0, c0), (t1, c1) in itertools.pairwise(sampler.series[server.name])
        ]
        for server in servers
    }


def run_server_bench(ours: Ours, defaults: Defaults, repeats: int, clients: int, duration: float, idle: float) -> dict:
    servers: dict[str, PodServer] = {"ours": ours, "defaults": defaults}
    data: dict[str, Any] = {
        "config": {name: server.describe() for name, server in servers.items()},
        "clients": clients,
        "duration_s": duration,
        "idle_s": idle,
        "repeats": [],
    }
    experiments: dict[str, dict[str, str]] = {}
    for repeat in range(repeats):
        order = [defaults, ours] if repeat % 2 == 0 else [ours, defaults]
        names = [server.name for server in order]
        say(f"server: repeat {repeat + 1}/{repeats} (order {' then '.join(names)}): stopping both servers")
        for server in order:
            server.request_stop()
        for server in order:
            server.wait_stopped()
        record: dict[str, Any] = {"order": names, "start": {}, "idle": {}, "load": {}}
        with CpuSampler(order) as sampler:
            for server in order:
                record["start"][server.name] = start_timed(server, f"repeat {repeat + 1}")
            if repeat == 0:
                for server in order:
                    data["config"][server.name]["version"] = server.version()
            _settle(sampler, order, record)
        say(f"server: both up and quiet; idling {idle:.0f} s before sampling memory")
        idle_from = time.monotonic()
        cpu_before = {server.name: server.cpu_seconds() for server in order}
        with Ticker("idle"):
            time.sleep(idle)
        idle_for = time.monotonic() - idle_from
        for server in order:
            mem = server.memory()
            mem["cpu_pct"] = 100 * (server.cpu_seconds() - cpu_before[server.name]) / idle_for
            record["idle"][server.name] = mem
            say(
                f"server: {server.name} idle (pod cgroup): RSS {mem['rss_mib']:.0f} MiB, usage - cache "
                f"{mem['usage_minus_cache_mib']:.0f} MiB, PSS {mem['pss_mib']:.0f} MiB, "
                f"{mem['processes']} processes, {mem['cpu_pct']:.1f} % of a core"
            )
        for server in order:
            if server.name not in experiments:
                experiments[server.name] = _prepare(server, clients)
        for kind in LOADS:
            record["load"][kind] = {
                server.name: _load(server, kind, experiments[server.name], repeat, clients, duration)
                for server in order
            }
        raw = run_load(
            Workload(
                "raw_s3", "", 0, {"bucket": BENCH_VARS["mlflow_artifacts_bucket"], "prefix": f"bench-raw/r{repeat}"}
            ),
            clients,
            duration,
        )
        record["load"]["raw_s3"] = raw
        say(f"load: raw S3 (boto3 put_object) {raw['mb_per_s']:.1f} MB/s ({raw['ops']} ops, {raw['errors']} errors)")
        data["repeats"].append(record)
    data["figures"] = figures(data["repeats"])
    return data


def _series(repeats: list[dict], pick: Any) -> list[float]:
    values = []
    for record in repeats:
        try:
            value = pick(record)
        except (KeyError, TypeError):
            value = None
        values.append(value)
    return values


# figure name -> (unit, how to read it from one server's share of a repeat record)
PER_SERVER: dict[str, tuple[str, Any]] = {
    "start_to_health_s": ("s", lambda rec, name: rec["start"][name]["start_to_health_s"]),
    "scale_to_pod_health_s": ("s", lambda rec, name: rec["start"][name]["scale_to_pod_health_s"]),
    "scale_to_service_health_s": ("s", lambda rec, name: rec["start"][name]["scale_to_service_health_s"]),
    "scale_to_quiet_s": ("s", lambda rec, name: rec["start"][name]["scale_to_quiet_s"]),
    "idle_rss_mib": ("MiB", lambda rec, name: rec["idle"][name]["rss_mib"]),
    "idle_usage_mib": ("MiB", lambda rec, name: rec["idle"][name]["usage_minus_cache_mib"]),
    "idle_pss_mib": ("MiB", lambda rec, name: rec["idle"][name]["pss_mib"]),
    "processes": ("", lambda rec, name: rec["idle"][name]["processes"]),
    "idle_cpu_pct": ("%", lambda rec, name: rec["idle"][name]["cpu_pct"]),
    "runs_per_s": ("1/s", lambda rec, name: rec["load"]["runs"][name]["ops_per_s"]),
    "searches_per_s": ("1/s", lambda rec, name: rec["load"]["search"][name]["ops_per_s"]),
    "upload_mb_per_s": ("MB/s", lambda rec, name: rec["load"]["upload"][name]["mb_per_s"]),
    "cpu_ms_per_run": ("ms", lambda rec, name: rec["load"]["runs"][name]["server_cpu_ms_per_op"]),
    "cpu_ms_per_search": ("ms", lambda rec, name: rec["load"]["search"][name]["server_cpu_ms_per_op"]),
    "cpu_ms_per_upload": ("ms", lambda rec, name: rec["load"]["upload"][name]["server_cpu_ms_per_op"]),
    "load_errors": (
        "",
        lambda rec, name: sum(rec["load"][kind][name]["errors"] for kind in LOADS),
    ),
}


def figures(repeats: list[dict]) -> dict[str, Any]:
    """Median and spread of every figure, and of the per-repeat ratios ours/defaults."""
    out: dict[str, Any] = {"ours": {}, "defaults": {}, "ratio": {}}
    for key, (_, pick) in PER_SERVER.items():
        series = {name: _series(repeats, lambda rec, n=name, p=pick: p(rec, n)) for name in ("ours", "defaults")}
        out["ours"][key] = summary(series["ours"])
        out["defaults"][key] = summary(series["defaults"])
        out["ratio"][key] = summary(ratios(series["ours"], series["defaults"]))
    raw = _series(repeats, lambda rec: rec["load"]["raw_s3"]["mb_per_s"])
    out["raw_s3_mb_per_s"] = summary(raw)
    for name in ("ours", "defaults"):
        proxied = _series(repeats, lambda rec, n=name: rec["load"]["upload"][n]["mb_per_s"])
        out[name]["upload_vs_raw_s3"] = summary(ratios(proxied, raw))
    client_cpu = _series(
        repeats, lambda rec: sum(rec["load"][kind][n]["client_cpu_s"] for kind in LOADS for n in ("ours", "defaults"))
    )
    server_cpu = _series(
        repeats,
        lambda rec: sum(rec["load"][kind][n]["server_cpu_s"] or 0 for kind in LOADS for n in ("ours", "defaults")),
    )
    out["client_cpu_share"] = summary(ratios(client_cpu, [c + s for c, s in zip(client_cpu, server_cpu, strict=True)]))
    return out
