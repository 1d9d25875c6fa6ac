"""Apple Wallet store cards: describe one member's loyalty card as a `CardPass`, get a signed .pkpass back.

For the issuer's pass endpoints and web service: `build_pkpass(card, certificates)` validates the description,
writes pass.json, adds the program's images (rendered and hashed once per program, see `passes._images`), lists
every file's SHA-1 in manifest.json, signs the manifest (detached PKCS#7, SHA-256, the WWDR certificate inside)
and zips it all. Everything but the signature is cached or cheap, so a pass costs little more than one RSA
signature.

A description iOS would refuse, or silently mangle, raises `PassDescriptionError` naming the pass.json key, so the
cause is found here rather than on a phone that only says "cannot add pass".

Layout of the card (keys unique across the pass, as Apple requires):

    header     points (a number, with a change message for the lock screen)
    primary    holder (the member's name, over the strip)
    secondary  tier (when the member has one), offer (the first offer, when there is one)
    back       program, offer-1..n, terms (when given), card-page (a link to the member's card page)
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from passes._images import PassArt, initials_of, logo_problem, parse_hex_colour, pass_images
from passes._zip import cached_zip_entry, write_zip, zip_entry
from passes.certificates import PassCertificates

__all__ = ["PKPASS_MIME_TYPE", "CardPass", "Offer", "PassDescriptionError", "build_pkpass", "pass_json", "validate"]

PKPASS_MIME_TYPE = "application/vnd.apple.pkpass"

# The serial travels in the web service's URL paths (/v1/passes/<type>/<serial>): keep it URL-safe and short.
MAX_SERIAL_LENGTH = 128
_SERIAL = re.compile(r"[A-Za-z0-9._~-]+")
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
# The token goes verbatim into an `Authorization: ApplePass <token>` header; Apple asks for 16 characters or more.
MIN_TOKEN_LENGTH = 16
_TOKEN = re.compile(r"[\x21-\x7e]+")
# pass.json numbers are doubles on the phone: beyond 2**53 they lose units.
MAX_POINTS = 2**53 - 1

POINTS_FIELD = "storeCard.headerFields[points]"
HOLDER_FIELD = "storeCard.primaryFields[holder]"
TIER_FIELD = "storeCard.secondaryFields[tier]"
CARD_PAGE_FIELD = "storeCard.backFields[card-page]"
TERMS_FIELD = "storeCard.backFields[terms]"
BARCODE_FIELD = "barcodes[0]"


class PassDescriptionError(ValueError):
    """A `CardPass` that would make a pass iOS refuses. `field` is the pass.json key path at fault, e.g.
    `webServiceURL` or `storeCard.headerFields[points].changeMessage`; the message says what to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Offer:
    """A reward or offer shown on the card: the first on the front, all of them on the back."""

    title: str
    detail: str = ""


@dataclass(frozen=True)
class CardPass:
    """Everything one member's store card shows, in plain values; `build_pkpass` turns it into a .pkpass."""

    pass_type_identifier: str
    team_identifier: str
    serial_number: str
    organization_name: str
    program_name: str  # logoText and the default description
    holder_name: str
    points: int
    barcode_message: str  # the signed card code (base32 text), put in the QR as-is
    barcode_alt_text: str  # a short form of the serial shown under the QR
    card_page_url: str  # back field link to the member's card page
    background_color: str = "#1f2937"  # "#rrggbb"; pass.json wants "rgb(r, g, b)"
    foreground_color: str = "#ffffff"
    label_color: str = "#d1d5db"
    logo_png: bytes | None = None  # the merchant's logo; None -> a monogram of program_name
    tier: str | None = None
    offers: tuple[Offer, ...] = ()
    terms: str = ""
    web_service_url: str | None = None
    authentication_token: str | None = None
    points_label: str = "Points"
    points_change_message: str = "You now have %@ points"
    tier_change_message: str = "You are now %@"
    description: str = ""  # "" -> f"{program_name} loyalty card"
    voided: bool = False  # a revoked card's pass is voided
    development: bool = False  # allows an http:// web service URL (a laptop without TLS)


