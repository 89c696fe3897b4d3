"""The one printed table (plain text, aligned) built from the results dictionary."""

from __future__ import annotations

from typing import Any

DEPLOY_ROWS = (
    ("first", "first run (empty namespace)"),
    ("noop", "no-op re-run"),
    ("check", "--check run (converged)"),
)
SERVER_ROWS = (
    # (figure key, label, decimals)
    ("start_to_health_s", "start -> /health (root process age), s", 1),
    ("scale_to_pod_health_s", "scale 0->1 -> pod IP /health, s", 1),
    ("scale_to_service_health_s", "scale 0->1 -> Service /health, s", 1),
    ("scale_to_quiet_s", "scale 0->1 -> quiet (CPU < 10 % for 10 s), s", 1),
    ("idle_rss_mib", "idle RSS, pod cgroup (total_rss), MiB", 0),
    ("idle_usage_mib", "idle usage - cache, pod cgroup, MiB", 0),
    ("idle_pss_mib", "idle PSS, sum over the pod's processes, MiB", 0),
    ("processes", "processes in the MLflow container", 0),
    ("idle_cpu_pct", "idle CPU, % of one core", 1),
    ("runs_per_s", "runs/s (create + log_batch + end)", 1),
    ("searches_per_s", "searches/s (runs/search, 50 results)", 1),
    ("upload_mb_per_s", "proxied upload MB/s (1 MB PUTs)", 1),
    ("upload_vs_raw_s3", "  proxied / raw S3", 2),
    ("cpu_ms_per_run", "server CPU ms per run", 1),
    ("cpu_ms_per_search", "server CPU ms per search", 1),
    ("cpu_ms_per_upload", "server CPU ms per upload", 1),
    ("load_errors", "request errors (all workloads)", 0),
)


def _num(value: float | None, decimals: int) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def fmt(stat: dict[str, Any] | None, decimals: int) -> str:
    """``median [min-max]`` (just the value when there was one measurement)."""
    if not stat or stat.get("median") is None:
        return "-"
    if stat["n"] == 1 or stat["min"] == stat["max"]:
        return _num(stat["median"], decimals)
    return f"{_num(stat['median'], decimals)} [{_num(stat['min'], decimals)}-{_num(stat['max'], decimals)}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(header))]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append(
            "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        )
    return lines


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"MLflow benchmark {meta['timestamp']}  commit {meta['commit']}  {meta['cpus']} CPUs  "
        f"MLflow {meta['mlflow_version']}  load average {meta['loadavg_start']} -> {meta.get('loadavg_end', '?')}",
        "",
    ]
    deploy = results.get("deploy") or {}
    if deploy:
        lines.append(f"Deploy: ansible-playbook site.yml --tags mlflow, namespace {meta['namespace']} (one run each)")
        rows = []
        for key, label in DEPLOY_ROWS:
            run = deploy.get(key)
            if not run:
                continue
            rows.append(
                [
                    label,
                    _num(run["wall_s"], 1),
                    _num(run["wait_s"], 1),
                    _num(run["overhead_s"], 1),
                    _num(run.get("outside_tasks_s"), 1),
                    "-" if run["changed"] is None else str(run["changed"]),
                    str(run["task_count"]),
                    str(run["rc"]),
                ]
            )
        header = ["run", "wall s", "waiting for MLflow s", "Ansible s", "(start-up + gaps s)", "changed"]
        lines += _table([*header, "task results", "rc"], rows)
        wait_names = " + ".join(f'"{name}..."' for name in meta.get("wait_tasks", []))
        lines.append(f"  waiting for MLflow = the tasks {wait_names} (name prefixes)")
        lines.append("  Ansible = the rest of the wall time; start-up + gaps = wall time outside every task's duration")
        first = deploy.get("first") or {}
        slowest = [
            t
            for t in first.get("slowest_tasks", [])
            if not t["name"].split(" : ", 1)[-1].startswith(tuple(meta.get("wait_tasks", [])))
        ]
        if slowest:
            lines.append("  slowest other tasks of the first run:")
            lines += [f"    {t['seconds']:5.1f} s  {t['name']}" for t in slowest[:5]]
        lines.append("")
    server = results.get("server") or {}
    figures = server.get("figures")
    if figures:
        config = server["config"]
        lines.append(
            f"Server: {server['clients']} client processes x {server['duration_s']:.0f} s per workload, "
            f"{len(server['repeats'])} repeats, interleaved; median [min-max]; ratio = median of per-repeat ratios"
        )
        rows = [
            [
                "uvicorn workers / job execution",
                f"{config['ours']['workers']} / {config['ours']['job_execution']}",
                f"{config['defaults']['workers']} / {config['defaults']['job_execution']} (MLflow defaults)",
                "",
            ]
        ]
        for key, label, decimals in SERVER_ROWS:
            ratio = "" if key == "upload_vs_raw_s3" else fmt(figures["ratio"].get(key), 2)
            rows.append(
                [label, fmt(figures["ours"].get(key), decimals), fmt(figures["defaults"].get(key), decimals), ratio]
            )
        rows.append(["raw S3 upload MB/s (boto3, reference)", fmt(figures["raw_s3_mb_per_s"], 1), "", ""])
        lines += _table(["figure", "ours", "defaults", "ours/defaults"], rows)
        share = figures.get("client_cpu_share") or {}
        percent = {**share, **{key: share[key] * 100 for key in ("median", "min", "max") if share.get(key) is not None}}
        lines.append("")
        lines.append(
            f"Notes: the load clients run on the same {meta['cpus']} cores as the servers; they used "
            f"{fmt(percent, 0)} % of the CPU time of clients + MLflow during the loads "
            "(PostgreSQL and SeaweedFS CPU not counted)."
        )
        lines.append(
            f"       ours is loaded at its {config['ours']['address']}, defaults at its "
            f"{config['defaults']['address']}; MLflow {config['ours'].get('version', '?')} / "
            f"{config['defaults'].get('version', '?')}."
        )
        lines.append(
            "       Memory and CPU are the pod cgroup's (pause container included); total_rss counts each "
            "anonymous page once."
        )
    for problem in results.get("problems", []):
        lines.append(f"PROBLEM: {problem}")
    return "\n".join(lines)
