"""What the real platform already holds when MLflow is deployed, seeded into the local cluster.

- the wildcard TLS certificate of the platform domain (signed by a local CA) in ``default``;
- the S3 credentials Secret in the ``seaweedfs`` namespace, as the platform's SeaweedFS chart leaves it;
- ADMIN_PASSWORD, the platform admin password the collection reads from the environment;
- the in-cluster names the collection's defaults use for PostgreSQL
  (``postgresql-official.postgres.svc.cluster.local:5432``) and S3
  (``seaweedfs-s3.seaweedfs.svc.cluster.local:8333``): selector-less Services whose EndpointSlices
  point at the node IP, where the host's services listen.
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .base import Context
from .config import NODE_IP, PORTS
from .proc import StackError
from .secrets import read_env_file

DOMAIN = "mlstack.test"
TLS_NAMESPACE = "default"
TLS_SECRET = DOMAIN.replace(".", "-") + "-tls"
S3_NAMESPACE = "seaweedfs"
S3_SECRET = "seaweedfs-s3-secret"  # noqa: S105 - the name of a Secret, not a secret
# (namespace, Service name, port name, Service port, where the host listens)
HOST_SERVICES = (
    ("postgres", "postgresql-official", "postgresql", 5432, PORTS["postgres"]),
    ("seaweedfs", "seaweedfs-s3", "s3", 8333, PORTS["s3"]),
)


def host_service_manifests(
    namespace: str, name: str, port_name: str, port: int, target_port: int, address: str = NODE_IP
) -> list[dict]:
    """A Service without a selector and the EndpointSlice that sends it to a host service."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": port_name, "port": port, "targetPort": target_port, "protocol": "TCP"}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-host",
                "namespace": namespace,
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "mlstack.local",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": port_name, "port": target_port, "protocol": "TCP"}],
        },
    ]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca_and_wildcard(domain: str) -> tuple[bytes, bytes, bytes]:
    """A CA certificate and a wildcard certificate + key for ``*.domain`` signed by it (PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"mlstack local CA ({domain})"))
        .issuer_name(_name(f"mlstack local CA ({domain})"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"*.{domain}"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"*.{domain}"), x509.DNSName(domain)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # Python 3.13 verifies strictly (VERIFY_X509_STRICT): key identifiers must be present.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca_cert.public_bytes(pem), cert.public_bytes(pem), key_pem


def _b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def secret_manifest(namespace: str, name: str, data: dict[str, str | bytes], secret_type: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": secret_type,
        "data": {key: _b64(value) for key, value in data.items()},
    }


class Platform:
    name = "platform"
    title = "Platform seed (TLS, S3 Secret)"
    wanted_secrets = {"admin_password": "password"}

    def _dir(self, ctx: Context) -> Path:
        return ctx.paths.component_dir(self.name)

    def _kube(self, ctx: Context) -> tuple[str, str]:
        env = ctx.env or read_env_file(ctx.paths.stack_env)
        return env["KUBECTL"], env["KUBECONFIG"]

    def prepare(self, ctx: Context) -> None:
        directory = self._dir(ctx)
        if (directory / "tls.key").exists():
            return
        directory.mkdir(parents=True, exist_ok=True)
        ca, cert, key = make_ca_and_wildcard(DOMAIN)
        (directory / "ca.crt").write_bytes(ca)
        (directory / "tls.crt").write_bytes(cert)
        (directory / "tls.key").write_bytes(key)
        (directory / "tls.key").chmod(0o600)

    def _manifests(self, ctx: Context) -> list[dict]:
        directory = self._dir(ctx)
        services: list[dict] = []
        for namespace, *service in HOST_SERVICES:
            services.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            services += host_service_manifests(namespace, *service)
        return services + [
            secret_manifest(
                TLS_NAMESPACE,
                TLS_SECRET,
                {"tls.crt": (directory / "tls.crt").read_bytes(), "tls.key": (directory / "tls.key").read_bytes()},
                "kubernetes.io/tls",
            ),
            secret_manifest(
                S3_NAMESPACE,
                S3_SECRET,
                {"access_key": ctx.env["S3_ACCESS_KEY"], "secret_key": ctx.env["S3_SECRET_KEY"]},
                "Opaque",
            ),
        ]

    def is_up(self, ctx: Context) -> bool:
        if not (self._dir(ctx) / "tls.key").exists() or "KUBECONFIG" not in ctx.env:
            return False
        kubectl, kubeconfig = self._kube(ctx)
        result = subprocess.run(  # noqa: S603
            [kubectl, "--kubeconfig", kubeconfig, "-n", S3_NAMESPACE, "get", "secret", S3_SECRET, "-o", "name"],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.returncode == 0

    def start(self, ctx: Context) -> None:
        kubectl, kubeconfig = self._kube(ctx)
        manifests = "\n---\n".join(json.dumps(m) for m in self._manifests(ctx))
        result = subprocess.run(  # noqa: S603
            [kubectl, "--kubeconfig", kubeconfig, "apply", "-f", "-"],
            input=manifests,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"seeding the platform objects failed: {result.stderr.strip()}")

    def stop(self, ctx: Context) -> None:
        """Nothing runs: the seeded objects live in the cluster."""

    def env(self, ctx: Context) -> dict[str, str]:
        return {
            "DOMAIN_NAME": DOMAIN,
            "MLSTACK_CA_CERT": str(self._dir(ctx) / "ca.crt"),
            "TLS_SOURCE_NAMESPACE": TLS_NAMESPACE,
            "TLS_SOURCE_SECRET": TLS_SECRET,
            "ADMIN_PASSWORD": ctx.secrets["admin_password"],
        }
