# Copyright: (c) 2026, mlstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The S3 client and connection options the collection's S3 modules share."""

from __future__ import annotations

from typing import Any

try:
    import boto3
    from botocore.config import Config

    HAS_BOTO3 = True
except ImportError:
    HAS_BOTO3 = False

CONNECTION_ARGS: dict[str, dict[str, Any]] = {
    "endpoint_url": {"type": "str", "required": True},
    "access_key": {"type": "str", "required": True, "no_log": True},
    "secret_key": {"type": "str", "required": True, "no_log": True},
    "region": {"type": "str", "default": "us-east-1"},
    "validate_certs": {"type": "bool", "default": True},
    "ca_bundle": {"type": "path"},
}


def make_client(params: dict[str, Any]) -> Any:
    """A path-style S3 client; TLS verified unless validate_certs is false, with ca_bundle if given."""
    verify: bool | str = params["validate_certs"]
    if verify and params.get("ca_bundle"):
        verify = params["ca_bundle"]
    return boto3.client(
        "s3",
        endpoint_url=params["endpoint_url"],
        aws_access_key_id=params["access_key"],
        aws_secret_access_key=params["secret_key"],
        region_name=params["region"],
        verify=verify,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}),
    )
