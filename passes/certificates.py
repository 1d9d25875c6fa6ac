"""The certificates that sign an Apple Wallet pass, and a throwaway set of them for development and tests.

Apple issues a *Pass Type ID certificate* to a developer team for one pass type identifier; it is signed by
Apple's *WWDR* intermediate, which every pass signature must carry. `PassCertificates` holds the signer
certificate, its private key and the WWDR certificate as objects, loaded from the PEM/DER files or the .p12 that
Keychain exports; it reads no files and no configuration itself.

`make_dev_certificates` builds the same shape of chain under a private root (root CA -> stand-in WWDR ->
pass signer), so a pass can be built and verified with `openssl smime -verify -CAfile <root>` on a laptop
without an Apple developer account. iPhones do not accept passes signed by it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.hazmat.primitives.serialization.pkcs7 import PKCS7PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

__all__ = ["DevCertificates", "PassCertificates", "make_dev_certificates"]

# The extended key usage Apple puts in Pass Type ID certificates ("Pass Type ID" signing).
APPLE_PASS_SIGNING_EKU = ObjectIdentifier("1.2.840.113635.100.4.14")


@dataclass(frozen=True)
class PassCertificates:
    """What signs a pass: the Pass Type ID certificate and its key, and the WWDR certificate that issued it.

    For whoever builds passes: load once at start-up (`from_pem` or `from_pkcs12`) and hand the object to
    `build_pkpass` for every pass. Construction checks that the key belongs to the certificate, so a mismatched
    pair fails at start-up with a clear message rather than as a pass that iOS silently refuses.
    """

    signer_cert: x509.Certificate
    signer_key: PKCS7PrivateKeyTypes
    wwdr_cert: x509.Certificate

    def __post_init__(self) -> None:
        if not isinstance(self.signer_cert, x509.Certificate) or not isinstance(self.wwdr_cert, x509.Certificate):
            raise TypeError("signer_cert and wwdr_cert must be cryptography x509.Certificate objects")
        if not isinstance(self.signer_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise TypeError(f"the signing key must be an RSA or EC private key, not {type(self.signer_key).__name__}")
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if (self.signer_key.public_key().public_bytes(serialization.Encoding.DER, spki)
                != self.signer_cert.public_key().public_bytes(serialization.Encoding.DER, spki)):
            raise ValueError(
                "the private key does not match the pass certificate's public key: "
                "export the certificate and its key together (one .p12 from the same Keychain entry)"
            )

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes, wwdr_pem: bytes,
                 password: bytes | None = None) -> PassCertificates:
        """Load the signer certificate, its private key (optionally encrypted with `password`) and the WWDR
        certificate. Certificates may be PEM or DER (Apple serves WWDR as a DER .cer); the key PEM or DER."""
        return cls(
            signer_cert=_load_certificate(cert_pem, "pass certificate"),
            signer_key=_load_private_key(key_pem, password),
            wwdr_cert=_load_certificate(wwdr_pem, "WWDR certificate"),
        )

    @classmethod
    def from_pkcs12(cls, p12: bytes, password: bytes | None, wwdr_pem: bytes) -> PassCertificates:
        """Load the certificate and key from a .p12 (as Keychain exports a Pass Type ID certificate), plus the
        WWDR certificate, PEM or DER."""
        try:
            key, cert, _ = pkcs12.load_key_and_certificates(p12, password)
        except ValueError as exc:
            raise ValueError(f"cannot read the .p12 (wrong password or not a PKCS#12 file): {exc}") from exc
        if cert is None or key is None:
            raise ValueError("the .p12 must hold both the pass certificate and its private key")
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"the .p12 key must be RSA or EC, not {type(key).__name__}")
        return cls(signer_cert=cert, signer_key=key, wwdr_cert=_load_certificate(wwdr_pem, "WWDR certificate"))

    @cached_property
    def pass_type_identifier(self) -> str | None:
        """The pass type identifier Apple wrote into the certificate subject's UID, or None when absent."""
        return _subject_attribute(self.signer_cert, NameOID.USER_ID)

    @cached_property
    def team_identifier(self) -> str | None:
        """The developer team identifier, the certificate subject's OU, or None when absent."""
        return _subject_attribute(self.signer_cert, NameOID.ORGANIZATIONAL_UNIT_NAME)


