"""Sealing must produce exactly what kubeseal produces, so the controller can unseal it."""

from __future__ import annotations

import base64
import datetime
import glob
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.mlstack.mlflow.plugins.module_utils import _sealing
from ansible_collections.mlstack.mlflow.plugins.module_utils._sealing import (
    CLUSTER_WIDE_ANNOTATION,
    NAMESPACE_WIDE_ANNOTATION,
    load_public_key,
    scope_label,
    seal_value,
    sealed_secret_manifest,
    unseal_value,
)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def independent_unseal(private_key: rsa.RSAPrivateKey, blob: str, label: bytes) -> bytes:
    """A second reading of crypto.go's HybridDecrypt, written apart from the code under test."""
    raw = base64.b64decode(blob, validate=True)
    rsa_len = int.from_bytes(raw[:2], "big")
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label or None)
    session_key = private_key.decrypt(raw[2 : 2 + rsa_len], oaep)
    assert len(session_key) == 32
    return AESGCM(session_key).decrypt(b"\x00" * 12, raw[2 + rsa_len :], None)


def controller_label(manifest: dict) -> bytes:
    """The label the controller uses: labelFor(SealedSecret metadata) in sealedsecret_expansion.go."""
    meta = manifest["metadata"]
    annotations = meta.get("annotations", {})
    if annotations.get(CLUSTER_WIDE_ANNOTATION) == "true":
        return b""
    if annotations.get(NAMESPACE_WIDE_ANNOTATION) == "true":
        return meta["namespace"].encode()
    return f"{meta['namespace']}/{meta['name']}".encode()


# --- keys -----------------------------------------------------------------------------------------


def test_load_public_key_from_certificate(rsa_private_key, cert_pem):
    key = load_public_key(cert_pem)
    assert key.public_numbers() == rsa_private_key.public_key().public_numbers()
    assert load_public_key(cert_pem.encode()).public_numbers() == key.public_numbers()


@pytest.mark.parametrize("fmt", [serialization.PublicFormat.SubjectPublicKeyInfo, serialization.PublicFormat.PKCS1])
def test_load_public_key_from_public_key(rsa_private_key, fmt):
    pem = rsa_private_key.public_key().public_bytes(serialization.Encoding.PEM, fmt)
    assert load_public_key(pem).public_numbers() == rsa_private_key.public_key().public_numbers()


def test_load_public_key_uses_first_certificate_of_a_bundle(rsa_private_key, cert_pem, cert_factory):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bundle = cert_pem + cert_factory(other).decode()
    assert load_public_key(bundle).public_numbers() == rsa_private_key.public_key().public_numbers()


def test_load_public_key_refuses_expired_certificate(rsa_private_key, cert_factory):
    expired = cert_factory(rsa_private_key, not_after=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1))
    with pytest.raises(ValueError, match="expired"):
        load_public_key(expired)


def test_load_public_key_refuses_non_rsa(cert_factory):
    with pytest.raises(ValueError, match="RSA"):
        load_public_key(cert_factory(ec.generate_private_key(ec.SECP256R1())))


