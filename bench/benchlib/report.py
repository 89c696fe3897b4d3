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
    lines += render_helm(results)
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


def _ratio(num: float | None, den: float | None) -> str:
    return "-" if num is None or not den else f"{num / den:.2f}"


def render_helm(results: dict[str, Any]) -> list[str]:
    """Ours vs the community chart: first deploy and no-op re-run wall times, their ratios, the objects made."""
    from .helm import kinds_line

    helm = results.get("helm") or {}
    deploy = results.get("deploy") or {}
    if not helm.get("first"):
        return []
    ours_first = (deploy.get("first") or {}).get("wall_s")
    ours_noop = (deploy.get("noop") or {}).get("wall_s")
    noops = [run["wall_s"] for run in helm.get("noop", [])]
    noop_stat = {"median": helm.get("noop_median_s"), "min": min(noops), "max": max(noops), "n": len(noops)}
    lines = [
        f"Ours vs the community Helm chart ({helm.get('chart_version', '?')}, {helm.get('helm', 'helm')}): "
        f"helm upgrade --install --wait in namespace {helm['namespace']}, same cluster, same run",
    ]
    rows = [
        ["first deploy (empty namespace)", _num(ours_first, 1), _num(helm["first"]["wall_s"], 1)],
        [f"no-op re-run (helm: median [min-max] of {len(noops)})", _num(ours_noop, 1), fmt(noop_stat, 1)],
    ]
    rows[0].append(_ratio(ours_first, helm["first"]["wall_s"]))
    rows[1].append(_ratio(ours_noop, helm.get("noop_median_s")))
    lines += _table(["wall s", "ours (site.yml --tags mlflow)", "helm", "ours/helm"], rows)
    lines.append(
        f"  helm's figures leave out the chart's prerequisites, which the benchmark creates first in "
        f"{helm.get('prepare_s', 0):.1f} s (namespace, 2 databases, role, bucket, 5 Secrets); ours' first run "
        "creates its own (and checks, migrates and waits for the rollout)"
    )
    for who, pod in (("ours'", results.get("deploy_pod") or {}), ("helm's", helm.get("pod") or {})):
        if pod:
            inits = ", ".join(f"{name} ended {_num(sec, 0)}" for name, sec in pod["init_containers_ended_s"].items())
            lines.append(
                f"  {who} server pod, s after its creation: {inits + ', ' if inits else ''}container started "
                f"{_num(pod['container_started_s'], 0)}, Ready {_num(pod['ready_s'], 0)}"
            )
    objects = results.get("deploy_objects") or {}
    if objects:
        lines.append(f"  objects in the namespace, ours: {kinds_line(objects)}")
    helm_objects = kinds_line(helm.get("objects") or {})
    lines.append(f"  objects in the namespace, helm: {helm_objects} (+ the 5 prepared Secrets)")
    rollout = helm.get("noop_rollout") or {}
    unchanged = "no new rollout (Deployment generations and ReplicaSets unchanged)"
    lines.append(
        f"  helm no-op: {unchanged if rollout.get('unchanged') else 'ROLLED OUT AGAIN'}, but every upgrade is "
        f"a new release revision ({helm.get('revisions', '?')} after the runs)"
    )
    check = helm.get("check") or {}
    lines.append(
        f"  the chart's release works: anonymous search {check.get('anonymous_search')}, admin (basic auth) "
        f"{check.get('admin_search')}, proxied upload {check.get('admin_upload')} "
        f"({'in the bucket' if check.get('object_in_bucket') else 'NOT in the bucket'}), through the Ingress"
    )
    lines.append(
        "  Pod Security: bench-helm enforces restricted like ours; the chart's default securityContext has no "
        "seccompProfile, so the values add RuntimeDefault (and uid 1000, our image's)"
    )
    lines.append("")
    return lines