def validate(card: CardPass) -> None:
    """Raise `PassDescriptionError` for the first thing in `card` that would make a broken pass."""
    _text(card.pass_type_identifier, "passTypeIdentifier")
    _text(card.team_identifier, "teamIdentifier")
    _text(card.serial_number, "serialNumber")
    if len(card.serial_number) > MAX_SERIAL_LENGTH or not _SERIAL.fullmatch(card.serial_number):
        raise PassDescriptionError("serialNumber", f"use at most {MAX_SERIAL_LENGTH} letters, digits and . _ ~ -, "
                                                   "as the serial appears in the web service's URLs")
    _text(card.organization_name, "organizationName")
    _text(card.program_name, "logoText")
    _text(card.description, "description", required=False)
    for key, colour in (("backgroundColor", card.background_color), ("foregroundColor", card.foreground_color),
                        ("labelColor", card.label_color)):
        if not isinstance(colour, str) or not _COLOUR.fullmatch(colour):
            raise PassDescriptionError(key, f"expected a colour as '#rrggbb', got {colour!r}")

    _text(card.barcode_message, f"{BARCODE_FIELD}.message")
    try:
        card.barcode_message.encode("iso-8859-1")
    except UnicodeEncodeError:
        raise PassDescriptionError(f"{BARCODE_FIELD}.message", "the barcode message must be ISO-8859-1 (Latin-1) "
                                                               "text, as its messageEncoding says") from None
    _text(card.barcode_alt_text, f"{BARCODE_FIELD}.altText")

    if isinstance(card.points, bool) or not isinstance(card.points, int):
        raise PassDescriptionError(f"{POINTS_FIELD}.value", f"points must be an int, not {type(card.points).__name__}")
    if abs(card.points) > MAX_POINTS:
        raise PassDescriptionError(f"{POINTS_FIELD}.value", "points are too large for a pass.json number")
    _text(card.points_label, f"{POINTS_FIELD}.label")
    _change_message(card.points_change_message, f"{POINTS_FIELD}.changeMessage")
    _text(card.holder_name, f"{HOLDER_FIELD}.value")
    if card.tier is not None:
        _text(card.tier, f"{TIER_FIELD}.value")
    _change_message(card.tier_change_message, f"{TIER_FIELD}.changeMessage")
    if not isinstance(card.offers, tuple) or not all(isinstance(offer, Offer) for offer in card.offers):
        raise PassDescriptionError("storeCard.backFields[offer-1]", "offers must be a tuple of Offer")
    for number, offer in enumerate(card.offers, start=1):
        _text(offer.title, f"storeCard.backFields[offer-{number}].label")
        _text(offer.detail, f"storeCard.backFields[offer-{number}].value", required=False)
    _text(card.terms, f"{TERMS_FIELD}.value", required=False)
    _text(card.card_page_url, f"{CARD_PAGE_FIELD}.value")
    _url(card.card_page_url, f"{CARD_PAGE_FIELD}.value", allow_http=True)

    _web_service(card)
    for name, flag in (("voided", card.voided), ("development", card.development)):
        if not isinstance(flag, bool):
            raise PassDescriptionError(name, f"{name} must be a bool, not {type(flag).__name__}")
    if card.logo_png is not None:
        if not isinstance(card.logo_png, bytes):
            raise PassDescriptionError("logo.png", f"the logo must be PNG bytes, not {type(card.logo_png).__name__}")
        problem = logo_problem(card.logo_png)
        if problem is not None:
            raise PassDescriptionError("logo.png", problem)


def pass_json(card: CardPass) -> dict[str, Any]:
    """The content of `card`'s pass.json, as `build_pkpass` writes it; validates `card` first."""
    validate(card)
    return _pass_json(card)


def build_pkpass(card: CardPass, certificates: PassCertificates) -> bytes:
    """The signed .pkpass (a zip, served as `PKPASS_MIME_TYPE`) for `card`, signed with `certificates`.

    Refuses with `PassDescriptionError` a card whose pass type or team identifier differs from the certificate's:
    iOS would refuse the pass without saying why.
    """
    validate(card)
    _match_certificate(card, certificates)
    pass_bytes = json.dumps(_pass_json(card), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    images = pass_images(_art(card))

    manifest = {image.name: image.sha1 for image in images}
    manifest["pass.json"] = hashlib.sha1(pass_bytes).hexdigest()
    manifest_bytes = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode("ascii")
    signature = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(manifest_bytes)
        .add_signer(certificates.signer_cert, certificates.signer_key, hashes.SHA256())
        .add_certificate(certificates.wwdr_cert)
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])
    )
    return write_zip([zip_entry("pass.json", pass_bytes),
                      *(cached_zip_entry(image.name, image.data, image.crc32) for image in images),
                      zip_entry("manifest.json", manifest_bytes), zip_entry("signature", signature)])