@pytest.mark.parametrize("pem", ["", "not a pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_load_public_key_refuses_garbage(pem):
    with pytest.raises(ValueError):
        load_public_key(pem)


# --- labels and blobs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "expected"),
    [("strict", b"mlflow/mlflow-db"), ("namespace-wide", b"mlflow"), ("cluster-wide", b"")],
)
def test_scope_label(scope, expected):
    assert scope_label(scope, "mlflow", "mlflow-db") == expected


def test_scope_label_rejects_unknown_scope():
    with pytest.raises(ValueError, match="strict, namespace-wide, cluster-wide"):
        scope_label("global", "mlflow", "mlflow-db")


@pytest.mark.parametrize("value", [b"", b"p@ss:w/o%rd#?", "päss🔑".encode(), os.urandom(4096)])
@pytest.mark.parametrize("label", [b"mlflow/mlflow-db", b"mlflow", b""])
def test_seal_round_trip(rsa_private_key, value, label):
    blob = seal_value(rsa_private_key.public_key(), value, label)
    assert unseal_value(rsa_private_key, blob, label) == value
    assert independent_unseal(rsa_private_key, blob, label) == value


@pytest.mark.parametrize(
    ("sealed_with", "opened_with"),
    [
        (b"mlflow/mlflow-db", b"mlflow/other"),
        (b"mlflow/mlflow-db", b"other/mlflow-db"),
        (b"mlflow/mlflow-db", b"mlflow"),
        (b"mlflow", b"mlflow/mlflow-db"),
        (b"mlflow", b""),
        (b"", b"mlflow"),
    ],
)
def test_unseal_with_wrong_label_fails(rsa_private_key, sealed_with, opened_with):
    blob = seal_value(rsa_private_key.public_key(), b"secret", sealed_with)
    with pytest.raises(ValueError, match="cannot unseal"):
        unseal_value(rsa_private_key, blob, opened_with)


def test_unseal_with_wrong_key_fails(rsa_private_key):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    blob = seal_value(other.public_key(), b"secret", b"ns/name")
    with pytest.raises(ValueError, match="cannot unseal"):
        unseal_value(rsa_private_key, blob, b"ns/name")


def test_unseal_detects_tampering(rsa_private_key):
    raw = bytearray(base64.b64decode(seal_value(rsa_private_key.public_key(), b"secret", b"ns/name")))
    raw[-1] ^= 1
    with pytest.raises(ValueError, match="cannot unseal"):
        unseal_value(rsa_private_key, base64.b64encode(bytes(raw)).decode(), b"ns/name")


@pytest.mark.parametrize("blob", ["", "AA==", "!!!not base64!!!"])
def test_unseal_rejects_malformed_blobs(rsa_private_key, blob):
    with pytest.raises(ValueError):
        unseal_value(rsa_private_key, blob, b"")


def test_blob_layout(rsa_private_key):
    value = b"x" * 100
    blob = seal_value(rsa_private_key.public_key(), value, b"ns/name")
    # Standard alphabet with padding: what Go's base64.StdEncoding emits.
    raw = base64.b64decode(blob, validate=True)
    assert base64.b64encode(raw).decode() == blob
    (rsa_len,) = struct.unpack(">H", raw[:2])
    assert rsa_len == 512  # RSA-4096 ciphertext
    assert len(raw) == 2 + rsa_len + len(value) + 16  # GCM: same length as plaintext, plus the tag


def test_sealing_is_randomized(rsa_private_key):
    key = rsa_private_key.public_key()
    assert seal_value(key, b"same", b"l") != seal_value(key, b"same", b"l")


def test_seal_value_requires_bytes(rsa_private_key):
    with pytest.raises(TypeError):
        seal_value(rsa_private_key.public_key(), "text", b"")  # type: ignore[arg-type]


# --- manifests ------------------------------------------------------------------------------------


DATA = {"username": "mlflow", "password": "p@ss:w/o%rd#? 'x\";", "uri": "postgresql+psycopg2://x"}


@pytest.mark.parametrize("scope", ["strict", "namespace-wide", "cluster-wide"])
def test_manifest_structure_and_unseal(rsa_private_key, scope):
    manifest = sealed_secret_manifest(
        rsa_private_key.public_key(),
        DATA,
        namespace="mlflow",
        name="mlflow-db",
        scope=scope,
        secret_type="Opaque",  # noqa: S106 - a Secret type
        labels={"app.kubernetes.io/name": "mlflow"},
        annotations={"example.com/note": "kept"},
    )
    assert manifest["apiVersion"] == "bitnami.com/v1alpha1"
    assert manifest["kind"] == "SealedSecret"
    meta = manifest["metadata"]
    assert meta["name"] == "mlflow-db"
    assert meta["namespace"] == "mlflow"
    assert meta["labels"] == {"app.kubernetes.io/name": "mlflow"}
    expected_scope_annotations = {
        "strict": {},
        "namespace-wide": {NAMESPACE_WIDE_ANNOTATION: "true"},
        "cluster-wide": {CLUSTER_WIDE_ANNOTATION: "true"},
    }[scope]
    assert meta["annotations"] == {"example.com/note": "kept", **expected_scope_annotations}

    template = manifest["spec"]["template"]
    assert template["type"] == "Opaque"
    assert template["metadata"] == {
        "name": "mlflow-db",
        "namespace": "mlflow",
        "labels": {"app.kubernetes.io/name": "mlflow"},
        "annotations": {"example.com/note": "kept", **expected_scope_annotations},
    }

    encrypted = manifest["spec"]["encryptedData"]
    assert list(encrypted) == sorted(DATA)
    label = controller_label(manifest)
    assert label == scope_label(scope, "mlflow", "mlflow-db")
    assert {k: unseal_value(rsa_private_key, v, label).decode() for k, v in encrypted.items()} == DATA
    # The manifest is plain data: it serialises as the JSON kubectl would send.
    json.dumps(manifest)


def test_manifest_strict_cannot_be_moved(rsa_private_key):
    manifest = sealed_secret_manifest(rsa_private_key.public_key(), {"k": "v"}, namespace="a", name="s")
    blob = manifest["spec"]["encryptedData"]["k"]
    for moved in (b"b/s", b"a/t", b"a", b""):
        with pytest.raises(ValueError):
            unseal_value(rsa_private_key, blob, moved)


def test_manifest_replaces_conflicting_scope_annotations(rsa_private_key):
    manifest = sealed_secret_manifest(
        rsa_private_key.public_key(),
        {"k": "v"},
        namespace="a",
        name="s",
        scope="namespace-wide",
        annotations={CLUSTER_WIDE_ANNOTATION: "true"},
    )
    assert manifest["metadata"]["annotations"] == {NAMESPACE_WIDE_ANNOTATION: "true"}
    assert controller_label(manifest) == b"a"


def test_manifest_minimal_has_no_empty_maps(rsa_private_key):
    manifest = sealed_secret_manifest(rsa_private_key.public_key(), {"k": b"\x00\xff"}, namespace="a", name="s")
    assert manifest["metadata"] == {"name": "s", "namespace": "a"}
    assert manifest["spec"]["template"] == {"metadata": {"name": "s", "namespace": "a"}, "type": "Opaque"}
    assert unseal_value(rsa_private_key, manifest["spec"]["encryptedData"]["k"], b"a/s") == b"\x00\xff"


def test_manifest_cluster_wide_without_namespace(rsa_private_key):
    manifest = sealed_secret_manifest(rsa_private_key.public_key(), {"k": "v"}, "", "s", scope="cluster-wide")
    assert "namespace" not in manifest["metadata"]
    assert unseal_value(rsa_private_key, manifest["spec"]["encryptedData"]["k"], b"") == b"v"


def test_manifest_secret_type(rsa_private_key):
    manifest = sealed_secret_manifest(
        rsa_private_key.public_key(),
        {".dockerconfigjson": "{}"},
        "a",
        "pull",
        secret_type="kubernetes.io/dockerconfigjson",  # noqa: S106 - a Secret type
    )
    assert manifest["spec"]["template"]["type"] == "kubernetes.io/dockerconfigjson"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": {}}, "empty"),
        ({"data": {"bad/key": "v"}}, "data key"),
        ({"namespace": ""}, "needs a namespace"),
        ({"namespace": "", "scope": "namespace-wide"}, "needs a namespace"),
        ({"namespace": "Bad_NS"}, "namespace"),
        ({"name": "Bad Name"}, "name"),
        ({"name": ""}, "name"),
        ({"scope": "everywhere"}, "scope"),
        ({"secret_type": ""}, "secret_type"),
    ],
)
def test_manifest_rejects_bad_input(rsa_private_key, kwargs, message):
    args = {"data": {"k": "v"}, "namespace": "a", "name": "s", **kwargs}
    with pytest.raises(ValueError, match=message):
        sealed_secret_manifest(rsa_private_key.public_key(), **args)


