"""A user's round trip against a deployed MLflow: experiment, run, metric, artifact up and down.

Proves the artifact landed in the S3 bucket (server-proxied: the client itself has no S3 keys).
Prints one JSON line with what it created; exits non-zero on any failure.

Environment: MLFLOW_TRACKING_URI (where MLflow answers), optionally MLFLOW_TRACKING_TOKEN; for the
bucket check S3_ENDPOINT_URL, S3_ACCESS_KEY, S3_SECRET_KEY, MLFLOW_BUCKET, MLFLOW_ARTIFACTS_PREFIX.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid
from pathlib import Path


def bucket_keys(prefix: str) -> list[str]:
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT_URL"],
        aws_access_key_id=os.environ["S3_ACCESS_KEY"],
        aws_secret_access_key=os.environ["S3_SECRET_KEY"],
        region_name=os.environ.get("S3_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}),
    )
    listing = s3.list_objects_v2(Bucket=os.environ["MLFLOW_BUCKET"], Prefix=prefix)
    return [obj["Key"] for obj in listing.get("Contents", [])]


def main() -> int:
    # The client must not carry S3 keys: the server proxies artifacts.
    client_env_keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")
    for key in client_env_keys:
        os.environ.pop(key, None)
    # A client outside the cluster: since MLflow 3.17 a proxying server advertises presigned
    # downloads, whose URLs name the S3 endpoint as the server sees it (an in-cluster name). Keep
    # downloads proxied, as the README tells clients outside the cluster to.
    os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    name = f"roundtrip-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(name)
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    client.log_param(run_id, "learning_rate", "0.01")
    client.log_metric(run_id, "accuracy", 0.93)
    payload = os.urandom(64 * 1024)
    with tempfile.TemporaryDirectory() as workdir:
        source = Path(workdir) / "model.bin"
        source.write_bytes(payload)
        client.log_artifact(run_id, str(source))
        downloaded = Path(client.download_artifacts(run_id, "model.bin", workdir + "/down"))
        if downloaded.read_bytes() != payload:
            print("artifact came back different", file=sys.stderr)
            return 1
    client.set_terminated(run_id)
    fetched = client.get_run(run_id)
    if fetched.data.metrics.get("accuracy") != 0.93:
        print(f"metric not stored: {fetched.data.metrics}", file=sys.stderr)
        return 1
    result: dict[str, object] = {
        "experiment_id": experiment_id,
        "experiment_name": name,
        "run_id": run_id,
        "artifact_uri": fetched.info.artifact_uri,
    }
    if os.environ.get("MLFLOW_BUCKET"):
        prefix = os.environ.get("MLFLOW_ARTIFACTS_PREFIX", "artifacts").strip("/")
        keys = bucket_keys(f"{prefix}/{experiment_id}/{run_id}/")
        if not any(key.endswith("/model.bin") for key in keys):
            print(
                f"artifact not found in bucket {os.environ['MLFLOW_BUCKET']} under {prefix}/: {keys}", file=sys.stderr
            )
            return 1
        result["bucket_keys"] = keys
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