def _text(value: object, field: str, *, required: bool = True) -> str:
    if not isinstance(value, str):
        raise PassDescriptionError(field, f"expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise PassDescriptionError(field, "must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PassDescriptionError(field, "is not valid Unicode text (a lone surrogate?)") from None
    return value


def _change_message(value: object, field: str) -> None:
    if "%@" not in _text(value, field):
        raise PassDescriptionError(field, "a change message must contain %@, where Wallet puts the new value")


def _url(value: str, field: str, *, allow_http: bool) -> None:
    parts = urlsplit(value)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.netloc:
        wanted = "an http(s)" if allow_http else "an https"
        raise PassDescriptionError(field, f"expected {wanted} URL, got {value!r}")


def _web_service(card: CardPass) -> None:
    url, token = card.web_service_url, card.authentication_token
    if url is None and token is None:
        return
    if token is None:
        raise PassDescriptionError("authenticationToken", "a pass with a webServiceURL needs an authenticationToken")
    if url is None:
        raise PassDescriptionError("webServiceURL", "a pass with an authenticationToken needs a webServiceURL")
    _text(token, "authenticationToken")
    if len(token) < MIN_TOKEN_LENGTH or not _TOKEN.fullmatch(token):
        raise PassDescriptionError("authenticationToken", f"use at least {MIN_TOKEN_LENGTH} printable ASCII "
                                                          "characters without spaces")
    _text(url, "webServiceURL")
    if card.development:
        _url(url, "webServiceURL", allow_http=True)
    elif urlsplit(url).scheme != "https":
        raise PassDescriptionError("webServiceURL", "iOS calls only an https:// web service (http:// is allowed "
                                                    "only for development passes)")
    else:
        _url(url, "webServiceURL", allow_http=False)


def _match_certificate(card: CardPass, certificates: PassCertificates) -> None:
    expected_type, expected_team = certificates.pass_type_identifier, certificates.team_identifier
    if expected_type is not None and card.pass_type_identifier != expected_type:
        raise PassDescriptionError("passTypeIdentifier", f"{card.pass_type_identifier!r} must match the signing "
                                                         f"certificate's pass type identifier {expected_type!r}")
    if expected_team is not None and card.team_identifier != expected_team:
        raise PassDescriptionError("teamIdentifier", f"{card.team_identifier!r} must match the signing "
                                                     f"certificate's team identifier {expected_team!r}")


def _rgb(colour: str) -> str:
    red, green, blue = parse_hex_colour(colour)
    return f"rgb({red}, {green}, {blue})"


def _art(card: CardPass) -> PassArt:
    return PassArt(
        logo_png=card.logo_png,
        background=parse_hex_colour(card.background_color),
        foreground=parse_hex_colour(card.foreground_color),
        initials="" if card.logo_png is not None else initials_of(card.program_name),
    )


def _pass_json(card: CardPass) -> dict[str, Any]:
    barcode = {"format": "PKBarcodeFormatQR", "message": card.barcode_message, "messageEncoding": "iso-8859-1",
               "altText": card.barcode_alt_text}
    secondary: list[dict[str, Any]] = []
    if card.tier is not None:
        secondary.append({"key": "tier", "label": "Tier", "value": card.tier,
                          "changeMessage": card.tier_change_message})
    if card.offers:
        secondary.append({"key": "offer", "label": "Offer", "value": card.offers[0].title,
                          "textAlignment": "PKTextAlignmentRight" if secondary else "PKTextAlignmentLeft"})
    back: list[dict[str, Any]] = [{"key": "program", "label": "Program", "value": card.program_name}]
    for number, offer in enumerate(card.offers, start=1):
        if offer.detail:
            back.append({"key": f"offer-{number}", "label": offer.title, "value": offer.detail})
        else:
            back.append({"key": f"offer-{number}", "label": "Offer", "value": offer.title})
    if card.terms:
        back.append({"key": "terms", "label": "Terms and conditions", "value": card.terms})
    back.append({"key": "card-page", "label": "Your card", "value": card.card_page_url,
                 "attributedValue": f'<a href="{html.escape(card.card_page_url)}">Open your card</a>'})

    content: dict[str, Any] = {
        "formatVersion": 1,
        "passTypeIdentifier": card.pass_type_identifier,
        "teamIdentifier": card.team_identifier,
        "serialNumber": card.serial_number,
        "organizationName": card.organization_name,
        "description": card.description or f"{card.program_name} loyalty card",
        "logoText": card.program_name,
        "backgroundColor": _rgb(card.background_color),
        "foregroundColor": _rgb(card.foreground_color),
        "labelColor": _rgb(card.label_color),
        "barcodes": [barcode],
        "barcode": barcode,  # iOS 8 and earlier read only the singular key
    }
    if card.web_service_url is not None:
        content["webServiceURL"] = card.web_service_url
        content["authenticationToken"] = card.authentication_token
    if card.voided:
        content["voided"] = True
    content["storeCard"] = {
        "headerFields": [{"key": "points", "label": card.points_label, "value": card.points,
                          "numberStyle": "PKNumberStyleDecimal", "changeMessage": card.points_change_message,
                          "textAlignment": "PKTextAlignmentRight"}],
        "primaryFields": [{"key": "holder", "label": "Member", "value": card.holder_name}],
        "secondaryFields": secondary,
        "backFields": back,
    }
    return content
