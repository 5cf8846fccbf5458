"""`finops certs`: a local development CA and a server certificate signed by it.

    finops certs [--dir DIR] [--name HOST ...]

Writes into DIR (default `<data_dir>/tls`): `ca.pem` (give it to clients: boto3 `verify=`,
`AWS_CA_BUNDLE`, Node `NODE_EXTRA_CA_CERTS`), `server.pem` and `server-key.pem` (the
`server.tls_cert_file` / `server.tls_key_file` settings). The CA key (`ca-key.pem`) stays in DIR
so more server certificates can be signed later; keys are written 0600. The server certificate
covers localhost, 127.0.0.1, ::1 and every `--name` (DNS names or IP addresses), for 825 days
(the most Apple clients accept). For production, use a certificate from your own CA.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_DAYS = 825       # the longest validity Apple platforms accept for a TLS server certificate
CA_DAYS = 3650          # the development CA: ten years


def _write(path: str, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_or_make_ca(d: str, now: dt.datetime):
    ca_path, key_path = os.path.join(d, "ca.pem"), os.path.join(d, "ca-key.pem")
    if os.path.exists(ca_path) and os.path.exists(key_path):
        with open(ca_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        return cert, key, False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FinOps gateway development CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write(ca_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(key_path, _key_pem(key), private=True)
    return cert, key, True


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list = []
    for n in ["localhost", "127.0.0.1", "::1", *names]:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    seen, unique = set(), []
    for e in entries:
        if repr(e) not in seen:
            seen.add(repr(e))
            unique.append(e)
    return x509.SubjectAlternativeName(unique)


def make(d: str, names: list[str]) -> dict:
    """Create (or reuse) the CA in `d` and sign a fresh server certificate. Returns the paths."""
    os.makedirs(d, mode=0o700, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca, ca_key, new_ca = _load_or_make_ca(d, now)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "localhost")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": os.path.join(d, "ca.pem"), "cert": os.path.join(d, "server.pem"),
             "key": os.path.join(d, "server-key.pem"), "new_ca": new_ca}
    _write(paths["cert"], cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(paths["key"], _key_pem(key), private=True)
    return paths


def main(argv: list[str], data_dir: str) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="finops certs", description="make a local development CA and server certificate")
    ap.add_argument("--dir", default=os.path.join(data_dir, "tls"), help="where to write (default <data_dir>/tls)")
    ap.add_argument("--name", action="append", default=[], help="another DNS name or IP the certificate covers")
    args = ap.parse_args(argv)
    p = make(args.dir, args.name)
    print(f"{'created' if p['new_ca'] else 'reused'} CA: {p['ca']}\n"
          f"server certificate: {p['cert']}\nserver key: {p['key']}\n\n"
          f"[server]\ntls_cert_file = \"{p['cert']}\"\ntls_key_file = \"{p['key']}\"\n\n"
          f"clients: boto3.client(..., endpoint_url=\"https://127.0.0.1:8080/bedrock\", verify=\"{p['ca']}\")"
          f"  or  AWS_CA_BUNDLE={p['ca']}")
    return 0
