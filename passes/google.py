"""Google Wallet loyalty cards: the class per program, the object per card, the save link, and the REST client.

For the issuer's Google Wallet endpoints and its update job:

    account = ServiceAccount.from_json(key_file_bytes)             # once, at start-up
    body = loyalty_object(LoyaltyCard(...))                        # validated against Google's rules
    url = save_link(account, ["https://shop.example"], card, class_inserted=..., object_inserted=...)

    with WalletClient(account) as wallet:                          # one per worker, kept open
        wallet.patch_object(card.object_id, loyalty_object(card))  # a balance changed

Shapes follow the Wallet API's discovery document (walletobjects v1): a `LoyaltyClass` per program and a
`LoyaltyObject` per card, every field name, enum and encoding as declared there. The tests hold every class,
object and JWT payload built here against that document. Things worth knowing:

- A member's tier is per card, but `rewardsTier` is a class field (one value for all members). The tier goes
  in the object's `secondaryLoyaltyPoints` instead (a string balance), which Wallet shows on the card front
  next to the points.
- Store locations use `merchantLocations` (at most ten); the older `locations` is deprecated.
- The save link is `SAVE_URL_PREFIX` + an RS256 JWT (`aud` "google", `typ` "savetowallet"). Google calls 1800
  characters the maximum safe length for that JWT; a longer one is replaced by a reference to an object
  inserted over REST beforehand (`save_link` raises `NeedsInsert` when that insertion has not happened yet).
- Rotating codes: `rotatingBarcode` with TOTP (RFC 6238, SHA-1) whose per-card key is Base16 (hex) in
  `totpDetails.parameters[0].key`. The key is a secret, so an object that has one is only ever inserted over
  REST with the service account's credentials, never put in a save JWT, which the member's browser sees.

Errors: a card or program Google would refuse raises `GooglePassError` naming the JSON field path at fault.
The REST client never raises for network trouble; it returns a `WalletResult` with status 0.
Nothing here reads configuration, the environment, Flask or the database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
import ssl
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from passes._jwt import sign_rs256
from passes.apple import Offer

__all__ = [
    "MAX_SAVE_JWT_LENGTH",
    "MAX_SAVE_URL_LENGTH",
    "SAVE_URL_PREFIX",
    "WALLET_API_URL",
    "WALLET_SCOPE",
    "GooglePassError",
    "LoyaltyCard",
    "LoyaltyProgram",
    "NeedsInsert",
    "Offer",
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

SAVE_URL_PREFIX = "https://pay.google.com/gp/v/save/"
WALLET_API_URL = "https://walletobjects.googleapis.com/walletobjects/v1"
WALLET_SCOPE = "https://www.googleapis.com/auth/wallet_object.issuer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"

# Google's "Issuing passes for web, email, SMS" page: "The maximum safe length for the JWT is 1800 characters."
# Past it, some browsers, mail clients and SMS gateways cut or refuse the link. The URL limit follows from it.
MAX_SAVE_JWT_LENGTH = 1800
MAX_SAVE_URL_LENGTH = len(SAVE_URL_PREFIX) + MAX_SAVE_JWT_LENGTH

# RFC 7523 section 2.1, the grant Google's token endpoint takes for service accounts.
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Google refuses assertions that live longer than an hour.
ASSERTION_LIFETIME_SECONDS = 3600
# An access token is replaced this long before Google says it expires, so none expires in flight.
TOKEN_EXPIRY_MARGIN_SECONDS = 60

# Issuer ids are Google-assigned int64 numbers; the suffix characters are the ones the discovery document lists
# for class and object ids ("alphanumeric characters, '.', '_', or '-'"). Checking them keeps every id safe to
# put in a URL path as it is.
_ISSUER_ID = re.compile(r"[0-9]{1,19}")
_SUFFIX = re.compile(r"[A-Za-z0-9._-]+")
_RESOURCE_ID = re.compile(r"[0-9]{1,19}\.[A-Za-z0-9._-]+")
_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{3})")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
# The substitutions RotatingBarcode.valuePattern documents; this library makes one TOTP parameter, so only
# {totp_value_0} has a value to take.
_PATTERN_TOKEN = re.compile(r"\{([^{}]*)\}")
_PATTERN_TOKENS = frozenset({"totp_value_0", "totp_timestamp_millis", "totp_timestamp_seconds"})
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

# LoyaltyPointsBalance.int is int32 in the discovery document.
MAX_POINTS = 2**31 - 1
# Google shows at most ten text modules from an object and takes at most ten merchant locations per class.
MAX_OFFERS = 10
MAX_LOCATIONS = 10
# RFC 4226 section 4: a shared secret of at least 128 bits (160 recommended); a HOTP value of 6 to 8 digits.
MIN_TOTP_SECRET_BYTES = 16
MAX_TOTP_SECRET_BYTES = 64
TOTP_VALUE_LENGTHS = range(6, 9)

# Review states an issuer may set (the platform sets APPROVED and REJECTED).
REVIEW_STATUSES = frozenset({"UNDER_REVIEW", "DRAFT"})

_RETRYABLE_STATUSES = frozenset({0, 429})
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class GooglePassError(ValueError):
    """A program or card Google would refuse or mangle. `field` is the Google JSON field path at fault, e.g.
    `programLogo.sourceUri.uri` or `loyaltyPoints.balance.int`; the message says what to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NeedsInsert(Exception):
    """`save_link` cannot make a link until the card's object is inserted over REST.

    Either the card has a rotating code (its secret must not travel in a JWT) or the full object would make the
    link too long. Insert `class_body` first when it is not None (the class was not inserted yet), then
    `object_body`, and ask again with `object_inserted=True`.
    """

    def __init__(self, reason: str, object_body: dict[str, Any], class_body: dict[str, Any] | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.object_body = object_body
        self.class_body = class_body


# --- the service account -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceAccount:
    """A Google Cloud service account allowed to issue passes: its email, RSA key and key id.

    Build it from the JSON key file Google hands out with `from_json`. The key signs the save JWTs and the
    OAuth 2.0 assertions for the REST API.
    """

    client_email: str
    private_key: rsa.RSAPrivateKey = field(repr=False, compare=False)
    private_key_id: str
    token_uri: str = GOOGLE_TOKEN_URI

    @classmethod
    def from_json(cls, data: bytes | str) -> ServiceAccount:
        """Read a service-account key file (`"type": "service_account"`). Raises ValueError naming the key."""
        try:
            content = json.loads(data)
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"the service-account key file is not JSON: {error}") from error
        if not isinstance(content, dict):
            raise ValueError("the service-account key file must hold a JSON object")
        if content.get("type", "service_account") != "service_account":
            raise ValueError(f"type: expected 'service_account', got {content.get('type')!r}")
        email = _key_file_string(content, "client_email")
        if "@" not in email:
            raise ValueError(f"client_email: {email!r} is not an email address")
        key_id = _key_file_string(content, "private_key_id")
        if not key_id.isascii() or not key_id.isprintable():
            raise ValueError("private_key_id: expected printable ASCII")
        pem = _key_file_string(content, "private_key")
        try:
            key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
        except (ValueError, TypeError) as error:
            raise ValueError(f"private_key: not an unencrypted PEM private key: {error}") from error
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
            raise ValueError("private_key: Google signs with RSA keys of 2048 bits or more")
        token_uri = content.get("token_uri", GOOGLE_TOKEN_URI)
        if not isinstance(token_uri, str) or urlsplit(token_uri).scheme not in ("https", "http"):
            raise ValueError(f"token_uri: expected an https URL, got {token_uri!r}")
        return cls(client_email=email, private_key=key, private_key_id=key_id, token_uri=token_uri)

    def public_key_pem(self) -> bytes:
        """The public half, as SubjectPublicKeyInfo PEM (what verifies this account's JWTs)."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def make_dev_service_account(client_email: str = "loyalty-dev@loyalty-dev.iam.gserviceaccount.com") -> bytes:
    """A throwaway service-account key file (JSON, Google's format, a new RSA 2048 key) so that save links and
    the REST client work offline. Google knows nothing of it: links signed with it do not save anything."""
    if not isinstance(client_email, str) or "@" not in client_email:
        raise ValueError(f"client_email: {client_email!r} is not an email address")
    domain = client_email.split("@", 1)[1]
    project_id = domain.removesuffix(".iam.gserviceaccount.com").split(".")[0] or "loyalty-dev"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    content = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": client_email,
        "client_id": str(secrets.randbelow(9 * 10**20) + 10**20),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": GOOGLE_TOKEN_URI,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{quote(client_email)}",
        "universe_domain": "googleapis.com",
    }
    return json.dumps(content, indent=2).encode("utf-8") + b"\n"


# --- what a program and a card show --------------------------------------------------------------------------


@dataclass(frozen=True)
class LoyaltyProgram:
    """A merchant's program as Google Wallet shows it: one loyalty class, shared by every member's card."""

    issuer_id: str  # Google's issuer id (digits), from the Google Pay & Wallet Console
    class_suffix: str  # letters, digits and . _ -; unique per program within the issuer
    issuer_name: str
    program_name: str
    logo_url: str  # https URL of the logo image; Google fetches it, so it must be reachable from the internet
    background_color: str = "#1f2937"
    points_label: str = "Points"
    tier_label: str = "Tier"
    locations: tuple[tuple[float, float], ...] = ()  # (latitude, longitude) of the stores
    review_status: str = "UNDER_REVIEW"  # or "DRAFT" while the class is being set up
    homepage_url: str | None = None
    account_name_label: str = "Member"
    account_id_label: str = "Member ID"
    language: str = "en-US"  # BCP 47 tag of the texts (used for the logo's accessible description)
    # Allows an http:// logo URL (a laptop without TLS). Google fetches only https images, so such a class
    # shows no logo: fine for trying links out, never for members.
    development: bool = False

    @property
    def class_id(self) -> str:
        return f"{self.issuer_id}.{self.class_suffix}"


@dataclass(frozen=True)
class RotatingBarcode:
    """A QR code that changes every `period_millis`: Google fills `{totp_value_0}` in `value_pattern` with the
    TOTP (RFC 6238, SHA-1) of `secret`, `value_length` digits long; the till recomputes it with `totp`."""

    secret: bytes = field(repr=False)  # the per-card TOTP key, 20 bytes as RFC 4226 recommends
    period_millis: int
    value_pattern: str  # e.g. "<signed card code>.0.{totp_value_0}"
    alternate_text: str = ""  # "" -> the card's barcode_alt_text
    value_length: int = 6


@dataclass(frozen=True)
class LoyaltyCard:
    """One member's card as Google Wallet shows it: one loyalty object of the program's class."""

    program: LoyaltyProgram
    object_suffix: str  # letters, digits and . _ -; unique per card within the issuer
    account_id: str
    account_name: str
    points: int
    barcode_value: str  # the signed card code
    barcode_alt_text: str
    tier: str | None = None
    offers: tuple[Offer, ...] = ()
    card_page_url: str | None = None
    active: bool = True  # False: a revoked card (state INACTIVE, moved to the expired passes)
    rotating: RotatingBarcode | None = None

    @property
    def object_id(self) -> str:
        return f"{self.program.issuer_id}.{self.object_suffix}"


def loyalty_class(program: LoyaltyProgram) -> dict[str, Any]:
    """The `LoyaltyClass` resource for `program`, for a REST insert or patch or a save JWT.

    Raises `GooglePassError` naming the field for anything Google would refuse.
    """
    if not isinstance(program, LoyaltyProgram):
        raise GooglePassError("id", f"expected a LoyaltyProgram, got {type(program).__name__}")
    _check_program_id(program, "id")
    _text(program.issuer_name, "issuerName")
    _text(program.program_name, "programName")
    _url(program.logo_url, "programLogo.sourceUri.uri", allow_http=program.development)
    if not isinstance(program.language, str) or not _LANGUAGE.fullmatch(program.language):
        raise GooglePassError("programLogo.contentDescription.defaultValue.language",
                              f"expected a BCP 47 language tag such as 'en-US', got {program.language!r}")
    if not isinstance(program.background_color, str) or not _COLOUR.fullmatch(program.background_color):
        raise GooglePassError("hexBackgroundColor", f"expected a colour as '#rrggbb', got {program.background_color!r}")
    if program.review_status not in REVIEW_STATUSES:
        raise GooglePassError("reviewStatus", f"an issuer sets {' or '.join(sorted(REVIEW_STATUSES))}, "
                                              f"not {program.review_status!r}")
    _text(program.account_name_label, "accountNameLabel")
    _text(program.account_id_label, "accountIdLabel")
    locations = _locations(program.locations)
    if program.homepage_url is not None:
        _url(program.homepage_url, "homepageUri.uri", allow_http=True)

    body: dict[str, Any] = {
        "id": program.class_id,
        "issuerName": program.issuer_name,
        "programName": program.program_name,
        "programLogo": {
            "sourceUri": {"uri": program.logo_url},
            "contentDescription": _localized(program.program_name, program.language),
        },
        "reviewStatus": program.review_status,
        "hexBackgroundColor": program.background_color,
        "accountNameLabel": program.account_name_label,
        "accountIdLabel": program.account_id_label,
    }
    if locations:
        body["merchantLocations"] = locations
    if program.homepage_url is not None:
        body["homepageUri"] = {"uri": program.homepage_url, "description": program.program_name}
    return body


def loyalty_object(card: LoyaltyCard) -> dict[str, Any]:
    """The `LoyaltyObject` resource for `card`: for a REST insert or patch, or (without a rotating code) a JWT.

    Raises `GooglePassError` naming the field for anything Google would refuse.
    """
    if not isinstance(card, LoyaltyCard):
        raise GooglePassError("id", f"expected a LoyaltyCard, got {type(card).__name__}")
    if not isinstance(card.program, LoyaltyProgram):
        raise GooglePassError("classId", f"expected a LoyaltyProgram, got {type(card.program).__name__}")
    _check_program_id(card.program, "classId")
    _suffix(card.object_suffix, "id")
    if not isinstance(card.active, bool):
        raise GooglePassError("state", f"active must be a bool, not {type(card.active).__name__}")
    _text(card.account_id, "accountId")
    _text(card.account_name, "accountName")
    if isinstance(card.points, bool) or not isinstance(card.points, int):
        raise GooglePassError("loyaltyPoints.balance.int", f"points must be an int, not {type(card.points).__name__}")
    if not 0 <= card.points <= MAX_POINTS:
        raise GooglePassError("loyaltyPoints.balance.int", f"points must be between 0 and {MAX_POINTS} (int32)")
    _text(card.program.points_label, "loyaltyPoints.label")
    if card.tier is not None:
        _text(card.program.tier_label, "secondaryLoyaltyPoints.label")
        _text(card.tier, "secondaryLoyaltyPoints.balance.string")
    _text(card.barcode_value, "barcode.value")
    _text(card.barcode_alt_text, "barcode.alternateText")
    modules = _offer_modules(card.offers)
    if card.card_page_url is not None:
        _url(card.card_page_url, "linksModuleData.uris[0].uri", allow_http=True)

    body: dict[str, Any] = {
        "id": card.object_id,
        "classId": card.program.class_id,
        "state": "ACTIVE" if card.active else "INACTIVE",
        "accountId": card.account_id,
        "accountName": card.account_name,
        "loyaltyPoints": {"label": card.program.points_label, "balance": {"int": card.points}},
    }
    if card.tier is not None:
        body["secondaryLoyaltyPoints"] = {"label": card.program.tier_label, "balance": {"string": card.tier}}
    if card.rotating is None:
        body["barcode"] = {"type": "QR_CODE", "value": card.barcode_value, "alternateText": card.barcode_alt_text}
    else:
        # No static `barcode` beside it: Wallet falls back to the static one where rotating codes are not
        # supported, and a code that never changes is exactly what a screenshot could replay.
        body["rotatingBarcode"] = _rotating_barcode(card)
        body["passConstraints"] = {"screenshotEligibility": "INELIGIBLE"}
    if modules:
        body["textModulesData"] = modules
    if card.card_page_url is not None:
        body["linksModuleData"] = {"uris": [{"id": "card_page", "uri": card.card_page_url,
                                             "description": "Your card"}]}
    return body


# --- the save link -------------------------------------------------------------------------------------------


def save_jwt(
    account: ServiceAccount,
    origins: Sequence[str],
    *,
    objects: Sequence[dict[str, Any]],
    classes: Sequence[dict[str, Any]] = (),
    issued_at: int | None = None,
) -> str:
    """The signed "Save to Google Wallet" JWT carrying `objects` (and `classes` not inserted yet).

    `origins` are the web origins (scheme://host[:port]) allowed to show the save button. An object may be a
    full `loyalty_object` or a bare reference {"id": ..., "classId": ...} to one inserted over REST. Objects
    with a rotating code are refused: the JWT is readable by anyone holding the link, the TOTP key is a secret.
    """
    if not isinstance(account, ServiceAccount):
        raise GooglePassError("iss", f"expected a ServiceAccount, got {type(account).__name__}")
    if isinstance(origins, str) or not isinstance(origins, Sequence):
        raise GooglePassError("origins", "expected a list of origins such as ['https://shop.example']")
    for index, origin in enumerate(origins):
        _origin(origin, f"origins[{index}]")
    if isinstance(objects, Mapping) or not isinstance(objects, Sequence) or not objects:
        raise GooglePassError("payload.loyaltyObjects", "expected a non-empty list of loyalty objects")
    for index, body in enumerate(objects):
        _jwt_object(body, f"payload.loyaltyObjects[{index}]")
    if isinstance(classes, Mapping) or not isinstance(classes, Sequence):
        raise GooglePassError("payload.loyaltyClasses", "expected a list of loyalty classes")
    for index, body in enumerate(classes):
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not _RESOURCE_ID.fullmatch(body["id"]):
            raise GooglePassError(f"payload.loyaltyClasses[{index}].id", "expected a loyalty class with an id "
                                                                         "'<issuer id>.<suffix>'")
    if issued_at is None:
        issued_at = int(time.time())
    elif isinstance(issued_at, bool) or not isinstance(issued_at, int) or issued_at < 0:
        raise GooglePassError("iat", f"expected Unix seconds as an int, got {issued_at!r}")

    payload: dict[str, Any] = {}
    if classes:
        payload["loyaltyClasses"] = list(classes)
    payload["loyaltyObjects"] = list(objects)
    claims = {
        "iss": account.client_email,
        "aud": "google",
        "typ": "savetowallet",
        "iat": issued_at,
        "origins": list(origins),
        "payload": payload,
    }
    return sign_rs256(account.private_key, {"typ": "JWT", "kid": account.private_key_id}, claims)


def save_url(jwt: str) -> str:
    """The "Add to Google Wallet" link for a signed save JWT."""
    if not isinstance(jwt, str) or not _JWT_SHAPE.fullmatch(jwt):
        raise GooglePassError("jwt", "expected a compact signed JWT (three base64url parts)")
    return SAVE_URL_PREFIX + jwt


def save_link(
    account: ServiceAccount,
    origins: Sequence[str],
    card: LoyaltyCard,
    *,
    class_inserted: bool,
    object_inserted: bool,
    issued_at: int | None = None,
    max_length: int | None = MAX_SAVE_URL_LENGTH,
) -> str:
    """The save link for `card`: the whole object in the JWT (with the class unless `class_inserted`) when that
    link is at most `max_length` long (None: any length), otherwise a reference to the object inserted over REST.

    Raises `NeedsInsert` (with the bodies to insert) when a reference is needed but `object_inserted` is False;
    a card with a rotating code always needs one, as its secret stays out of JWTs.
    """
    object_body = loyalty_object(card)
    class_body = None if class_inserted else loyalty_class(card.program)
    if card.rotating is None:
        full = save_url(save_jwt(account, origins, objects=[object_body],
                                 classes=[] if class_body is None else [class_body], issued_at=issued_at))
        if max_length is None or len(full) <= max_length:
            return full
        reason = (f"the link with the whole object would be {len(full)} characters (more than "
                  f"{max_length}); insert the object over REST and link to it by id")
    else:
        reason = "a card with a rotating code is inserted over REST (its TOTP secret never goes in a JWT)"
    if not object_inserted:
        raise NeedsInsert(reason, object_body, class_body)
    reference = {"id": card.object_id, "classId": card.program.class_id}
    return save_url(save_jwt(account, origins, objects=[reference], issued_at=issued_at))


def totp(secret: bytes, unix_time: float, period_seconds: int, digits: int = 6) -> str:
    """The TOTP value (RFC 6238 with HMAC-SHA1, i.e. Google's TOTP_SHA1) of `secret` at `unix_time`, as the
    `digits`-long decimal string Google puts in place of {totp_value_0}."""
    if not isinstance(secret, bytes) or not secret:
        raise ValueError("secret: expected non-empty bytes")
    if isinstance(period_seconds, bool) or not isinstance(period_seconds, int) or period_seconds <= 0:
        raise ValueError(f"period_seconds: expected a positive int, got {period_seconds!r}")
    if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 10:
        raise ValueError(f"digits: expected 1 to 10, got {digits!r}")
    if not math.isfinite(unix_time) or unix_time < 0:
        raise ValueError(f"unix_time: expected non-negative seconds, got {unix_time!r}")
    counter = int(unix_time // period_seconds)
    mac = hmac.new(secret, struct.pack(">Q", counter), hashlib.sha1).digest()
    # RFC 4226 section 5.3, dynamic truncation.
    offset = mac[-1] & 0x0F
    number = int.from_bytes(mac[offset:offset + 4], "big") & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


# --- the REST client -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalletResult:
    """What the Wallet API said about one call, or status 0 when no answer arrived (network error, timeout).

    `body` is the JSON object Google answered with (the resource on success, its error otherwise); `reason` is
    Google's error message or the network error's text, None on success.
    """

    status: int
    body: dict[str, Any] | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def not_found(self) -> bool:
        """The class or object does not exist (for an object: the member never saved it, or it was never
        inserted)."""
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """An insert found the id already taken: patch it instead."""
        return self.status == 409

    @property
    def retryable(self) -> bool:
        """The same call may succeed later (no answer, throttled, Google's trouble); anything else is final."""
        return self.status in _RETRYABLE_STATUSES or 500 <= self.status < 600


class _TokenFailure(Exception):
    def __init__(self, result: WalletResult) -> None:
        super().__init__(result.reason)
        self.result = result


class WalletClient:
    """Calls the Google Wallet REST API (loyalty classes and objects) as a service account.

    Build one per worker and keep it: it holds one HTTP connection pool and caches the OAuth 2.0 access token
    until a minute before it expires. A 401 drops the token and the call is made once more with a new one.
    `base_url` and `token_url` point elsewhere for tests (plain http only to a loopback address); `verify` is
    True (certifi's bundle), a CA file path, or False; `clock` returns Unix seconds and dates the assertions.
    Network failures come back as status 0, never as exceptions. Invalid resource ids raise GooglePassError.
    """

    def __init__(
        self,
        account: ServiceAccount,
        *,
        base_url: str = WALLET_API_URL,
        token_url: str | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        verify: str | bool = True,
    ) -> None:
        if not isinstance(account, ServiceAccount):
            raise TypeError(f"expected a ServiceAccount, got {type(account).__name__}")
        self._account = account
        self._base_url = _service_url(base_url, "base_url").rstrip("/")
        self._token_url = _service_url(token_url if token_url is not None else account.token_uri, "token_url")
        self._clock = clock
        self._token: tuple[str, float] | None = None
        self._token_lock = threading.Lock()
        if isinstance(verify, str):
            ssl_context = ssl.create_default_context(cafile=verify)
        elif verify:
            # certifi's bundle, and deliberately not SSL_CERT_FILE and friends: this library reads no settings.
            ssl_context = httpx.create_ssl_context(trust_env=False)
        else:
            ssl_context = httpx.create_ssl_context(verify=False)
        self._client = httpx.Client(verify=ssl_context, timeout=timeout, trust_env=False,
                                    headers={"accept": "application/json"})

    def insert_class(self, body: dict[str, Any]) -> WalletResult:
        """POST loyaltyClass: create the program's class (409 when it exists)."""
        return self._call("POST", "/loyaltyClass", body)

    def patch_class(self, class_id: str, body: dict[str, Any]) -> WalletResult:
        """PATCH loyaltyClass/{id}: change the fields present in `body`."""
        return self._call("PATCH", f"/loyaltyClass/{_resource_id(class_id)}", body)

    def get_class(self, class_id: str) -> WalletResult:
        return self._call("GET", f"/loyaltyClass/{_resource_id(class_id)}", None)

    def insert_object(self, body: dict[str, Any]) -> WalletResult:
        """POST loyaltyObject: create a card's object (409 when it exists; the class must exist)."""
        return self._call("POST", "/loyaltyObject", body)

    def patch_object(self, object_id: str, body: dict[str, Any]) -> WalletResult:
        """PATCH loyaltyObject/{id}: change the fields present in `body` (404 when it does not exist)."""
        return self._call("PATCH", f"/loyaltyObject/{_resource_id(object_id)}", body)

    def get_object(self, object_id: str) -> WalletResult:
        return self._call("GET", f"/loyaltyObject/{_resource_id(object_id)}", None)

    def add_message(
        self, object_id: str, header: str, body: str, message_id: str | None = None, *, notify: bool = False
    ) -> WalletResult:
        """POST loyaltyObject/{id}/addMessage: a message on the card's details; with `notify`, also an Android
        notification (messageType TEXT_AND_NOTIFY, which Google rate-limits per pass)."""
        path = f"/loyaltyObject/{_resource_id(object_id)}/addMessage"
        message: dict[str, Any] = {
            "header": _text(header, "message.header"),
            "body": _text(body, "message.body"),
            "messageType": "TEXT_AND_NOTIFY" if notify else "TEXT",
        }
        if message_id is not None:
            message["id"] = _text(message_id, "message.id")
        return self._call("POST", path, {"message": message})

    def close(self) -> None:
        """Close the connections. Calls afterwards raise RuntimeError."""
        self._client.close()

    def __enter__(self) -> WalletClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> WalletResult:
        if body is not None and not isinstance(body, dict):
            raise TypeError(f"the request body must be a dict, not {type(body).__name__}")
        url = self._base_url + path
        try:
            token = self._access_token()
            response = self._send(method, url, token, body)
            if response.status_code == 401:
                # The token was revoked or expired early: one more try with a fresh one.
                self._forget_token(token)
                token = self._access_token()
                response = self._send(method, url, token, body)
        except _TokenFailure as failure:
            return failure.result
        except (httpx.HTTPError, OSError) as error:
            return WalletResult(0, None, str(error) or type(error).__name__)
        return _result(response)

    def _send(self, method: str, url: str, token: str, body: dict[str, Any] | None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"}
        if body is None:
            return self._client.request(method, url, headers=headers)
        return self._client.request(method, url, headers=headers, json=body)

    def _access_token(self) -> str:
        with self._token_lock:
            now = self._clock()
            if self._token is not None and now < self._token[1]:
                return self._token[0]
            self._token = None
            token, expires_in = self._request_token(now)
            self._token = (token, now + expires_in - TOKEN_EXPIRY_MARGIN_SECONDS)
            return token

    def _forget_token(self, token: str) -> None:
        with self._token_lock:
            # Another thread may already have replaced it; only drop the one the API refused.
            if self._token is not None and self._token[0] == token:
                self._token = None

    def _request_token(self, now: float) -> tuple[str, int]:
        issued_at = int(now)
        claims = {
            "iss": self._account.client_email,
            "scope": WALLET_SCOPE,
            "aud": self._token_url,
            "iat": issued_at,
            "exp": issued_at + ASSERTION_LIFETIME_SECONDS,
        }
        assertion = sign_rs256(self._account.private_key, {"typ": "JWT", "kid": self._account.private_key_id},
                               claims)
        response = self._client.post(self._token_url, data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion})
        content = _json_object(response)
        if response.status_code != 200:
            error = content.get("error") if content else None
            description = content.get("error_description") if content else None
            detail = ": ".join(str(part) for part in (error, description) if part) or response.text[:200]
            raise _TokenFailure(WalletResult(response.status_code, content, f"token request refused: {detail}"))
        token = content.get("access_token") if content else None
        expires_in = content.get("expires_in") if content else None
        if not isinstance(token, str) or not token or isinstance(expires_in, bool) or not isinstance(expires_in, int):
            raise _TokenFailure(WalletResult(0, content, "the token endpoint answered without an access token"))
        return token, expires_in


# --- helpers -------------------------------------------------------------------------------------------------


def _text(value: object, field: str, *, required: bool = True) -> str:
    if not isinstance(value, str):
        raise GooglePassError(field, f"expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise GooglePassError(field, "must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise GooglePassError(field, "is not valid Unicode text (a lone surrogate?)") from None
    return value


def _suffix(value: object, field: str) -> str:
    if not isinstance(value, str) or not _SUFFIX.fullmatch(value):
        raise GooglePassError(field, f"the id suffix must be letters, digits and . _ - only, got {value!r}")
    return value


def _check_program_id(program: LoyaltyProgram, field: str) -> None:
    issuer_id = program.issuer_id
    if not isinstance(issuer_id, str) or not _ISSUER_ID.fullmatch(issuer_id) or int(issuer_id) >= 2**63:
        raise GooglePassError(field, f"the issuer id must be Google's issuer number (digits), got {issuer_id!r}")
    _suffix(program.class_suffix, field)


def _url(value: object, field: str, *, allow_http: bool) -> str:
    text = _text(value, field)
    parts = urlsplit(text)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        wanted = "an http(s)" if allow_http else "an https"
        raise GooglePassError(field, f"expected {wanted} URL, got {text!r}")
    return text


def _origin(value: object, field: str) -> None:
    text = _text(value, field)
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.path or parts.query or parts.fragment:
        raise GooglePassError(field, f"expected an origin such as 'https://shop.example' (no path), got {text!r}")


def _localized(value: str, language: str) -> dict[str, Any]:
    return {"defaultValue": {"language": language, "value": value}}


def _locations(locations: object) -> list[dict[str, float]]:
    if not isinstance(locations, tuple):
        raise GooglePassError("merchantLocations", "locations must be a tuple of (latitude, longitude)")
    if len(locations) > MAX_LOCATIONS:
        raise GooglePassError("merchantLocations", f"Google takes at most {MAX_LOCATIONS} locations per class")
    points = []
    for index, location in enumerate(locations):
        if not isinstance(location, tuple) or len(location) != 2:
            raise GooglePassError(f"merchantLocations[{index}]", "expected a (latitude, longitude) pair")
        latitude = _coordinate(location[0], 90, f"merchantLocations[{index}].latitude")
        longitude = _coordinate(location[1], 180, f"merchantLocations[{index}].longitude")
        points.append({"latitude": latitude, "longitude": longitude})
    return points


def _coordinate(value: object, bound: int, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GooglePassError(field, f"expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or not -bound <= number <= bound:
        raise GooglePassError(field, f"must be between -{bound} and {bound}, got {value!r}")
    return number


def _offer_modules(offers: object) -> list[dict[str, str]]:
    if not isinstance(offers, tuple) or not all(isinstance(offer, Offer) for offer in offers):
        raise GooglePassError("textModulesData", "offers must be a tuple of Offer")
    if len(offers) > MAX_OFFERS:
        raise GooglePassError("textModulesData", f"Google Wallet shows at most {MAX_OFFERS} text modules per object")
    modules = []
    for index, offer in enumerate(offers):
        _text(offer.title, f"textModulesData[{index}].header")
        _text(offer.detail, f"textModulesData[{index}].body", required=False)
        # The module id may hold letters, digits, _ and - (no dots: they separate template field paths).
        if offer.detail:
            modules.append({"id": f"offer_{index + 1}", "header": offer.title, "body": offer.detail})
        else:
            modules.append({"id": f"offer_{index + 1}", "header": "Offer", "body": offer.title})
    return modules


def _rotating_barcode(card: LoyaltyCard) -> dict[str, Any]:
    rotating = card.rotating
    if not isinstance(rotating, RotatingBarcode):
        raise GooglePassError("rotatingBarcode", f"expected a RotatingBarcode, got {type(rotating).__name__}")
    key_field = "rotatingBarcode.totpDetails.parameters[0].key"
    if not isinstance(rotating.secret, bytes):
        raise GooglePassError(key_field, f"the TOTP secret must be bytes, not {type(rotating.secret).__name__}")
    if not MIN_TOTP_SECRET_BYTES <= len(rotating.secret) <= MAX_TOTP_SECRET_BYTES:
        raise GooglePassError(key_field, f"the TOTP secret must be {MIN_TOTP_SECRET_BYTES} to "
                                         f"{MAX_TOTP_SECRET_BYTES} bytes (RFC 4226 asks for 128 bits or more)")
    period = rotating.period_millis
    period_field = "rotatingBarcode.totpDetails.periodMillis"
    if isinstance(period, bool) or not isinstance(period, int):
        raise GooglePassError(period_field, f"expected an int of milliseconds, got {type(period).__name__}")
    if period < 1000 or period % 1000:
        # Whole seconds, so the till's totp(period_seconds=...) steps exactly as Google's.
        raise GooglePassError(period_field, f"expected whole seconds of at least 1000 ms, got {period}")
    length = rotating.value_length
    if isinstance(length, bool) or not isinstance(length, int) or length not in TOTP_VALUE_LENGTHS:
        raise GooglePassError("rotatingBarcode.totpDetails.parameters[0].valueLength",
                              f"expected {TOTP_VALUE_LENGTHS.start} to {TOTP_VALUE_LENGTHS.stop - 1} digits, "
                              f"got {length!r}")
    pattern_field = "rotatingBarcode.valuePattern"
    pattern = _text(rotating.value_pattern, pattern_field)
    tokens = _PATTERN_TOKEN.findall(pattern)
    unknown = sorted(set(tokens) - _PATTERN_TOKENS)
    if unknown:
        raise GooglePassError(pattern_field, f"{{{unknown[0]}}} is not a substitution Google makes here; use "
                                             "{totp_value_0}")
    if "totp_value_0" not in tokens:
        raise GooglePassError(pattern_field, "the pattern must contain {totp_value_0}, or the code never rotates")
    if card.barcode_value not in pattern:
        raise GooglePassError(pattern_field, "the pattern must carry the card's signed code (barcode_value)")
    alternate_text = _text(rotating.alternate_text, "rotatingBarcode.alternateText", required=False)
    return {
        "type": "QR_CODE",
        "valuePattern": pattern,
        "alternateText": alternate_text or card.barcode_alt_text,
        "totpDetails": {
            "algorithm": "TOTP_SHA1",
            # int64 fields travel as decimal strings in Google's JSON.
            "periodMillis": str(period),
            # The discovery document: "The secret key ... encoded as a Base16 string."
            "parameters": [{"key": rotating.secret.hex(), "valueLength": length}],
        },
    }


def _jwt_object(body: object, field: str) -> None:
    if not isinstance(body, dict):
        raise GooglePassError(field, f"expected a loyalty object, got {type(body).__name__}")
    for key in ("id", "classId"):
        value = body.get(key)
        if not isinstance(value, str) or not _RESOURCE_ID.fullmatch(value):
            raise GooglePassError(f"{field}.{key}", f"expected an id '<issuer id>.<suffix>', got {value!r}")
    secret_path = _secret_path(body)
    if secret_path is not None:
        raise GooglePassError(f"{field}.{secret_path}", "an object with a rotating code carries its TOTP secret; "
                                                        "insert it over REST and put only a reference in the JWT")


def _secret_path(value: object, path: str = "") -> str | None:
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if key in ("rotatingBarcode", "totpDetails"):
                return here
            found = _secret_path(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _secret_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _resource_id(value: object) -> str:
    if not isinstance(value, str) or not _RESOURCE_ID.fullmatch(value):
        raise GooglePassError("resourceId", f"expected '<issuer id>.<suffix>' with letters, digits and . _ - "
                                            f"only, got {value!r}")
    # Every character left is unreserved in a URL path (RFC 3986), so the id goes in as it is.
    return value


def _service_url(url: object, name: str) -> str:
    if not isinstance(url, str):
        raise ValueError(f"{name} must be a URL string")
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        # Plain http only to this machine (a test server): access tokens must not cross a network in clear.
        return url
    raise ValueError(f"{name} must be an https:// URL (http:// only to a loopback address), got {url!r}")


def _key_file_string(content: dict[str, Any], key: str) -> str:
    value = content.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key}: missing from the service-account key file")
    return value


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        content = response.json()
    except ValueError:
        return None
    return content if isinstance(content, dict) else None


def _result(response: httpx.Response) -> WalletResult:
    content = _json_object(response)
    if 200 <= response.status_code < 300:
        return WalletResult(response.status_code, content, None)
    reason: str | None = None
    error = content.get("error") if content else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        # Google's error shape: {"error": {"code": 404, "message": "...", "status": "NOT_FOUND", ...}}
        reason = error["message"]
    elif isinstance(error, str):
        reason = error
    if reason is None:
        reason = response.text[:200] or response.reason_phrase or None
    return WalletResult(response.status_code, content, reason)
