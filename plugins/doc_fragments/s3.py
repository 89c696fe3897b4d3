# Copyright: (c) 2026, mlstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The S3 connection options of the collection's S3 modules (module_utils/_s3.py CONNECTION_ARGS)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  endpoint_url:
    description: S3 endpoint, such as https://s3.example.com.
    type: str
    required: true
  access_key:
    description: Access key id.
    type: str
    required: true
  secret_key:
    description: Secret access key.
    type: str
    required: true
  region:
    description: Region used in signatures.
    type: str
    default: us-east-1
  validate_certs:
    description: Verify the endpoint's TLS certificate.
    type: bool
    default: true
  ca_bundle:
    description: CA bundle to verify the endpoint with; the system store when omitted.
    type: path
"""
