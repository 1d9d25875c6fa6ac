"""Wallet pass builders (Apple .pkpass, Google Wallet objects), a library with no Flask or SQLAlchemy inside.

Certificates and keys come in as objects, output is bytes, and what is public is listed in `__all__`. An Apple
Wallet store card, for example:

    certificates = PassCertificates.from_pkcs12(p12, password, wwdr_cer)  # once, at start-up
    pkpass = build_pkpass(CardPass(...), certificates)  # per pass; serve it as PKPASS_MIME_TYPE

and when a card changes, one push per device that registered its pass:

    with ApnsClient(TokenAuth(p8_key, key_id, team_id)) as apns:
        apns.push_pass_update(device_push_token, pass_type_identifier)

and for Google Wallet, a save link per card and REST calls when it changes:

    account = ServiceAccount.from_json(key_file)  # once, at start-up
    url = save_link(account, origins, LoyaltyCard(...), class_inserted=..., object_inserted=...)
    with WalletClient(account) as wallet:
        wallet.patch_object(card.object_id, loyalty_object(card))
"""

from __future__ import annotations

from passes._images import square_logo_png
from passes.apns import ApnsClient, CertificateAuth, PushResult, TokenAuth
from passes.apple import PKPASS_MIME_TYPE, CardPass, Offer, PassDescriptionError, build_pkpass, pass_json, validate
from passes.certificates import DevCertificates, PassCertificates, make_dev_certificates

# Google Wallet
from passes.google import (
    MAX_SAVE_URL_LENGTH,
    SAVE_URL_PREFIX,
    WALLET_API_URL,
    WALLET_SCOPE,
    GooglePassError,
    LoyaltyCard,
    LoyaltyProgram,
    NeedsInsert,
    RotatingBarcode,
    ServiceAccount,
    WalletClient,
    WalletResult,
    loyalty_class,
    loyalty_object,
    make_dev_service_account,
    save_jwt,
    save_link,
    save_url,
    totp,
)

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
    "square_logo_png",
    "validate",
    # Apple Push Notification service: telling devices a pass changed (passes.apns)
    "ApnsClient",
    "CertificateAuth",
    "PushResult",
    "TokenAuth",
    # Google Wallet: loyalty classes and objects, the save link, the REST client (passes.google; its Offer is
    # the same class as the Apple one above)
    "MAX_SAVE_URL_LENGTH",
    "SAVE_URL_PREFIX",
    "WALLET_API_URL",
    "WALLET_SCOPE",
    "GooglePassError",
    "LoyaltyCard",
    "LoyaltyProgram",
    "NeedsInsert",
    "RotatingBarcode",
    "ServiceAccount",
    "WalletClient",
    "WalletResult",
    "loyalty_class",
    "loyalty_object",
    "make_dev_service_account",
    "save_jwt",
    "save_link",
    "save_url",
    "totp",
]