# --- cross-check with a real kubeseal (the local stack's build; built here on a new machine) -------


def _find_kubeseal() -> str | None:
    candidates = [os.environ.get("KUBESEAL", ""), shutil.which("kubeseal") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.cache/mlstack/**/kubeseal"), recursive=True))
    candidates += [os.path.expanduser("~/go/bin/kubeseal")]
    return next((c for c in candidates if c and os.access(c, os.X_OK) and Path(c).is_file()), None)


@pytest.fixture(scope="module")
def kubeseal() -> str:
    """kubeseal, built from the Go module proxy by the local stack's own builder when none is found.

    The build lands where `make up` looks for it (~/.cache/mlstack/bin), so it is made once either way.
    """
    found = _find_kubeseal()
    if found:
        return found
    sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "hack"))
    from mlstack_local import sealed
    from mlstack_local.base import Context
    from mlstack_local.config import default_paths

    ctx = Context(paths=default_paths(), secrets={})
    sealed.SealedSecrets().prepare(ctx)
    return str(sealed.bin_dir(ctx.paths) / "kubeseal")


def _kubeseal(kubeseal: str, args: list[str], stdin: bytes, tmp_path: Path) -> bytes:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}  # never talk to a cluster
    result = subprocess.run(  # noqa: S603 - fixed binary, arguments built here
        [kubeseal, *args], input=stdin, capture_output=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


@pytest.mark.parametrize("scope", ["strict", "namespace-wide", "cluster-wide"])
def test_we_unseal_what_kubeseal_sealed(kubeseal, rsa_private_key, cert_pem, tmp_path, scope):
    cert_file = tmp_path / "cert.pem"
    cert_file.write_text(cert_pem)
    value = "p@ss:w/o%rd#? 'x\"; ünï".encode()
    out = _kubeseal(
        kubeseal,
        [
            "--raw",
            "--cert",
            str(cert_file),
            "--scope",
            scope,
            "--namespace",
            "mlflow",
            "--name",
            "mlflow-db",
            "--from-file=/dev/stdin",
        ],
        value,
        tmp_path,
    )
    assert unseal_value(rsa_private_key, out.decode().strip(), scope_label(scope, "mlflow", "mlflow-db")) == value


@pytest.mark.parametrize("scope", ["strict", "namespace-wide", "cluster-wide"])
def test_kubeseal_unseals_what_we_sealed(kubeseal, rsa_private_key, tmp_path, scope):
    key_file = tmp_path / "tls.key"
    key_file.write_bytes(
        rsa_private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    manifest = sealed_secret_manifest(rsa_private_key.public_key(), DATA, "mlflow", "mlflow-db", scope=scope)
    out = _kubeseal(
        kubeseal,
        ["--recovery-unseal", "--recovery-private-key", str(key_file), "-o", "json"],
        json.dumps(manifest).encode(),
        tmp_path,
    )
    secret = json.loads(out)
    assert secret["type"] == "Opaque"
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == DATA


def test_module_exports():
    for name in _sealing.__all__:
        assert hasattr(_sealing, name)
