# Copyright: (c) 2026, mlstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Seal Kubernetes Secret values the way ``kubeseal`` does, without ``kubeseal``.

Wire format (bitnami-labs/sealed-secrets v0.36.x), verified against upstream source:

* ``pkg/crypto/crypto.go`` ``HybridEncrypt``: a fresh 32-byte session key per value; the key is
  encrypted with ``rsa.EncryptOAEP(sha256.New(), rnd, pubKey, sessionKey, label)`` (Go's OAEP uses the
  same hash for MGF1, so MGF1-SHA-256); the value is sealed with AES-256-GCM, an all-zero nonce of
  ``aed.NonceSize()`` (12) bytes and no additional data; output = 2-byte big-endian length of the RSA
  ciphertext || RSA ciphertext || GCM ciphertext with its 16-byte tag appended.
* ``pkg/apis/sealedsecrets/v1alpha1/sealedsecret_expansion.go``: ``EncryptionLabel`` gives the OAEP
  label ``namespace/name`` (strict), ``namespace`` (namespace-wide) or ``""`` (cluster-wide);
  ``NewSealedSecret`` stores ``base64.StdEncoding`` of each blob in ``spec.encryptedData``, copies the
  Secret's metadata into ``spec.template.metadata`` and its type into ``spec.template.type``, and
  ``UpdateScopeAnnotations`` sets ``sealedsecrets.bitnami.com/namespace-wide`` or ``/cluster-wide``
  to ``"true"`` (removing the other). On unseal the controller derives the label from the
  *SealedSecret's own* metadata (``labelFor(smeta)``), so those annotations must sit on the
  SealedSecret itself, not only on the template.
* ``pkg/kubeseal/sealer.go`` ``Seal``: with a non-default scope the annotations are put on the input
  Secret first, so the template carries them too; an empty Secret is refused.
* ``pkg/kubeseal/certs.go`` ``ParseKey``: the first certificate of the PEM is used, its key must be
  RSA and an expired certificate is refused.

Idempotence. Sealing is randomized (new session key, random OAEP seed), so sealing the same value twice
gives two different blobs, and the controller's private key never leaves the cluster, so Ansible cannot
decrypt what is there to compare. The ``k8s_secret`` module compares the Secret the controller unsealed
instead, and re-seals only when that Secret does not hold the wanted values.

:func:`unseal_value` exists for tests and debugging with a key you generated yourself.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import os
import re
import struct
from collections.abc import Mapping

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "API_VERSION",
    "CLUSTER_WIDE_ANNOTATION",
    "KIND",
    "NAMESPACE_WIDE_ANNOTATION",
    "SCOPES",
    "load_public_key",
    "scope_label",
    "seal_value",
    "sealed_secret_manifest",
    "unseal_value",
]

API_VERSION = "bitnami.com/v1alpha1"
KIND = "SealedSecret"
NAMESPACE_WIDE_ANNOTATION = "sealedsecrets.bitnami.com/namespace-wide"
CLUSTER_WIDE_ANNOTATION = "sealedsecrets.bitnami.com/cluster-wide"

SCOPES = ("strict", "namespace-wide", "cluster-wide")

_SESSION_KEY_BYTES = 32  # sessionKeyBytes in crypto.go: AES-256
_GCM_NONCE = bytes(12)  # the session key is used once, so a zero nonce is safe (crypto.go)
_GCM_TAG_BYTES = 16

_OAEP_HASH = hashes.SHA256

# Secret data keys: validation.IsConfigMapKey in Kubernetes.
_SECRET_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
# metadata.name of a Secret: a DNS subdomain (RFC 1123).
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# metadata.namespace: a DNS label (RFC 1123).
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _to_bytes(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def _oaep(label: bytes) -> padding.OAEP:
    # Go's rsa.EncryptOAEP(sha256.New(), ...) uses the same hash for OAEP and MGF1.
    return padding.OAEP(mgf=padding.MGF1(algorithm=_OAEP_HASH()), algorithm=_OAEP_HASH(), label=label or None)


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """Return the RSA public key of a PEM certificate or PEM public key.

    A certificate is what the controller serves at ``/v1/cert.pem`` (``kubeseal --fetch-cert``); like
    kubeseal, the first certificate is used and an expired one is refused. ``PUBLIC KEY`` (SPKI) and
    ``RSA PUBLIC KEY`` (PKCS#1) blocks are accepted too.
    """
    data = _to_bytes(pem, "pem").strip()
    if not data:
        raise ValueError("the sealing certificate is empty")
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            cert = x509.load_pem_x509_certificates(data)[0]
        except ValueError as exc:
            raise ValueError(f"cannot parse the sealing certificate: {exc}") from exc
        not_after = cert.not_valid_after_utc
        if datetime.datetime.now(datetime.UTC) > not_after:
            raise ValueError(f"the sealing certificate expired on {not_after:%Y-%m-%d}; fetch the current one")
        key = cert.public_key()
    elif b"PUBLIC KEY-----" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise ValueError(f"cannot parse the sealing public key: {exc}") from exc
    else:
        raise ValueError("expected a PEM certificate or public key (-----BEGIN CERTIFICATE----- / PUBLIC KEY-----)")
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"expected an RSA key, found {type(key).__name__}")
    return key


