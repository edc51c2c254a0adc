"""Certificates made for a test: a CA that signs a server's certificate (valid for the
name `localhost` only, not for 127.0.0.1), and a second CA that signed nothing."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
) -> x509.Certificate:
    """A CA's self-signed certificate, or (with `issuer`) a server's for `localhost`."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        ).add_extension(
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
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    )
    return builder.sign(issuer_key, hashes.SHA256())


def write_certificates(folder: Path) -> dict[str, Path]:
    """ca.pem, other-ca.pem, server.pem and server-key.pem in `folder`, by name."""
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "other", "server")}
    pems = {
        "ca.pem": _certificate("couponpop test CA", keys["ca"]),
        "other-ca.pem": _certificate("an unrelated CA", keys["other"]),
        "server.pem": _certificate("localhost", keys["server"], ("couponpop test CA", keys["ca"])),
    }
    paths = {}
    for name, cert in pems.items():
        paths[name] = folder / name
        paths[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["server-key.pem"] = folder / "server-key.pem"
    paths["server-key.pem"].write_bytes(
        keys["server"].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return paths
