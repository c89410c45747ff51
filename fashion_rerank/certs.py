"""A private certificate authority for development and tests: CA, server (node) and client (admin) certificates.

`make_pki(folder)` writes PEM files that the secured local OpenSearch node (`fashion_rerank.secure_node`)
and the sidecar's TLS / mTLS (`FR_SERVE_GRPC_TLS_*`, `FR_SERVE_HTTP_TLS_*`) use:

| file            | what                                                                          |
|-----------------|-------------------------------------------------------------------------------|
| `root-ca.pem`   | self-signed CA certificate (the bundle clients trust: `OPENSEARCH_CA_CERTS`)  |
| `root-ca-key.pem` | its key                                                                     |
| `node.pem`, `node-key.pem` | server + client certificate for `localhost` / `127.0.0.1` (TLS of HTTP and transport) |
| `admin.pem`, `admin-key.pem` | client certificate of the security admin (`plugins.security.authcz.admin_dn`) |
| `client.pem`, `client-key.pem` | a client certificate for mTLS tests                                   |

Keys are 2048-bit RSA in unencrypted PKCS#8 PEM (the OpenSearch security plugin reads PKCS#8 only);
certificates are valid for `days` days (default 30: development use, regenerated when missing).
Needs the `cryptography` package (`fashion-rerank[train]`). Not for production: the CA key lies next to
the certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    """Paths of one generated PKI (see the module docstring) and the subject DNs (RFC 4514 strings)."""

    folder: Path
    ca: Path
    ca_key: Path
    node: Path
    node_key: Path
    admin: Path
    admin_key: Path
    client: Path
    client_key: Path
    node_dn: str
    admin_dn: str
    client_dn: str


def _name(cn: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fashion-rerank"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write(path: Path, cert, key) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = path.with_name(path.stem + "-key.pem")
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o640)


def _issue(ca_cert, ca_key, cn: str, days: int, server: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = _key()
    now = dt.datetime.now(dt.timezone.utc)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName(cn)]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(folder: str | Path, days: int = 30) -> Pki:
    """Generate a private CA and node, admin and client certificates into `folder` (created; files replaced).

    Takes ~0.5 s (four RSA-2048 keys). Returns the paths and subject DNs.

    Raises:
        ImportError: the `cryptography` package is missing (install `fashion-rerank[train]`).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = _key()
    ca_name = _name("fashion-rerank dev root CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / "root-ca.pem", ca_cert, ca_key)
    dns = {}
    for stem, cn, server in (("node", "fr-node", True), ("admin", "fr-admin", False), ("client", "fr-client", False)):
        cert, key = _issue(ca_cert, ca_key, cn, days, server)
        _write(folder / f"{stem}.pem", cert, key)
        dns[stem] = cert.subject.rfc4514_string()
    return Pki(
        folder=folder,
        ca=folder / "root-ca.pem",
        ca_key=folder / "root-ca-key.pem",
        node=folder / "node.pem",
        node_key=folder / "node-key.pem",
        admin=folder / "admin.pem",
        admin_key=folder / "admin-key.pem",
        client=folder / "client.pem",
        client_key=folder / "client-key.pem",
        node_dn=dns["node"],
        admin_dn=dns["admin"],
        client_dn=dns["client"],
    )
