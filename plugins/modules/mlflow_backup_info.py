# Copyright: (c) 2026, mlstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""List the collection's MLflow database backups on S3 and pick one."""

from __future__ import annotations

DOCUMENTATION = r"""
module: mlflow_backup_info
short_description: List MLflow database backups on S3 and select one (named, or the newest)
description:
  - Lists the backups the collection's backup Jobs wrote under C(s3://bucket/prefix/NAME/). A backup is
    complete when its C(manifest.json) exists (it is written last); incomplete ones are not listed.
  - Each manifest records the image the backup was taken from, the MLflow versions of the upgrade it
    preceded, the schema revisions and the size of each dump.
  - Read-only; fails when a named backup does not exist, when no backup exists and I(require) is true,
    or when a manifest is unreadable.
version_added: 0.2.0
author: mlstack developers
options:
  bucket:
    description: Bucket the backups are in.
    type: str
    required: true
  prefix:
    description: Key prefix of the backups (without slashes at the ends).
    type: str
    required: true
  name:
    description: Backup to select; empty selects the newest.
    type: str
    default: ""
  require:
    description: Fail when nothing can be selected.
    type: bool
    default: true
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
- name: Find the newest backup
  mlstack.mlflow.mlflow_backup_info:
    bucket: mlflow
    prefix: backups
    endpoint_url: https://s3.example.com
    access_key: "{{ s3_access_key }}"
    secret_key: "{{ s3_secret_key }}"
  register: backups
  no_log: true
"""

RETURN = r"""
backups:
  description: Every complete backup's manifest, oldest first.
  returned: always
  type: list
  elements: dict
selected:
  description: The manifest of the named or newest backup (empty when none and require is false).
  returned: always
  type: dict
"""

import json
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlstack.mlflow.plugins.module_utils._s3 import CONNECTION_ARGS, HAS_BOTO3, make_client

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # reported by main() through HAS_BOTO3
    BotoCoreError = ClientError = Exception


def list_backups(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Manifests of the complete backups under ``prefix``, sorted by name (names start with a UTC stamp)."""
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith("/manifest.json") and key.count("/") == prefix.count("/") + 2:
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                try:
                    manifest = json.loads(body)
                except ValueError as err:
                    raise ValueError(f"s3://{bucket}/{key} is not a readable manifest: {err}") from err
                if not isinstance(manifest, dict) or "name" not in manifest or "image" not in manifest:
                    raise ValueError(f"s3://{bucket}/{key} lacks the name or image of its backup")
                found.append(manifest)
    return sorted(found, key=lambda manifest: str(manifest["name"]))


def select(backups: list[dict[str, Any]], name: str) -> dict[str, Any]:
    if not name:
        return backups[-1] if backups else {}
    return next((manifest for manifest in backups if manifest["name"] == name), {})


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "bucket": {"type": "str", "required": True},
            "prefix": {"type": "str", "required": True},
            "name": {"type": "str", "default": ""},
            "require": {"type": "bool", "default": True},
            **CONNECTION_ARGS,
        },
        supports_check_mode=True,
    )
    if not HAS_BOTO3:
        module.fail_json(msg="boto3 is required (pip install boto3)")
    params = module.params
    bucket, prefix, name = params["bucket"], params["prefix"].strip("/"), params["name"]
    where = f"s3://{bucket}/{prefix}/"
    try:
        backups = list_backups(make_client(params), bucket, prefix)
    except ClientError as err:
        error = err.response.get("Error", {})
        module.fail_json(msg=f"S3 refused listing {where}: {error.get('Code')} {error.get('Message', '')}".strip())
    except (BotoCoreError, ValueError) as err:
        module.fail_json(msg=f"Could not read the backups under {where}: {err}")
    selected = select(backups, name)
    if params["require"] and not selected:
        names = ", ".join(manifest["name"] for manifest in backups) or "none"
        wanted = f"backup {name!r}" if name else "a backup"
        module.fail_json(msg=f"There is no {wanted} under {where} (complete backups: {names}).", backups=backups)
    module.exit_json(changed=False, backups=backups, selected=selected)


if __name__ == "__main__":
    main()
