"""The cluster's own certificate authority and the certificates and kubeconfigs it signs.

Every component authenticates with a client certificate from this CA (the admin, the controller
manager, the scheduler, the kubelet, kube-proxy, CoreDNS), the API server and the kubelet serve with
certificates it signs, and the API server verifies the kubelet's serving certificate. Files are made
once under ``.local/kube/pki`` (keys 0600) and reused, so a restart keeps every identity.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class CertSpec:
    """One certificate: its file stem, subject and what it is for."""

    name: str
    common_name: str
    organizations: tuple[str, ...] = ()
    server: bool = False
    client: bool = True
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()


@dataclass
class Pki:
    """A directory holding ``ca.crt``/``ca.key`` and the certificates issued by it."""

    directory: Path
    _ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = field(default=None, repr=False)

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / "ca.crt"

    def cert_path(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def key_path(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    def _write_key(self, path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        path.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        path.chmod(0o600)

    def ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if self._ca:
            return self._ca
        self.directory.mkdir(parents=True, exist_ok=True)
        key_path = self.directory / "ca.key"
        if key_path.exists() and self.ca_cert_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise TypeError(f"{key_path} is not the EC key this module writes")
            self._ca = (x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes()), key)
            return self._ca
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlstack kubernetes CA")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        self._write_key(key_path, key)
        self.ca_cert_path.write_bytes(cert.public_bytes(PEM))
        self._ca = (cert, key)
        return self._ca

    def issue(self, spec: CertSpec) -> tuple[Path, Path]:
        """The certificate and key files for ``spec``, made on first use."""
        cert_path, key_path = self.cert_path(spec.name), self.key_path(spec.name)
        if cert_path.exists() and key_path.exists():
            return cert_path, key_path
        ca_cert, ca_key = self.ca()
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in spec.organizations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name))
        usages = []
        if spec.server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if spec.client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in spec.ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        self._write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(PEM))
        return cert_path, key_path

    def service_account_keys(self) -> tuple[Path, Path]:
        """The key pair the API server signs service-account tokens with (public, private)."""
        private, public = self.directory / "sa.key", self.directory / "sa.pub"
        if not (private.exists() and public.exists()):
            self.directory.mkdir(parents=True, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            self._write_key(private, key)
            public.write_bytes(key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return public, private

    def kubeconfig(self, spec: CertSpec, server: str) -> str:
        """A kubeconfig for ``spec``'s client certificate, everything embedded (JSON is valid YAML)."""
        cert, key = self.issue(spec)

        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "mlstack", "cluster": {"server": server, "certificate-authority-data": b64(self.ca_cert_path)}}
            ],
            "users": [
                {"name": spec.common_name, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}
            ],
            "contexts": [{"name": "mlstack", "context": {"cluster": "mlstack", "user": spec.common_name}}],
            "current-context": "mlstack",
        }
        return json.dumps(config, indent=2)


def write_private(path: Path, content: str) -> Path:
    """Write ``content`` to ``path`` readable by its owner only (kubeconfigs hold keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(content)
    return path
