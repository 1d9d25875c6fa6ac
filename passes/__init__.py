"""Wallet pass builders (Apple .pkpass, Google Wallet objects), a library with no Flask or SQLAlchemy inside.

Certificates and keys come in as objects, output is bytes, and what is public is listed in `__all__`. An Apple
Wallet store card, for example:

    certificates = PassCertificates.from_pkcs12(p12, password, wwdr_cer)  # once, at start-up
    pkpass = build_pkpass(CardPass(...), certificates)  # per pass; serve it as PKPASS_MIME_TYPE

and when a card changes, one push per device that registered its pass:

    with ApnsClient(TokenAuth(p8_key, key_id, team_id)) as apns:
        apns.push_pass_update(device_push_token, pass_type_identifier)
"""

from __future__ import annotations

from passes.apns import ApnsClient, CertificateAuth, PushResult, TokenAuth
from passes.apple import PKPASS_MIME_TYPE, CardPass, Offer, PassDescriptionError, build_pkpass, pass_json, validate
from passes.certificates import DevCertificates, PassCertificates, make_dev_certificates

__all__ = [
    # Apple Wallet passes (passes.apple, passes.certificates)
    "PKPASS_MIME_TYPE",
    "CardPass",
    "DevCertificates",
    "Offer",
    "PassCertificates",
    "PassDescriptionError",
    "build_pkpass",
    "make_dev_certificates",
    "pass_json",
    "validate",
    # Apple Push Notification service: telling devices a pass changed (passes.apns)
    "ApnsClient",
    "CertificateAuth",
    "PushResult",
    "TokenAuth",
]
