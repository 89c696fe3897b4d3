"""`make bench`: deploy timings and MLflow server figures on the local stack, printed as one table.

Also saved as JSON: .local/bench/bench-<timestamp>.json and .local/bench/latest.json. See bench/README.md.
Exits non-zero when a deploy failed, the no-op re-run changed something, or a server failed to start.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib.common import OUT_DIR, REPO, BenchError, load_stack_env, require_env, say, warn
from benchlib.deploy import NAMESPACE, WAIT_TASKS, deploy_timings, destroy
from benchlib.helm import HelmBench, build_helm, count_kinds, namespace_objects, pod_phases, run_helm_part
from benchlib.report import render
from benchlib.serverbench import run_server_bench
from benchlib.servers import Defaults, DefaultsResources, Ours, image_of


def _commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _mlflow_version(image: str) -> str:
    """The MLflow version in an image tag like ``.../mlflow:3.17.2-mlstack.1``."""
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else "?"
    return tag.split("-", 1)[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per workload (default 15)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the server part (default 3)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client processes (default 8)")
    parser.add_argument("--idle", type=float, default=30.0, help="idle seconds before sampling memory (default 30)")
    parser.add_argument(
        "--helm-repeats", type=int, default=3, help="no-op helm upgrade --install runs, median taken (default 3)"
    )
    parser.add_argument(
        "--parts",
        default="deploy,helm,server",
        help="comma-separated: deploy (first, no-op, --check runs), helm (the community chart's helm upgrade "
        "--install, first and no-op), server (ours vs defaults); helm and server always need a first deploy",
    )
    parser.add_argument("--keep", action="store_true", help="leave the bench namespace, databases and buckets")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    load_stack_env()
    require_env("KUBECONFIG", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "S3_ENDPOINT_URL")
    require_env("S3_ACCESS_KEY", "S3_SECRET_KEY")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for old_log in OUT_DIR.glob("logs/*-server.log"):  # the servers' logs are appended to during a run
        old_log.unlink()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "meta": {
            "timestamp": stamp,
            "commit": _commit(),
            "cpus": os.cpu_count(),
            "mlflow_version": "?",
            "mlflow_image": "?",
            "loadavg_start": _loadavg(),
            "namespace": NAMESPACE,
            "wait_tasks": list(WAIT_TASKS),
            "args": vars(args),
        },
        "deploy": {},
        "deploy_objects": {},
        "helm": {},
        "server": {},
        "problems": [],
    }
    problems: list[str] = results["problems"]
    resources = DefaultsResources() if "server" in parts else None
    defaults: Defaults | None = None
    helm_bench: HelmBench | None = None
    started = time.monotonic()
    say(f"bench: parts {', '.join(sorted(parts))}; results go to {OUT_DIR}")
    try:
        if "helm" in parts:  # before anything is deployed: a cold build is not part of any figure
            helm_binary, build_s = build_helm()
            results["meta"]["helm_build_s"] = build_s
            helm_bench = HelmBench(helm_binary, repeats=max(1, args.helm_repeats))
            helm_bench.destroy("cleanup-before")  # what an interrupted run of the helm part may have left
        destroy("cleanup-before")
        DefaultsResources().drop()  # what an interrupted run of the server part may have left
        runs = deploy_timings(skip_noop="deploy" not in parts)
        results["deploy"] = {key: run.as_json() for key, run in runs.items()}
        results["meta"]["mlflow_image"] = image_of(NAMESPACE)
        results["meta"]["mlflow_version"] = _mlflow_version(results["meta"]["mlflow_image"])
        noop = runs.get("noop")
        if noop is not None and (noop.rc != 0 or noop.changed != 0):
            problems.append(f"the no-op re-run reported changed={noop.changed} rc={noop.rc}: {noop.failed_tasks}")
        check = runs.get("check")
        if check is not None and check.rc != 0:
            problems.append(f"the --check run failed (rc={check.rc}): {check.failed_tasks}")
        results["deploy_objects"] = count_kinds(namespace_objects(NAMESPACE))
        results["deploy_pod"] = pod_phases(NAMESPACE, Ours.selector)
        if helm_bench is not None:
            results["helm"] = run_helm_part(helm_bench, NAMESPACE)
            problems += [f"helm: {problem}" for problem in results["helm"]["check"]["problems"]]
            if not results["helm"]["noop_rollout"]["unchanged"]:
                problems.append("helm: the no-op helm upgrade --install rolled the Deployment out again")
            if not args.keep:  # now, so the chart's MLflow does not idle beside the server part's loads
                helm_bench.destroy("cleanup-after")
                helm_bench = None
        if "server" in parts and resources is not None:
            say(
                f"server: creating the defaults server's database, role and bucket, and its Secret, Service, "
                f"migration Job and Deployment in {NAMESPACE}"
            )
            defaults = Defaults(NAMESPACE, resources)
            defaults.create()
            ours = Ours(NAMESPACE)
            results["server"] = run_server_bench(ours, defaults, args.repeats, args.clients, args.duration, args.idle)
    except BenchError as err:
        problems.append(str(err))
        say(f"bench: FAILED: {err}")
    except Exception as err:  # noqa: BLE001 - e.g. an API error: still clean up and report
        problems.append(f"{type(err).__name__}: {err}"[:1000])
        say(f"bench: FAILED: {type(err).__name__}")
        traceback.print_exc()
    except KeyboardInterrupt:
        problems.append("interrupted")
        say("bench: interrupted; cleaning up")
    finally:
        if helm_bench is not None and not args.keep:
            try:
                helm_bench.destroy("cleanup-after")
            except Exception as err:  # noqa: BLE001 - cleanup goes on; reported
                problems.append(f"helm cleanup: {err}")
                warn(problems[-1])
        if defaults is not None and defaults.created and not args.keep:
            try:  # its pod holds connections to its database: stop it first (the namespace goes below)
                defaults.stop()
            except Exception as err:  # noqa: BLE001 - cleanup goes on; reported
                warn(f"could not stop the defaults server: {err}")
        if resources is not None and not args.keep:
            try:
                resources.drop()
                left = resources.leftovers()
                if left:
                    problems.append(f"the cleanup left {', '.join(left)} behind")
            except Exception as err:  # noqa: BLE001 - cleanup goes on; reported
                problems.append(f"could not drop the defaults database, role or bucket: {err}")
                warn(problems[-1])
        if not args.keep:
            try:
                destroy("cleanup-after")
            except BenchError as err:
                problems.append(str(err))
                warn(str(err))
    results["meta"]["loadavg_end"] = _loadavg()
    results["meta"]["total_s"] = time.monotonic() - started
    out = OUT_DIR / f"bench-{stamp}.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    (OUT_DIR / "latest.json").write_text(out.read_text())
    say(f"bench: done in {results['meta']['total_s']:.0f} s; results in {out}")
    print()
    print(render(results))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
