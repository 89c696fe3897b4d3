"""Deploy timings: ``site.yml --tags mlflow`` on a dedicated namespace, timed per task.

Ansible runs with the ``ansible.posix.jsonl`` stdout callback, which writes one JSON event per line as
it happens: the benchmark shows the running task while it waits and gets each task's start and end
from the results, and the changed count from the final stats.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import IO, Any

from .common import OUT_DIR, REPO, VENV_BIN, BenchError, Ticker, say
from .common import leftovers as common_leftovers

NAMESPACE = "mlflow-bench"
# Everything the bench deployment owns is named apart from the `mlflow` deployment and the Molecule
# scenarios, so the benchmark never touches them.
BENCH_VARS: dict[str, str] = {
    "mlflow_namespace": NAMESPACE,
    "mlflow_db_name": "mlflow_bench",
    "mlflow_auth_db_name": "mlflow_bench_auth",
    "mlflow_db_user": "mlflow_bench",
    "mlflow_artifacts_bucket": "mlflow-bench",
    # No auth app: the server part compares server settings (workers, job runner), and its clients need no
    # tokens. 10_configure_keycloak changes nothing in this mode, so its time is not in the deploy figures.
    "mlflow_auth_mode": "none",
    # Still exposed through an Ingress like the local inventory's (its times are part of the deploy figures),
    # which preflight refuses without a login unless acknowledged: a private host name on the local stack.
    "mlflow_auth_none_acknowledged": "true",
    # A code-server namespace that does not exist: 17 then leaves the shared code-server alone (it would
    # wire it to the bench MLflow, and 19 would take the helpers of the `mlflow` deployment back out).
    "mlflow_workstation_namespace": "mlflow-bench-no-code-server",
}
# Time spent waiting for MLflow itself (schema migration and rollout), not for Ansible. Matched as name
# prefixes, so "Wait for the MLflow rollout (or for its pods to crash-loop)" counts too.
WAIT_TASKS = (
    "Ensure the migration Job runs",
    "Wait for the migration Job to finish",
    "Wait for the MLflow rollout",
)
_RESULT_EVENTS = {
    "v2_runner_on_ok": "ok",
    "v2_runner_on_failed": "failed",
    "v2_runner_on_skipped": "skipped",
    "v2_runner_on_unreachable": "unreachable",
}


def bench_vars() -> dict[str, str]:
    domain = os.environ.get("DOMAIN_NAME", "mlstack.test")
    # Its own host name keeps its Ingress apart from the `mlflow` deployment's.
    return {**BENCH_VARS, "mlflow_hostname": f"mlflow-bench.{domain}"}


@dataclass
class TaskTiming:
    name: str
    status: str
    changed: bool
    seconds: float


@dataclass
class PlaybookRun:
    label: str
    argv: list[str]
    rc: int
    wall_s: float
    wait_s: float = 0.0
    overhead_s: float = 0.0
    outside_tasks_s: float = 0.0
    changed: int | None = None
    failures: int = 0
    tasks: list[TaskTiming] = field(default_factory=list)
    failed_tasks: list[str] = field(default_factory=list)
    log: str = ""

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["slowest_tasks"] = [asdict(t) for t in sorted(self.tasks, key=lambda t: -t.seconds)[:10]]
        data["changed_tasks"] = [t.name for t in self.tasks if t.changed]
        del data["tasks"]
        data["task_count"] = len(self.tasks)
        return data


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _task_name(event: dict[str, Any]) -> str:
    return str((event.get("task") or {}).get("name", "?"))


def _is_wait_task(name: str) -> bool:
    short = name.split(" : ", 1)[-1]
    return short.startswith(WAIT_TASKS)


def _consume(stream: IO[str], log: IO[str], run: PlaybookRun, current: dict[str, str]) -> dict[str, Any]:
    """Read the jsonl callback's events: task timings into ``run``, the running task into ``current``."""
    stats: dict[str, Any] = {}
    for line in stream:
        log.write(line)
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = event.get("_event", "")
        if kind in ("v2_playbook_on_task_start", "v2_runner_on_start"):
            current["task"] = _task_name(event)
        elif kind in _RESULT_EVENTS:
            duration = (event.get("task") or {}).get("duration") or {}
            seconds = 0.0
            if duration.get("start") and duration.get("end"):
                seconds = (_parse_time(duration["end"]) - _parse_time(duration["start"])).total_seconds()
            result = next(iter((event.get("hosts") or {}).values()), {})
            status = _RESULT_EVENTS[kind]
            if status == "failed" and result.get("ignore_errors"):
                status = "failed-ignored"
            timing = TaskTiming(_task_name(event), status, bool(result.get("changed")), seconds)
            run.tasks.append(timing)
            if status in ("failed", "unreachable"):
                message = str(result.get("msg") or result.get("message") or "")[:400]
                run.failed_tasks.append(f"{timing.name}: {message}")
        elif kind == "v2_playbook_on_stats":
            stats = event.get("stats") or {}
    return stats


