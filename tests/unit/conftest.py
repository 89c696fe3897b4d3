"""Make ``ansible_collections.mlstack.mlflow`` importable from this working tree, and share test keys.

Plugins import their helpers the way Ansible loads them, as
``ansible_collections.mlstack.mlflow.plugins...``. Plain pytest needs a directory holding
``ansible_collections/mlstack/mlflow`` on ``sys.path``; we build one in the temp dir (a symlink to the
repository) so ``pytest tests/unit`` works from a fresh clone. It lives outside the repository so no
tool walking the tree ever follows a link back into it.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]


def _collection_root() -> Path:
    tag = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:12]
    base = Path(tempfile.gettempdir()) / f"mlstack-mlflow-pytest-{os.getuid()}-{tag}"
    link = base / "ansible_collections" / "mlstack" / "mlflow"
    if not (link.is_symlink() and link.resolve() == REPO_ROOT):
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp_link = link.with_name(f".mlflow-{os.getpid()}")
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(REPO_ROOT, target_is_directory=True)
        tmp_link.replace(link)  # atomic, so parallel runs never see a half-made link
    return base


sys.path.insert(0, str(_collection_root()))


@pytest.fixture(scope="session")
def collections_path() -> Path:
    """A collections path holding this working tree as mlstack.mlflow (for real ansible-doc calls)."""
    return _collection_root()


@pytest.fixture(scope="session")
def rsa_private_key() -> rsa.RSAPrivateKey:
    # The controller's default key size.
    return rsa.generate_private_key(public_exponent=65537, key_size=4096)


def make_certificate(
    private_key: rsa.RSAPrivateKey | object,
    not_after: datetime.datetime | None = None,
) -> bytes:
    """A self-signed PEM certificate like the controller's ``/v1/cert.pem``."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealed-secret")])
    not_after = not_after or now + datetime.timedelta(days=3650)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())  # type: ignore[union-attr]
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now - datetime.timedelta(days=1), not_after - datetime.timedelta(days=1)))
        .not_valid_after(not_after)
        .sign(private_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="session")
def cert_factory():
    """``make_certificate`` as a fixture, for tests that need other keys or expiry dates."""
    return make_certificate


@pytest.fixture(scope="session")
def cert_pem(rsa_private_key: rsa.RSAPrivateKey) -> str:
    return make_certificate(rsa_private_key).decode("ascii")


# --- the local stack's components (hack/mlstack_local) ------------------------------------------------


@pytest.fixture
def paths(tmp_path: Path):  # noqa: ANN201 - mlstack_local.config.Paths, imported when used
    """A stack's state and cache directories under the test's temp dir (nothing created)."""
    sys.path.insert(0, str(REPO_ROOT / "hack"))
    from mlstack_local.config import Paths

    return Paths(state=tmp_path / "state", cache=tmp_path / "cache")


@pytest.fixture
def ctx(paths):  # noqa: ANN001, ANN201 - mlstack_local's Paths and Context
    """A stack context without secrets."""
    from mlstack_local.base import Context

    return Context(paths=paths, secrets={})