def scope_label(scope: str, namespace: str, name: str) -> bytes:
    """The RSA-OAEP label for a scope, as ``v1alpha1.EncryptionLabel`` computes it."""
    if scope == "strict":
        return f"{namespace}/{name}".encode()
    if scope == "namespace-wide":
        return namespace.encode("utf-8")
    if scope == "cluster-wide":
        return b""
    raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")


def seal_value(public_key: rsa.RSAPublicKey, value: bytes, label: bytes) -> str:
    """Encrypt one value like ``crypto.HybridEncrypt`` and return it base64-encoded (standard, padded)."""
    session_key = os.urandom(_SESSION_KEY_BYTES)
    rsa_ciphertext = public_key.encrypt(session_key, _oaep(label))
    aes_ciphertext = AESGCM(session_key).encrypt(_GCM_NONCE, bytes(value), None)
    blob = struct.pack(">H", len(rsa_ciphertext)) + rsa_ciphertext + aes_ciphertext
    return base64.b64encode(blob).decode("ascii")


def unseal_value(private_key: rsa.RSAPrivateKey, blob: str, label: bytes) -> bytes:
    """Decrypt a sealed value (tests and debugging only: the controller's key stays in the cluster)."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"sealed value is not valid base64: {exc}") from exc
    if len(raw) < 2:
        raise ValueError("sealed value is too short")
    (rsa_len,) = struct.unpack(">H", raw[:2])
    if len(raw) < 2 + rsa_len + _GCM_TAG_BYTES:
        raise ValueError("sealed value is too short")
    rsa_ciphertext = raw[2 : 2 + rsa_len]
    aes_ciphertext = raw[2 + rsa_len :]
    try:
        session_key = private_key.decrypt(rsa_ciphertext, _oaep(label))
        return AESGCM(session_key).decrypt(_GCM_NONCE, aes_ciphertext, None)
    except (ValueError, InvalidTag) as exc:
        raise ValueError("cannot unseal: wrong key, wrong label (namespace/name/scope) or corrupted value") from exc


def _scope_annotations(annotations: Mapping[str, str] | None, scope: str) -> dict[str, str]:
    # v1alpha1.UpdateScopeAnnotations: drop both, then set the one the scope needs.
    result = {k: str(v) for k, v in (annotations or {}).items()}
    result.pop(NAMESPACE_WIDE_ANNOTATION, None)
    result.pop(CLUSTER_WIDE_ANNOTATION, None)
    if scope == "namespace-wide":
        result[NAMESPACE_WIDE_ANNOTATION] = "true"
    elif scope == "cluster-wide":
        result[CLUSTER_WIDE_ANNOTATION] = "true"
    return result


def sealed_secret_manifest(
    public_key: rsa.RSAPublicKey,
    data: Mapping[str, str | bytes],
    namespace: str,
    name: str,
    scope: str = "strict",
    secret_type: str = "Opaque",  # noqa: S107 - a Secret type, not a password
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict:
    """Build a ``bitnami.com/v1alpha1`` SealedSecret like ``kubeseal`` would for a Secret with ``data``.

    ``labels`` and ``annotations`` go on the SealedSecret and on the Secret it produces
    (``spec.template.metadata``); the scope annotation goes on both, as kubeseal does.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    if not name or len(name) > 253 or not _DNS_SUBDOMAIN_RE.match(name):
        raise ValueError(f"invalid Secret name {name!r}: lowercase RFC 1123 subdomain expected")
    if namespace:
        if len(namespace) > 63 or not _DNS_LABEL_RE.match(namespace):
            raise ValueError(f"invalid namespace {namespace!r}: lowercase RFC 1123 label expected")
    elif scope != "cluster-wide":
        raise ValueError(f"a {scope} SealedSecret needs a namespace")
    if not secret_type:
        raise ValueError("secret_type must not be empty")
    if not data:
        raise ValueError("refusing to seal an empty Secret (kubeseal refuses too)")
    for key in data:
        if not isinstance(key, str) or len(key) > 253 or not _SECRET_KEY_RE.match(key):
            raise ValueError(f"invalid Secret data key {key!r}: letters, digits, '-', '_' and '.' only")

    label = scope_label(scope, namespace, name)
    encrypted = {key: seal_value(public_key, _to_bytes(data[key], f"value of {key!r}"), label) for key in sorted(data)}

    scoped_annotations = _scope_annotations(annotations, scope)
    label_map = {k: str(v) for k, v in (labels or {}).items()}

    def _metadata() -> dict:
        meta: dict = {"name": name}
        if namespace:
            meta["namespace"] = namespace
        if label_map:
            meta["labels"] = dict(label_map)
        if scoped_annotations:
            meta["annotations"] = dict(scoped_annotations)
        return meta

    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": _metadata(),
        "spec": {
            "encryptedData": encrypted,
            "template": {"metadata": _metadata(), "type": secret_type},
        },
    }