def run_playbook(
    label: str,
    playbook: str,
    extra: list[str] | None = None,
    quiet: bool = False,
    extra_vars: dict[str, Any] | None = None,
) -> PlaybookRun:
    """Run one playbook against inventory/local with the bench variables; time it per task."""
    OUT_DIR.joinpath("logs").mkdir(parents=True, exist_ok=True)
    log_path = OUT_DIR / "logs" / f"{label}.jsonl"
    argv = [
        str(VENV_BIN / "ansible-playbook"),
        "-i",
        "inventory/local",
        playbook,
        *(extra or []),
        "-e",
        json.dumps({**bench_vars(), **(extra_vars or {})}),
    ]
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.jsonl",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    current = {"task": "starting ansible-playbook"}
    run = PlaybookRun(label=label, argv=argv[:4] + argv[4:-2], rc=-1, wall_s=0.0, log=str(log_path))
    if not quiet:
        say(f"deploy: {label}: ansible-playbook {' '.join(argv[3:-2])}")
    started = time.monotonic()
    # The log holds task results of the bench namespace (no_log tasks are censored by Ansible); keep it private.
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with (
        os.fdopen(fd, "w") as log,
        Ticker(label, detail=lambda: current["task"]),
        subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc,
    ):
        assert proc.stdout is not None  # noqa: S101 - Popen with stdout=PIPE
        try:
            stats = _consume(proc.stdout, log, run, current)
        except BaseException:
            proc.terminate()  # interrupted: do not leave ansible-playbook running on
            raise
        run.rc = proc.wait()
    run.wall_s = time.monotonic() - started
    host_stats = next(iter(stats.values()), {}) if stats else {}
    run.changed = int(host_stats["changed"]) if "changed" in host_stats else None
    run.failures = int(host_stats.get("failures", 0)) + int(host_stats.get("unreachable", 0))
    run.wait_s = sum(t.seconds for t in run.tasks if _is_wait_task(t.name))
    run.overhead_s = run.wall_s - run.wait_s
    # Start-up (inventory, collections, templating of the first play) and gaps between tasks.
    run.outside_tasks_s = run.wall_s - sum(t.seconds for t in run.tasks)
    if not quiet:
        say(
            f"deploy: {label}: rc={run.rc} wall {run.wall_s:.1f} s (waiting for MLflow {run.wait_s:.1f} s, "
            f"Ansible {run.overhead_s:.1f} s), changed={run.changed}, {len(run.tasks)} task results"
        )
    for failure in run.failed_tasks:
        say(f"deploy: {label}: FAILED {failure}")
    return run


def destroy(label: str) -> PlaybookRun:
    """Remove the bench namespace, databases, role and bucket (the Molecule scenarios' destroy)."""
    say(f"cleanup: {label}: removing namespace {NAMESPACE}, its databases, role and bucket")
    # mlflow_purge: destroy.yml may be 19_uninstall.yaml, which keeps the data without it.
    run = run_playbook(label, "extensions/molecule/shared/destroy.yml", quiet=True, extra_vars={"mlflow_purge": True})
    if run.rc != 0:
        raise BenchError(f"{label} failed (rc={run.rc}): {'; '.join(run.failed_tasks)} - log {run.log}")
    left = leftovers()
    for _ in range(12):  # a namespace may still be terminating for a few seconds
        if not left:
            break
        time.sleep(5)
        left = leftovers()
    if left:
        raise BenchError(f"{label} left {', '.join(left)} behind - log {run.log}")
    say(f"cleanup: {label}: done in {run.wall_s:.1f} s")
    return run


def leftovers() -> list[str]:
    """What of the bench deployment still exists: namespace, databases, role, bucket."""
    return common_leftovers(
        NAMESPACE,
        [BENCH_VARS["mlflow_db_name"], BENCH_VARS["mlflow_auth_db_name"]],
        BENCH_VARS["mlflow_db_user"],
        BENCH_VARS["mlflow_artifacts_bucket"],
    )


def deploy_timings(skip_noop: bool = False) -> dict[str, PlaybookRun]:
    """First run on an empty namespace, a no-op re-run, and a --check run of the converged state."""
    runs: dict[str, PlaybookRun] = {}
    runs["first"] = run_playbook("deploy-first", "site.yml", ["--tags", "mlflow"])
    if runs["first"].rc != 0:
        raise BenchError(f"the first deploy failed (rc={runs['first'].rc}); log {runs['first'].log}")
    if skip_noop:
        return runs
    runs["noop"] = run_playbook("deploy-noop", "site.yml", ["--tags", "mlflow"])
    runs["check"] = run_playbook("deploy-check", "site.yml", ["--tags", "mlflow", "--check"])
    return runs
