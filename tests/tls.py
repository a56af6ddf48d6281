"""TLS as deployed, for tests: a throwaway certificate for 127.0.0.1, and nginx run from a config of the test's own."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scripts.servers import wait_for_port
from tests.support import RESERVED_PORTS, require_binary, stop

NGINX = "/usr/sbin/nginx"

# Reserved, so their callbacks can be registered: portals reached over https in tests;
HTTPS_PORTS = RESERVED_PORTS[4:6]
# the gate's nginx (tests/browser/test_gate.py): portal.gate.test and app.gate.test, which Chromium maps to 127.0.0.1;
NGINX_HTTPS_PORT = RESERVED_PORTS[6]
# and the gate's nginx in front of a stack that a test stops part of.
NGINX_OUTAGE_PORT = RESERVED_PORTS[7]
TEST_DOMAIN = "gate.test"


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def make_certificate(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                     issuer: Certificate | None = None, client: bool = False) -> Certificate:
    """Write a certificate for hosts, valid for a day, and its key (mode 0600) into directory.

    Without an issuer it is self-signed and its own trust anchor (verify=cert in requests, or a CA file);
    with one (make_ca), the issuer signs it, as a company's private CA signs its Redis's certificate.
    A client certificate (client=True) is one that a TLS server asking for one accepts.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mediaflow Portal test")])
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    builder = _valid_for_a_day(name, key).add_extension(x509.SubjectAlternativeName(names), critical=False)
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
    builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if issuer is None:
        cert = builder.issuer_name(name).add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256())
    else:
        ca_cert = x509.load_pem_x509_certificate(issuer.cert.read_bytes())
        ca_key = serialization.load_pem_private_key(issuer.key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        cert = builder.issuer_name(ca_cert.subject).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True).sign(ca_key, hashes.SHA256())
    return _write(directory, "server", cert, key)


def make_ca(directory: Path, common_name: str = "Mediaflow Portal test CA") -> Certificate:
    """Write a CA certificate, valid for a day, and its key, for make_certificate(issuer=...)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        _valid_for_a_day(name, key).issuer_name(name)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _write(directory, "ca", cert, key)


def _valid_for_a_day(subject: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1)))


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Certificate:
    paths = Certificate(directory / f"{stem}.crt", directory / f"{stem}.key")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.touch(mode=0o600)
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return paths


@dataclass
class Nginx:
    url: str
    process: subprocess.Popen[bytes]
    prefix: Path

    def logs(self) -> str:
        """nginx's own output and error log, for a failure message."""
        return "\n".join((self.prefix / name).read_text(errors="replace") for name in ("stderr.log", "error.log")
                         if (self.prefix / name).exists())


def start_nginx(prefix: Path, port: int, http_block: str, scheme: str = "https") -> Nginx:
    """Run nginx in the foreground with http_block (upstreams, servers listening on port) inside its http {}.

    Everything nginx writes (pid, logs, temp files) stays under prefix, so tests never touch /etc or /var.
    """
    binary = require_binary(NGINX, "nginx")
    prefix.mkdir(parents=True, exist_ok=True)
    # As root, nginx's workers would run as an unprivileged user that cannot enter pytest's 0700 temp folders.
    user = "user root;" if os.geteuid() == 0 else ""
    # 256 connections: the gate's burst holds three per request (the client, the app, the auth subrequest).
    temp_paths = "\n".join(f"    {kind}_temp_path {prefix / kind};"
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = prefix / "nginx.conf"
    conf.write_text(f"""{user}
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / "access.log"};
{temp_paths}
{http_block}
}}
""")
    with (prefix / "stderr.log").open("wb") as out:
        process = subprocess.Popen([binary, "-c", str(conf), "-p", f"{prefix}/", "-e", str(prefix / "error.log"),
                                    "-g", "daemon off;"], stdout=out, stderr=subprocess.STDOUT)
    nginx = Nginx(f"{scheme}://127.0.0.1:{port}", process, prefix)
    try:
        wait_for_port(port, process)
    except RuntimeError as error:
        stop(process)
        raise RuntimeError(f"nginx did not start ({error}):\n{nginx.logs()}") from None
    return nginx