@dataclass(frozen=True)
class DevCertificates:
    """A throwaway chain, all PEM: a root CA, an intermediate standing in for WWDR, and a pass signer.

    For tests and local development; `ca_cert_pem` is what a verifier trusts (`openssl smime -CAfile`).
    """

    ca_cert_pem: bytes
    wwdr_cert_pem: bytes
    pass_cert_pem: bytes
    pass_key_pem: bytes

    def pass_certificates(self) -> PassCertificates:
        """The signer and stand-in WWDR, ready for `build_pkpass`."""
        return PassCertificates.from_pem(self.pass_cert_pem, self.pass_key_pem, self.wwdr_cert_pem)


def make_dev_certificates(pass_type_identifier: str, team_identifier: str, organization_name: str, *,
                          valid_days: int = 3650) -> DevCertificates:
    """Make a root CA, a stand-in WWDR intermediate and a pass signing certificate shaped like Apple's
    (UID = pass type identifier, OU = team identifier, CN = "Pass Type ID: ...", O = organization)."""
    now = dt.datetime.now(dt.UTC)
    # An hour back, so a verifier whose clock lags slightly still finds the certificates valid.
    not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=valid_days)

    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Development Pass Root CA"),
                           x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization_name)])
    root_cert = (
        _builder(root_name, root_name, root_key.public_key(), not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )

    wwdr_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wwdr_name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "Development WWDR Certification Authority"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "G4"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization_name),
    ])
    wwdr_cert = (
        _builder(wwdr_name, root_name, wwdr_key.public_key(), not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(wwdr_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )

    pass_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pass_name = x509.Name([
        x509.NameAttribute(NameOID.USER_ID, pass_type_identifier),
        # X.509 caps a common name at 64 characters; the UID above carries the identifier whole.
        x509.NameAttribute(NameOID.COMMON_NAME, f"Pass Type ID: {pass_type_identifier}"[:64]),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, team_identifier),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization_name),
    ])
    pass_cert = (
        _builder(pass_name, wwdr_name, pass_key.public_key(), not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        # emailProtection as well as Apple's own usage, so even openssl's default S/MIME purpose check passes.
        .add_extension(x509.ExtendedKeyUsage([APPLE_PASS_SIGNING_EKU, ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pass_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(wwdr_key.public_key()), critical=False)
        .sign(wwdr_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    return DevCertificates(
        ca_cert_pem=root_cert.public_bytes(pem),
        wwdr_cert_pem=wwdr_cert.public_bytes(pem),
        pass_cert_pem=pass_cert.public_bytes(pem),
        pass_key_pem=pass_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def _builder(subject: x509.Name, issuer: x509.Name, public_key: rsa.RSAPublicKey, not_before: dt.datetime,
             not_after: dt.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after))


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                         encipher_only=False, decipher_only=False)


def _load_certificate(data: bytes, what: str) -> x509.Certificate:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ValueError(f"the {what} is neither a PEM nor a DER X.509 certificate: {exc}") from exc


def _load_private_key(data: bytes, password: bytes | None) -> PKCS7PrivateKeyTypes:
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password)
        else:
            key = serialization.load_der_private_key(data, password)
    except (ValueError, TypeError) as exc:
        # TypeError is cryptography's answer to a missing or superfluous password.
        raise ValueError(f"cannot read the pass certificate's private key (PEM or DER; password?): {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"the pass signing key must be RSA or EC, not {type(key).__name__}")
    return key


def _subject_attribute(certificate: x509.Certificate, oid: ObjectIdentifier) -> str | None:
    attributes = certificate.subject.get_attributes_for_oid(oid)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
