"""Day-2 steps the collection's Jobs run inside the MLflow image: migrate, upload/fetch backups, gc.

Mounted from the ConfigMap mlflow-maintenance and run as ``python /opt/mlstack/mlflow_maintenance.py STEP``.
Credentials come from the environment (Secret references), never from arguments. Each step prints one
JSON line starting with ``MLSTACK_RESULT `` that the playbook reads from the Job's log.

Steps
  migrate  upgrade the tracking and the auth database, refuse a database migrated by a newer MLflow,
           and verify both are at this image's head revision
  upload   upload the dumps in $WORK (written by the dump container) and a manifest to
           s3://$BACKUP_BUCKET/$BACKUP_PREFIX/$BACKUP_NAME/, check each object's size, apply retention
  fetch    download a backup (named, or the newest) into $WORK and print its manifest
  gc       `mlflow gc` against the backend store and the artifact store
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

RESULT = "MLSTACK_RESULT "
DUMPS = ("tracking.dump", "auth.dump")


def emit(**values: object) -> None:
    print(RESULT + json.dumps(values, sort_keys=True), flush=True)


def fail(message: str, code: int = 1) -> None:
    emit(ok=False, error=message)
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


# ---------------------------------------------------------------- migrate
def _alembic(kind: str, url: str):  # noqa: ANN202 - (config, version table, upgrade function)
    if kind == "tracking":
        from mlflow.store.db import utils

        def upgrade(engine) -> None:  # noqa: ANN001 - what `mlflow db upgrade` does
            if utils._is_empty_database(engine):
                utils._initialize_tables(engine)
            else:
                utils._upgrade_db(engine)

        return utils._get_alembic_config(url), "alembic_version", upgrade
    if kind == "basic":
        from mlflow.server.auth.db import utils

        return utils._get_alembic_config(url), "alembic_version_auth", lambda engine: utils.migrate(engine, "head")
    from mlflow_oidc_auth.config import config as oidc_config
    from mlflow_oidc_auth.db import utils

    table = oidc_config.OIDC_ALEMBIC_VERSION_TABLE
    return utils._get_alembic_config(url), table, lambda engine: utils.migrate(engine, "head")


def _revision(engine, table: str) -> str | None:  # noqa: ANN001
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": table}).get_current_revision()


def migrate_one(kind: str, url: str, version: str) -> dict[str, str | None]:
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    config, table, upgrade = _alembic(kind, url)
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    engine = create_engine(url, pool_pre_ping=True)
    try:
        before = _revision(engine, table)
        known = {rev.revision for rev in script.walk_revisions()}
        if before is not None and before not in known:
            fail(
                f"the {kind} database is at revision {before}, which MLflow {version} in this image does not know: "
                "a newer MLflow migrated it. Deploy that newer image, or restore a backup taken before the upgrade "
                "(playbooks/20_restore.yaml).",
                code=3,
            )
        if before != head:
            try:
                upgrade(engine)
            except Exception as err:  # noqa: BLE001 - reported as the step's result, with the cause
                cause = str(getattr(err, "orig", None) or err).strip().splitlines()[0][:300]
                fail(f"migrating the {kind} database from {before} failed, rolled back ({type(err).__name__}: {cause})")
        after = _revision(engine, table)
    finally:
        engine.dispose()
    if after != head:
        fail(f"the {kind} database is at revision {after} after the migration, not at the head {head}")
    return {"before": before, "after": after, "head": head}


def cmd_migrate() -> None:
    import mlflow

    auth = os.environ.get("MLSTACK_AUTH_MODE", "none")
    result = {"tracking": migrate_one("tracking", os.environ["MLFLOW_BACKEND_STORE_URI"], mlflow.__version__)}
    if auth in ("basic", "oidc"):
        result["auth"] = migrate_one(auth, os.environ["MLFLOW_AUTH_DB_URI"], mlflow.__version__)
    emit(ok=True, mlflow=mlflow.__version__, **result)


# ---------------------------------------------------------------- S3
def _s3():  # noqa: ANN202
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
    )


def _base() -> tuple[str, str]:
    return os.environ["BACKUP_BUCKET"], os.environ["BACKUP_PREFIX"].strip("/")


def list_backups(s3, bucket: str, prefix: str) -> list[dict]:  # noqa: ANN001
    """Every complete backup (one with a manifest), oldest first."""
    found = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            if item["Key"].endswith("/manifest.json"):
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                found.append(json.loads(body))
    return sorted(found, key=lambda manifest: manifest["name"])


def _revisions() -> dict[str, str | None]:
    """The schema revisions the dumps were taken at (read-only; the writers are stopped or idle)."""
    from sqlalchemy import create_engine

    revisions: dict[str, str | None] = {}
    wanted = [("tracking", "MLFLOW_BACKEND_STORE_URI", "alembic_version")]
    auth = os.environ.get("MLSTACK_AUTH_MODE", "none")
    if auth == "basic":
        wanted.append(("auth", "MLFLOW_AUTH_DB_URI", "alembic_version_auth"))
    elif auth == "oidc":
        wanted.append(("auth", "MLFLOW_AUTH_DB_URI", os.environ.get("OIDC_ALEMBIC_VERSION_TABLE", "alembic_version")))
    for name, variable, table in wanted:
        engine = create_engine(os.environ[variable])
        try:
            revisions[name] = _revision(engine, table)
        finally:
            engine.dispose()
    return revisions


def cmd_upload() -> None:
    work = Path(os.environ.get("WORK", "/work"))
    bucket, prefix = _base()
    name = os.environ["BACKUP_NAME"] or datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ-scheduled")
    s3 = _s3()
    files = {}
    for dump in DUMPS:
        path = work / dump
        if not path.is_file() or path.stat().st_size == 0:
            fail(f"{dump} was not written by the dump step")
        key = f"{prefix}/{name}/{dump}"
        s3.upload_file(str(path), bucket, key)
        stored = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        if stored != path.stat().st_size:
            fail(f"s3://{bucket}/{key} holds {stored} bytes, the dump has {path.stat().st_size}")
        files[dump] = stored
    manifest = {
        "name": name,
        "kind": os.environ.get("BACKUP_KIND", "scheduled"),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "image": os.environ["BACKUP_IMAGE"],
        "from_version": os.environ.get("BACKUP_FROM", ""),
        "to_version": os.environ.get("BACKUP_TO", ""),
        "databases": {"tracking": os.environ["TRACKING_DB"], "auth": os.environ["AUTH_DB"]},
        "revisions": _revisions(),
        "files": files,
    }
    # The manifest goes last: a backup without one is incomplete and never listed or restored.
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}/manifest.json", Body=json.dumps(manifest, indent=2).encode())
    removed = []
    keep = int(os.environ.get("BACKUP_RETENTION", "0"))
    if manifest["kind"] == "scheduled" and keep > 0:
        scheduled = [m for m in list_backups(s3, bucket, prefix) if m.get("kind") == "scheduled"]
        for old in scheduled[:-keep]:
            listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{old['name']}/")
            keys = [{"Key": item["Key"]} for item in listing.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            removed.append(old["name"])
    emit(ok=True, name=name, location=f"s3://{bucket}/{prefix}/{name}/", size=sum(files.values()), removed=removed)


def cmd_fetch() -> None:
    work = Path(os.environ.get("WORK", "/work"))
    bucket, prefix = _base()
    s3 = _s3()
    backups = list_backups(s3, bucket, prefix)
    wanted = os.environ.get("BACKUP_NAME", "")
    chosen = [m for m in backups if m["name"] == wanted] if wanted else backups[-1:]
    if not chosen:
        fail(f"no backup {wanted or '(any)'} under s3://{bucket}/{prefix}/")
    manifest = chosen[0]
    for dump, size in manifest["files"].items():
        target = work / dump
        s3.download_file(bucket, f"{prefix}/{manifest['name']}/{dump}", str(target))
        if target.stat().st_size != size:
            fail(f"{dump} of backup {manifest['name']} has {target.stat().st_size} bytes, the manifest says {size}")
    emit(ok=True, manifest=manifest)


# ---------------------------------------------------------------- gc
def cmd_gc() -> None:
    from mlflow.cli import gc

    args = ["--backend-store-uri", os.environ["MLFLOW_BACKEND_STORE_URI"]]
    if os.environ.get("MLFLOW_ARTIFACTS_DESTINATION"):
        args += ["--artifacts-destination", os.environ["MLFLOW_ARTIFACTS_DESTINATION"]]
    if os.environ.get("GC_OLDER_THAN"):
        args += ["--older-than", os.environ["GC_OLDER_THAN"]]
    try:
        gc.main(args, prog_name="mlflow gc", standalone_mode=False)
    except Exception as err:  # noqa: BLE001 - reported as the step's result
        fail(f"mlflow gc failed: {err}")
    emit(ok=True, older_than=os.environ.get("GC_OLDER_THAN", ""))


STEPS = {"migrate": cmd_migrate, "upload": cmd_upload, "fetch": cmd_fetch, "gc": cmd_gc}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in STEPS:
        sys.exit(f"usage: mlflow_maintenance.py {'|'.join(STEPS)}")
    STEPS[sys.argv[1]]()
