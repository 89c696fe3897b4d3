# Copyright: (c) 2026, mlstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ensure a bucket exists (or is gone) on an S3-compatible store."""

from __future__ import annotations

DOCUMENTATION = r"""
module: s3_bucket
short_description: Ensure a bucket on an S3-compatible store (SeaweedFS, MinIO, Ceph RGW, AWS)
description:
  - Creates the bucket when it is missing, with path-style addressing and a custom endpoint.
  - A bucket it creates gets a marker object (C(.mlstack.mlflow/created)), so a later C(state=absent) knows
    the bucket is its own. A bucket that existed before is never marked.
  - Deletes it with C(state=absent); with C(purge=true) its objects are deleted first. With C(prefixes),
    only the objects under them are deleted, and the bucket only when it carries the marker and nothing
    else is left in it; a bucket someone else created, or that holds other data, stays.
  - Why not amazon.aws.s3_bucket? It reads and writes bucket sub-resources (tagging, versioning,
    encryption, ownership controls, public access blocks) that S3-compatible stores often do not
    implement, so it fails against them. This module uses only HeadBucket, CreateBucket,
    ListObjectsV2, PutObject (the marker), DeleteObjects and DeleteBucket.
  - Real errors surface, naming the bucket and endpoint; a wrong key, a refused TLS certificate or a bucket owned by
    someone else fails the task.
version_added: 0.1.0
author: mlstack developers
options:
  name:
    description: Bucket name.
    type: str
    required: true
  state:
    description: Whether the bucket should exist.
    type: str
    choices: [present, absent]
    default: present
  purge:
    description: With C(state=absent), delete every object first (otherwise a non-empty bucket fails).
    type: bool
    default: false
  prefixes:
    description:
      - With C(state=absent), delete only the objects under these key prefixes (a C(/) is added to each),
        and the bucket itself only when it carries the marker and is empty but for it.
      - Overrides C(purge).
    type: list
    elements: str
extends_documentation_fragment:
  - mlstack.mlflow.s3
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
requirements:
  - boto3
"""

EXAMPLES = r"""
- name: Ensure the artifacts bucket exists
  mlstack.mlflow.s3_bucket:
    name: mlflow
    endpoint_url: https://s3.example.com
    access_key: "{{ s3_access_key }}"
    secret_key: "{{ s3_secret_key }}"
  no_log: true
"""

RETURN = r"""
existed:
  description: Whether the bucket existed before the run.
  returned: always
  type: bool
deleted_objects:
  description: Number of objects deleted by a purge.
  returned: when state=absent
  type: int
bucket_deleted:
  description: Whether the bucket itself was (or, in check mode, would be) deleted.
  returned: when state=absent
  type: bool
kept_because:
  description: Why the bucket stayed after deleting the prefixes (empty when it was deleted).
  returned: when state=absent with prefixes
  type: str
"""

from typing import Any
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlstack.mlflow.plugins.module_utils._s3 import CONNECTION_ARGS, HAS_BOTO3, make_client

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # reported by main() through HAS_BOTO3
    BotoCoreError = ClientError = Exception


def bucket_exists(s3: Any, name: str) -> bool:
    try:
        s3.head_bucket(Bucket=name)
        return True
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise


MARKER = ".mlstack.mlflow/created"


def has_marker(s3: Any, name: str) -> bool:
    try:
        s3.head_object(Bucket=name, Key=MARKER)
        return True
    except ClientError as err:
        if str(err.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def keys_left(s3: Any, name: str, limit: int = 2) -> list[str]:
    page = s3.list_objects_v2(Bucket=name, MaxKeys=limit)
    return [obj["Key"] for obj in page.get("Contents", [])]


def purge_objects(s3: Any, name: str, prefix: str = "") -> int:
    deleted = 0
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name, Prefix=prefix):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    return deleted


def purge_prefixes(module: AnsibleModule, s3: Any, name: str, existed: bool, prefixes: list[str]) -> dict[str, Any]:
    """Delete what is under ``prefixes``; the bucket too when it is ours (marked) and nothing else is in it."""
    if not existed:
        return {"changed": False, "existed": False, "deleted_objects": 0, "bucket_deleted": False, "kept_because": ""}
    wanted = [prefix.strip("/") + "/" for prefix in prefixes if prefix.strip("/")]
    deleted = 0
    if module.check_mode:
        for prefix in wanted:
            deleted += sum(
                page.get("KeyCount", 0)
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix)
            )
    else:
        for prefix in wanted:
            deleted += purge_objects(s3, name, prefix)
    ours = has_marker(s3, name)
    others = [key for key in keys_left(s3, name, limit=1000) if key != MARKER and not key.startswith(tuple(wanted))]
    kept = ""
    if not ours:
        kept = "the collection did not create it (no marker object)"
    elif others:
        kept = f"it holds other objects, such as {others[0]!r}"
    if not kept and not module.check_mode:
        s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": MARKER}], "Quiet": True})
        s3.delete_bucket(Bucket=name)
    return {
        "changed": deleted > 0 or not kept,
        "existed": True,
        "deleted_objects": deleted,
        "bucket_deleted": not kept,
        "kept_because": kept,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            **CONNECTION_ARGS,
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "purge": {"type": "bool", "default": False},
            "prefixes": {"type": "list", "elements": "str"},
        },
        supports_check_mode=True,
    )
    if not HAS_BOTO3:
        module.fail_json(msg="boto3 is required (pip install boto3)")
    params = module.params
    name = params["name"]
    endpoint = urlsplit(params["endpoint_url"])
    if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
        module.fail_json(
            msg=f"endpoint_url {params['endpoint_url']!r} is not an http(s) URL such as https://s3.example.com"
        )
    try:
        s3 = make_client(params)
        existed = bucket_exists(s3, name)
        if params["state"] == "present":
            if not existed and not module.check_mode:
                s3.create_bucket(Bucket=name)
                s3.put_object(Bucket=name, Key=MARKER, Body=b"created by the mlstack.mlflow collection\n")
            module.exit_json(changed=not existed, existed=existed)
        if params["prefixes"] is not None:
            module.exit_json(**purge_prefixes(module, s3, name, existed, params["prefixes"]))
        deleted = 0
        if existed and not module.check_mode:
            if params["purge"]:
                deleted = purge_objects(s3, name)
            s3.delete_bucket(Bucket=name)
        module.exit_json(changed=existed, existed=existed, deleted_objects=deleted, bucket_deleted=existed)
    except ClientError as err:
        error = err.response.get("Error", {})
        module.fail_json(
            msg=f"S3 refused the request for bucket {name!r} at {params['endpoint_url']}: "
            f"{error.get('Code')} {error.get('Message', '')}".strip()
        )
    except BotoCoreError as err:
        module.fail_json(msg=f"S3 request for bucket {name!r} at {params['endpoint_url']} failed: {err}")


if __name__ == "__main__":
    main()
