"""A self-signed certificate for serving the app over HTTPS on the local network (`make run-https`).

A phone's browser opens the camera only in a secure context, and http://127.0.0.1 is the only plain-HTTP
origin that counts, so a phone on the LAN needs HTTPS. This makes a certificate for this machine's names and
addresses, valid for a year, and keeps it between runs so the browser's "proceed anyway" exception survives a
restart. For development only: a browser warns about it, as it is signed by nobody it trusts.

    python -m app.devcert instance/dev-https-cert.pem instance/dev-https-key.pem [EXTRA_NAME_OR_IP ...]
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 365
RENEW_WITHIN_DAYS = 7


def local_names() -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """This machine's host names and addresses, as a phone on the same network may reach it."""
    hostname = socket.gethostname()
    names = sorted({"localhost", hostname, f"{hostname}.local"})
    addresses = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    found: list[str] = []
    try:
        found += [str(sockaddr[0]) for *_, sockaddr in socket.getaddrinfo(hostname, None)]
    except socket.gaierror:
        pass  # a host name that does not resolve: the extra names given on the command line still count
    try:
        # Debian resolves the host name to 127.0.1.1; `hostname -I` lists the LAN addresses (Linux only).
        found += subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        pass
    for text in found:
        try:
            addresses.add(ipaddress.ip_address(text.split("%")[0]))
        except ValueError:
            continue
    return names, sorted(addresses, key=lambda a: (a.version, int(a)))


def needs_new_certificate(cert_path: Path, names: list[str],
                          addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address], now: dt.datetime) -> bool:
    """True when there is no certificate, it is about to expire, or it does not cover every wanted name."""
    if not cert_path.exists():
        return True
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if certificate.not_valid_after_utc - now < dt.timedelta(days=RENEW_WITHIN_DAYS):
        return True
    covered = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return not (set(names) <= set(covered.get_values_for_type(x509.DNSName))
                and set(addresses) <= set(covered.get_values_for_type(x509.IPAddress)))


def make_certificate(names: list[str], addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
                     now: dt.datetime) -> tuple[bytes, bytes]:
    """A PEM certificate and its PEM private key (P-256) for `names` and `addresses`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "localhost"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Loyalty development server")])
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alt_names += [x509.IPAddress(address) for address in addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cert_path, key_path = Path(argv[0]), Path(argv[1])
    now = dt.datetime.now(dt.UTC)
    names, addresses = local_names()
    for extra in argv[2:]:
        try:
            addresses.append(ipaddress.ip_address(extra))
        except ValueError:
            names.append(extra)
    if needs_new_certificate(cert_path, names, addresses, now):
        cert_pem, key_pem = make_certificate(names, addresses, now)
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        # The key first, created private: never a moment where it sits on disk readable by others.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as key_file:
            key_file.write(key_pem)
        cert_path.write_bytes(cert_pem)
        print(f"Made a self-signed certificate in {cert_path}")
    port = os.environ.get("HTTPS_PORT", "5443")
    print("Open one of these on the phone (accept the browser's warning once), then sign in as a cashier:")
    for address in addresses:
        # `flask run --host 0.0.0.0` listens on IPv4 only, so only those addresses are worth showing.
        if address.version == 4 and not address.is_loopback and not address.is_link_local:
            print(f"  https://{address}:{port}/cashier")
    print(f"  https://localhost:{port}/cashier   (on this machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
