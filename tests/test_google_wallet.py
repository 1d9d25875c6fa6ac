"""Google Wallet: loyalty classes and objects, the save JWT, rotating codes and the REST client.

The judges are independent of `passes.google`: Google's discovery document for the Wallet API (through
`tests.wallet_schema`) for every class, object and JWT payload; PyJWT for every RS256 signature; RFC 6238's test
vectors and `cryptography`'s own TOTP for the rotating codes; and `LocalWallet`, a local token endpoint and
Wallet API that verifies what the client sends.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.twofactor.totp import TOTP

import passes
from passes.apple import Offer
from passes.google import (
    MAX_SAVE_JWT_LENGTH,
    MAX_SAVE_URL_LENGTH,
    SAVE_URL_PREFIX,
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
from tests import wallet_schema
from tests.google_wallet_server import API_ROOT, LocalWallet
from tests.wallet_schema import assert_valid, validate

ISSUER = "3388000000012345678"
ORIGINS = ("https://loyalty.example", "http://localhost:5000")
SECRET = bytes(range(1, 21))
START = 1_800_000_000.0


class FakeClock:
    """A clock the test moves by hand; the client and the server share one."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def account() -> ServiceAccount:
    return ServiceAccount.from_json(make_dev_service_account())


def make_program(**changes: Any) -> LoyaltyProgram:
    program = LoyaltyProgram(
        issuer_id=ISSUER,
        class_suffix="coffee-club",
        issuer_name="Bean There",
        program_name="Coffee Club",
        logo_url="https://loyalty.example/static/programs/coffee-club/logo.png",
    )
    return dataclasses.replace(program, **changes)


def make_card(**changes: Any) -> LoyaltyCard:
    card = LoyaltyCard(
        program=make_program(),
        object_suffix="card-7Q2K4M9X",
        account_id="7Q2K-4M9X",
        account_name="Amina Kowalski",
        points=1250,
        barcode_value="LC1A7Q2K4M9XABCDEFGHJKMNPQRSTVWXYZ234567ABCDEFGH",
        barcode_alt_text="7Q2K-4M9X",
    )
    return dataclasses.replace(card, **changes)


def rotating(**changes: Any) -> RotatingBarcode:
    barcode = RotatingBarcode(
        secret=SECRET,
        period_millis=30_000,
        value_pattern=make_card().barcode_value + ".0.{totp_value_0}",
    )
    return dataclasses.replace(barcode, **changes)


LONG_OFFERS = tuple(Offer(f"Offer number {n}", "Twice the points on every pastry, all day, in every store. " * 3)
                    for n in range(1, 8))

PROGRAMS = {
    "plain": make_program(),
    "locations-homepage": make_program(locations=((52.2297, 21.0122), (-33.8688, 151.2093), (0, -180)),
                                       homepage_url="https://loyalty.example/", background_color="#fc0"),
    "draft-labels": make_program(review_status="DRAFT", points_label="Stars", tier_label="Level",
                                 account_name_label="Name", account_id_label="Card", language="pl"),
}
CARDS = {
    "plain": make_card(),
    "tier": make_card(tier="Gold"),
    "offers": make_card(offers=(Offer("Free coffee"), Offer("Birthday cake", "A slice on the house"))),
    "card-page": make_card(card_page_url="https://loyalty.example/c/s3cr3t-link"),
    "inactive": make_card(active=False, points=0),
    "rotating": make_card(rotating=rotating(), tier="Silver"),
    "rotating-8-digits": make_card(rotating=rotating(value_length=8, period_millis=60_000, alternate_text="Show me")),
    "everything": make_card(program=PROGRAMS["locations-homepage"], tier="Gold", offers=LONG_OFFERS[:2],
                            card_page_url="https://loyalty.example/c/x", points=2**31 - 1),
}


def decode_save_jwt(token: str, account: ServiceAccount) -> dict[str, Any]:
    """Verify a save JWT the way Google would, with PyJWT, and check its fixed claims."""
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "typ": "JWT", "kid": account.private_key_id}
    claims: dict[str, Any] = jwt.decode(token, account.public_key_pem(), algorithms=["RS256"], audience="google",
                                        issuer=account.client_email, options={"require": ["iat", "iss", "aud"]})
    assert claims["typ"] == "savetowallet"
    assert set(claims) == {"iss", "aud", "typ", "iat", "origins", "payload"}
    return claims


def assert_valid_payload(payload: dict[str, Any]) -> None:
    assert set(payload) <= {"loyaltyClasses", "loyaltyObjects"}
    for body in payload.get("loyaltyClasses", []):
        assert_valid("LoyaltyClass", body)
    for body in payload["loyaltyObjects"]:
        assert_valid("LoyaltyObject", body)


# -- the discovery document as judge -------------------------------------------------------------------------


def test_the_judge_is_googles_discovery_document_from_the_client_library() -> None:
    document = wallet_schema.discovery_document()
    assert (document["name"], document["version"]) == ("walletobjects", "v1")
    path = wallet_schema.discovery_document_path().as_posix()
    assert path.endswith("googleapiclient/discovery_cache/documents/walletobjects.v1.json")
    assert {"LoyaltyClass", "LoyaltyObject", "RotatingBarcode", "AddMessageRequest"} <= set(
        wallet_schema.walletobjects_schemas())


@pytest.mark.parametrize(
    ("resource", "value", "expected"),
    [
        ("LoyaltyObject", {"id": "1.a", "colour": "red"}, "LoyaltyObject.colour: unknown field"),
        ("LoyaltyObject", {"state": "BROKEN"}, "LoyaltyObject.state: 'BROKEN' is not one of"),
        ("LoyaltyObject", {"state": "active"}, "LoyaltyObject.state: 'active' is a deprecated enum value"),
        ("LoyaltyObject", {"accountName": 12}, "LoyaltyObject.accountName: expected a string, got number"),
        ("LoyaltyObject", {"hasUsers": "yes"}, "LoyaltyObject.hasUsers: expected a boolean, got string"),
        ("LoyaltyObject", {"barcode": {"type": "QR_CODE", "text": "x"}}, "LoyaltyObject.barcode.text: unknown field"),
        ("LoyaltyObject", {"barcode": {"type": "QRCODE"}}, "LoyaltyObject.barcode.type: 'QRCODE' is not one of"),
        ("LoyaltyObject", {"loyaltyPoints": {"balance": {"int": "12"}}},
         "LoyaltyObject.loyaltyPoints.balance.int: expected an integer (int32), got string"),
        ("LoyaltyObject", {"loyaltyPoints": {"balance": {"int": 2**31}}},
         "LoyaltyObject.loyaltyPoints.balance.int: 2147483648 is out of range for int32"),
        ("LoyaltyObject", {"loyaltyPoints": {"balance": {"double": True}}},
         "LoyaltyObject.loyaltyPoints.balance.double: expected a finite number, got boolean"),
        ("LoyaltyObject", {"textModulesData": {"header": "x"}},
         "LoyaltyObject.textModulesData: expected an array, got object"),
        ("LoyaltyObject", {"textModulesData": [{"header": "x"}, {"title": "y"}]},
         "LoyaltyObject.textModulesData[1].title: unknown field"),
        ("LoyaltyObject", {"rotatingBarcode": {"totpDetails": {"periodMillis": "30s"}}},
         "LoyaltyObject.rotatingBarcode.totpDetails.periodMillis: expected an integer (int64)"),
        ("LoyaltyObject", {"rotatingBarcode": {"totpDetails": {"algorithm": "TOTP_SHA256"}}},
         "LoyaltyObject.rotatingBarcode.totpDetails.algorithm: 'TOTP_SHA256' is not one of"),
        ("LoyaltyObject", {"locations": [{"latitude": 1.0, "longitude": 2.0}]},
         "LoyaltyObject.locations: deprecated field"),
        ("LoyaltyObject", [], "LoyaltyObject: expected an object, got array"),
        ("LoyaltyClass", {"programLogo": {"sourceUri": "https://x.example/l.png"}},
         "LoyaltyClass.programLogo.sourceUri: expected an object, got string"),
        ("LoyaltyClass", {"programLogo": {"contentDescription": {"defaultValue": {"lang": "en"}}}},
         "LoyaltyClass.programLogo.contentDescription.defaultValue.lang: unknown field"),
        ("LoyaltyClass", {"merchantLocations": [{"latitude": "52.2"}]},
         "LoyaltyClass.merchantLocations[0].latitude: expected a finite number, got string"),
        ("LoyaltyClass", {"reviewStatus": "approved"}, "LoyaltyClass.reviewStatus: 'approved' is a deprecated"),
    ],
)
def test_the_validator_catches_broken_resources(resource: str, value: Any, expected: str) -> None:
    problems = validate(resource, value)
    assert any(problem.startswith(expected) for problem in problems), problems
    with pytest.raises(AssertionError, match="not a valid"):
        assert_valid(resource, value)


def test_the_validator_lists_every_problem_and_accepts_int64_both_ways() -> None:
    broken = {"id": 5, "state": "GONE", "extra": True, "barcode": {"alternateText": None}}
    assert len(validate("LoyaltyObject", broken)) == 4
    for period in ("30000", 30000):
        assert validate("RotatingBarcodeTotpDetails", {"periodMillis": period}) == []
    assert validate("RotatingBarcodeTotpDetails", {"periodMillis": str(2**63)}) != []
    assert validate("LoyaltyObject", {"locations": []}, allow_deprecated=True) == []
    assert validate("Image", {"privateImageId": "abc"}) == []


def test_the_validator_follows_maps_and_base64(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Wallet document declares no maps or byte fields on the loyalty resources; a made-up schema shows the
    # validator checks them anyway.
    schemas = {
        "Bag": {"id": "Bag", "type": "object", "properties": {
            "counts": {"type": "object", "additionalProperties": {"type": "integer", "format": "int32"}},
            "blob": {"type": "string", "format": "byte"},
            "tags": {"type": "array", "items": {"$ref": "Tag"}},
        }},
        "Tag": {"id": "Tag", "type": "object", "properties": {"name": {"type": "string"}}},
    }
    monkeypatch.setattr(wallet_schema, "walletobjects_schemas", lambda: schemas)
    assert validate("Bag", {"counts": {"a": 1, "b": 2}, "blob": "aGVsbG8=", "tags": [{"name": "x"}]}) == []
    assert validate("Bag", {"counts": {"a": "1"}, "blob": "not base64!", "tags": [{"nom": "x"}]}) == [
        "Bag.counts['a']: expected an integer (int32), got string '1'",
        "Bag.blob: expected base64 bytes, got 'not base64!'",
        "Bag.tags[0].nom: unknown field (not in the Tag schema)",
    ]


# -- classes and objects ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROGRAMS)
def test_every_class_is_valid_per_the_discovery_document(name: str) -> None:
    assert_valid("LoyaltyClass", loyalty_class(PROGRAMS[name]))


@pytest.mark.parametrize("name", CARDS)
def test_every_object_is_valid_per_the_discovery_document(name: str) -> None:
    assert_valid("LoyaltyObject", loyalty_object(CARDS[name]))


def test_class_carries_the_program() -> None:
    body = loyalty_class(PROGRAMS["locations-homepage"])
    assert body["id"] == f"{ISSUER}.coffee-club" == PROGRAMS["plain"].class_id
    assert body["issuerName"] == "Bean There"
    assert body["programName"] == "Coffee Club"
    assert body["programLogo"] == {
        "sourceUri": {"uri": "https://loyalty.example/static/programs/coffee-club/logo.png"},
        "contentDescription": {"defaultValue": {"language": "en-US", "value": "Coffee Club"}},
    }
    assert body["reviewStatus"] == "UNDER_REVIEW"
    assert body["hexBackgroundColor"] == "#fc0"
    assert body["merchantLocations"] == [{"latitude": 52.2297, "longitude": 21.0122},
                                         {"latitude": -33.8688, "longitude": 151.2093},
                                         {"latitude": 0.0, "longitude": -180.0}]
    assert body["homepageUri"]["uri"] == "https://loyalty.example/"
    assert "merchantLocations" not in loyalty_class(PROGRAMS["plain"])
    assert loyalty_class(PROGRAMS["draft-labels"])["reviewStatus"] == "DRAFT"


def test_object_carries_the_card() -> None:
    body = loyalty_object(CARDS["everything"])
    card = CARDS["everything"]
    assert body["id"] == f"{ISSUER}.card-7Q2K4M9X" == card.object_id
    assert body["classId"] == card.program.class_id
    assert body["state"] == "ACTIVE"
    assert (body["accountId"], body["accountName"]) == ("7Q2K-4M9X", "Amina Kowalski")
    assert body["loyaltyPoints"] == {"label": "Points", "balance": {"int": 2**31 - 1}}
    assert body["secondaryLoyaltyPoints"] == {"label": "Tier", "balance": {"string": "Gold"}}
    assert body["barcode"] == {"type": "QR_CODE", "value": card.barcode_value, "alternateText": "7Q2K-4M9X"}
    assert [module["header"] for module in body["textModulesData"]] == ["Offer number 1", "Offer number 2"]
    assert body["textModulesData"][0]["body"].startswith("Twice the points")
    assert body["linksModuleData"] == {"uris": [{"id": "card_page", "uri": "https://loyalty.example/c/x",
                                                 "description": "Your card"}]}
    assert "rotatingBarcode" not in body and "passConstraints" not in body

    plain = loyalty_object(CARDS["plain"])
    assert not {"secondaryLoyaltyPoints", "textModulesData", "linksModuleData"} & set(plain)
    assert loyalty_object(CARDS["offers"])["textModulesData"][0] == {"id": "offer_1", "header": "Offer",
                                                                     "body": "Free coffee"}
    assert loyalty_object(CARDS["inactive"])["state"] == "INACTIVE"


def test_rotating_object_carries_a_totp_barcode_and_refuses_screenshots() -> None:
    card = CARDS["rotating"]
    body = loyalty_object(card)
    assert body["rotatingBarcode"] == {
        "type": "QR_CODE",
        "valuePattern": card.barcode_value + ".0.{totp_value_0}",
        "alternateText": "7Q2K-4M9X",
        "totpDetails": {
            "algorithm": "TOTP_SHA1",
            "periodMillis": "30000",
            "parameters": [{"key": "0102030405060708090a0b0c0d0e0f1011121314", "valueLength": 6}],
        },
    }
    assert body["passConstraints"] == {"screenshotEligibility": "INELIGIBLE"}
    # No static code beside it: a code that never changes is what a screenshot would replay.
    assert "barcode" not in body
    assert loyalty_object(CARDS["rotating-8-digits"])["rotatingBarcode"]["alternateText"] == "Show me"


def test_totp_key_is_base16_as_google_documents_it() -> None:
    # Google's rotating-barcode example uses the RFC 6238 seed "12345678901234567890" and writes its key as
    # "3132333435363738393031323334353637383930": Base16, as the discovery document says.
    card = make_card(rotating=rotating(secret=b"12345678901234567890"))
    parameters = loyalty_object(card)["rotatingBarcode"]["totpDetails"]["parameters"]
    assert parameters == [{"key": "3132333435363738393031323334353637383930", "valueLength": 6}]


@pytest.mark.parametrize(
    ("unix_time", "expected"),
    # RFC 6238 appendix B, SHA-1, 8 digits, 30-second steps.
    [(59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"), (1234567890, "89005924"),
     (2000000000, "69279037"), (20000000000, "65353130")],
)
def test_totp_matches_rfc_6238(unix_time: int, expected: str) -> None:
    assert totp(b"12345678901234567890", unix_time, 30, digits=8) == expected


def test_the_till_and_google_compute_the_same_code() -> None:
    """What Google would put in the QR (from the object's hex key, period and length, by `cryptography`'s own
    TOTP) is what the till recomputes with `totp` from the card's secret."""
    for card in (CARDS["rotating"], CARDS["rotating-8-digits"]):
        details = loyalty_object(card)["rotatingBarcode"]["totpDetails"]
        key = bytes.fromhex(details["parameters"][0]["key"])
        length = details["parameters"][0]["valueLength"]
        step = int(details["periodMillis"]) // 1000
        googles = TOTP(key, length, hashes.SHA1(), step, enforce_key_length=False)
        assert card.rotating is not None
        for moment in (START, START + step - 0.5, START + step, START + 12_345.6):
            assert totp(card.rotating.secret, moment, step, length) == googles.generate(moment).decode()
    assert totp(SECRET, START, 30) != totp(SECRET, START + 30, 30)


@pytest.mark.parametrize(
    ("secret", "when", "period", "digits"),
    [(b"", 0, 30, 6), (SECRET, 0, 0, 6), (SECRET, 0, 30, 11), (SECRET, -1, 30, 6), (SECRET, 0, True, 6)],
)
def test_totp_refuses_nonsense(secret: bytes, when: float, period: int, digits: int) -> None:
    with pytest.raises(ValueError):
        totp(secret, when, period, digits)


PROGRAM_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"issuer_id": "33880x"}, "id"),
    ({"issuer_id": ""}, "id"),
    ({"issuer_id": "9" * 20}, "id"),
    ({"issuer_id": 3388000000012345678}, "id"),
    ({"class_suffix": "coffee club"}, "id"),
    ({"class_suffix": "coffee/club"}, "id"),
    ({"class_suffix": ""}, "id"),
    ({"issuer_name": " "}, "issuerName"),
    ({"program_name": ""}, "programName"),
    ({"program_name": "\ud800"}, "programName"),
    ({"logo_url": "http://loyalty.example/logo.png"}, "programLogo.sourceUri.uri"),
    ({"logo_url": "logo.png"}, "programLogo.sourceUri.uri"),
    ({"background_color": "red"}, "hexBackgroundColor"),
    ({"background_color": "#12345"}, "hexBackgroundColor"),
    ({"review_status": "APPROVED"}, "reviewStatus"),
    ({"review_status": "underReview"}, "reviewStatus"),
    ({"locations": ((91.0, 0.0),)}, "merchantLocations[0].latitude"),
    ({"locations": ((0.0, 10.0), (0.0, float("nan")))}, "merchantLocations[1].longitude"),
    ({"locations": ((True, 0.0),)}, "merchantLocations[0].latitude"),
    ({"locations": ((1.0, 2.0),) * 11}, "merchantLocations"),
    ({"locations": [(1.0, 2.0)]}, "merchantLocations"),
    ({"homepage_url": "ftp://loyalty.example"}, "homepageUri.uri"),
    ({"account_name_label": ""}, "accountNameLabel"),
    ({"language": "english please"}, "programLogo.contentDescription.defaultValue.language"),
]


@pytest.mark.parametrize(("changes", "field"), PROGRAM_ERRORS)
def test_class_errors_name_the_google_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(GooglePassError) as raised:
        loyalty_class(make_program(**changes))
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


CARD_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"program": make_program(issuer_id="abc")}, "classId"),
    ({"program": make_program(class_suffix="a b")}, "classId"),
    ({"object_suffix": "card#1"}, "id"),
    ({"object_suffix": "carte-é"}, "id"),
    ({"points": -1}, "loyaltyPoints.balance.int"),
    ({"points": True}, "loyaltyPoints.balance.int"),
    ({"points": 12.5}, "loyaltyPoints.balance.int"),
    ({"points": 2**31}, "loyaltyPoints.balance.int"),
    ({"program": make_program(points_label="")}, "loyaltyPoints.label"),
    ({"account_name": ""}, "accountName"),
    ({"account_name": None}, "accountName"),
    ({"account_id": "  "}, "accountId"),
    ({"barcode_value": ""}, "barcode.value"),
    ({"barcode_alt_text": ""}, "barcode.alternateText"),
    ({"tier": ""}, "secondaryLoyaltyPoints.balance.string"),
    ({"tier": "Gold", "program": make_program(tier_label="")}, "secondaryLoyaltyPoints.label"),
    ({"offers": (Offer(""),)}, "textModulesData[0].header"),
    ({"offers": (Offer("Free coffee"), Offer("Cake", 5))}, "textModulesData[1].body"),  # type: ignore[arg-type]
    ({"offers": [Offer("Free coffee")]}, "textModulesData"),
    ({"offers": (Offer("x"),) * 11}, "textModulesData"),
    ({"card_page_url": "javascript:alert(1)"}, "linksModuleData.uris[0].uri"),
    ({"active": "yes"}, "state"),
    ({"rotating": rotating(secret=b"short")}, "rotatingBarcode.totpDetails.parameters[0].key"),
    ({"rotating": rotating(secret="0102" * 10)}, "rotatingBarcode.totpDetails.parameters[0].key"),
    ({"rotating": rotating(period_millis=0)}, "rotatingBarcode.totpDetails.periodMillis"),
    ({"rotating": rotating(period_millis=1500)}, "rotatingBarcode.totpDetails.periodMillis"),
    ({"rotating": rotating(period_millis="30000")}, "rotatingBarcode.totpDetails.periodMillis"),
    ({"rotating": rotating(value_length=4)}, "rotatingBarcode.totpDetails.parameters[0].valueLength"),
    ({"rotating": rotating(value_pattern="LC1A7Q2K")}, "rotatingBarcode.valuePattern"),
    ({"rotating": rotating(value_pattern="{totp_value_0}")}, "rotatingBarcode.valuePattern"),
    ({"rotating": rotating(value_pattern=make_card().barcode_value + ".{totp_value_1}.{totp_value_0}")},
     "rotatingBarcode.valuePattern"),
    ({"rotating": "yes"}, "rotatingBarcode"),
]


@pytest.mark.parametrize(("changes", "field"), CARD_ERRORS)
def test_object_errors_name_the_google_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(GooglePassError) as raised:
        loyalty_object(make_card(**changes))
    assert raised.value.field == field
    assert isinstance(raised.value, ValueError)


# -- the save JWT and link ----------------------------------------------------------------------------------


def test_save_jwt_verifies_and_carries_class_and_object(account: ServiceAccount) -> None:
    card = CARDS["everything"]
    issued_at = int(time.time())
    token = save_jwt(account, ORIGINS, objects=[loyalty_object(card)], classes=[loyalty_class(card.program)],
                     issued_at=issued_at)
    claims = decode_save_jwt(token, account)
    assert claims["iss"] == account.client_email
    assert claims["aud"] == "google"
    assert claims["iat"] == issued_at
    assert claims["origins"] == list(ORIGINS)
    assert claims["payload"] == {"loyaltyClasses": [loyalty_class(card.program)],
                                 "loyaltyObjects": [loyalty_object(card)]}
    assert_valid_payload(claims["payload"])


def test_save_jwt_without_classes_has_no_loyalty_classes(account: ServiceAccount) -> None:
    claims = decode_save_jwt(save_jwt(account, [], objects=[loyalty_object(CARDS["tier"])]), account)
    assert list(claims["payload"]) == ["loyaltyObjects"]
    assert claims["origins"] == []
    assert abs(claims["iat"] - time.time()) < 60
    assert_valid_payload(claims["payload"])


def test_save_jwt_carries_non_ascii_text_intact(account: ServiceAccount) -> None:
    card = make_card(account_name="Zoë Łukasiewicz-Müller", tier="Złoty", offers=(Offer("Kawa gratis ☕"),))
    claims = decode_save_jwt(save_jwt(account, ORIGINS, objects=[loyalty_object(card)]), account)
    assert claims["payload"]["loyaltyObjects"] == [loyalty_object(card)]
    assert claims["payload"]["loyaltyObjects"][0]["accountName"] == "Zoë Łukasiewicz-Müller"


def test_save_jwt_signed_by_another_key_does_not_verify(account: ServiceAccount) -> None:
    other = ServiceAccount.from_json(make_dev_service_account(account.client_email))
    other = dataclasses.replace(other, private_key_id=account.private_key_id)
    token = save_jwt(other, ORIGINS, objects=[loyalty_object(CARDS["plain"])])
    with pytest.raises(jwt.InvalidSignatureError):
        decode_save_jwt(token, account)


@pytest.mark.parametrize(
    "body",
    [loyalty_object(CARDS["rotating"]),
     {"id": f"{ISSUER}.x", "classId": f"{ISSUER}.y", "rotatingBarcode": {"valuePattern": "{totp_value_0}"}},
     {"id": f"{ISSUER}.x", "classId": f"{ISSUER}.y", "linked": [{"totpDetails": {}}]}],
)
def test_save_jwt_refuses_objects_carrying_totp_secrets(account: ServiceAccount, body: dict[str, Any]) -> None:
    with pytest.raises(GooglePassError) as raised:
        save_jwt(account, ORIGINS, objects=[loyalty_object(CARDS["plain"]), body])
    assert raised.value.field.startswith("payload.loyaltyObjects[1].")
    assert raised.value.field.endswith(("rotatingBarcode", "totpDetails"))


@pytest.mark.parametrize(
    ("origins", "objects", "classes", "field"),
    [
        ("https://loyalty.example", None, (), "origins"),
        (["https://loyalty.example/wallet"], None, (), "origins[0]"),
        (["https://loyalty.example", "loyalty.example"], None, (), "origins[1]"),
        (ORIGINS, [], (), "payload.loyaltyObjects"),
        (ORIGINS, [{"id": "1.a"}], (), "payload.loyaltyObjects[0].classId"),
        (ORIGINS, [{"id": "x.a", "classId": "1.b"}], (), "payload.loyaltyObjects[0].id"),
        (ORIGINS, None, [{"programName": "x"}], "payload.loyaltyClasses[0].id"),
    ],
)
def test_save_jwt_refusals_name_the_claim(
    account: ServiceAccount, origins: Any, objects: Any, classes: Any, field: str
) -> None:
    if objects is None:
        objects = [loyalty_object(CARDS["plain"])]
    with pytest.raises(GooglePassError) as raised:
        save_jwt(account, origins, objects=objects, classes=classes)
    assert raised.value.field == field


def test_save_url_is_the_google_save_link(account: ServiceAccount) -> None:
    token = save_jwt(account, ORIGINS, objects=[{"id": CARDS["plain"].object_id, "classId": make_program().class_id}])
    assert save_url(token) == "https://pay.google.com/gp/v/save/" + token == SAVE_URL_PREFIX + token
    with pytest.raises(GooglePassError):
        save_url("not a jwt")
    assert MAX_SAVE_URL_LENGTH == len(SAVE_URL_PREFIX) + MAX_SAVE_JWT_LENGTH


def jwt_of(url: str) -> str:
    assert url.startswith(SAVE_URL_PREFIX)
    return url[len(SAVE_URL_PREFIX):]


def test_short_card_links_the_whole_object_and_its_class(account: ServiceAccount) -> None:
    card = CARDS["plain"]
    url = save_link(account, ORIGINS, card, class_inserted=False, object_inserted=False, issued_at=int(time.time()))
    assert len(url) <= MAX_SAVE_URL_LENGTH
    payload = decode_save_jwt(jwt_of(url), account)["payload"]
    assert payload == {"loyaltyClasses": [loyalty_class(card.program)], "loyaltyObjects": [loyalty_object(card)]}

    url = save_link(account, ORIGINS, card, class_inserted=True, object_inserted=False)
    assert decode_save_jwt(jwt_of(url), account)["payload"] == {"loyaltyObjects": [loyalty_object(card)]}


def test_long_card_needs_the_object_inserted_and_then_links_a_reference(account: ServiceAccount) -> None:
    card = make_card(offers=LONG_OFFERS, tier="Gold", card_page_url="https://loyalty.example/c/link")
    whole = save_url(save_jwt(account, ORIGINS, objects=[loyalty_object(card)]))
    assert len(whole) > MAX_SAVE_URL_LENGTH  # the premise: this card is too long to link whole

    with pytest.raises(NeedsInsert) as raised:
        save_link(account, ORIGINS, card, class_inserted=False, object_inserted=False)
    assert raised.value.object_body == loyalty_object(card)
    assert raised.value.class_body == loyalty_class(card.program)
    with pytest.raises(NeedsInsert) as raised:
        save_link(account, ORIGINS, card, class_inserted=True, object_inserted=False)
    assert raised.value.class_body is None

    url = save_link(account, ORIGINS, card, class_inserted=True, object_inserted=True)
    assert len(url) <= MAX_SAVE_URL_LENGTH
    payload = decode_save_jwt(jwt_of(url), account)["payload"]
    assert payload == {"loyaltyObjects": [{"id": card.object_id, "classId": card.program.class_id}]}
    assert_valid_payload(payload)


def test_rotating_card_is_always_inserted_first_and_its_secret_never_reaches_a_link(
    account: ServiceAccount,
) -> None:
    card = CARDS["rotating"]
    with pytest.raises(NeedsInsert) as raised:
        save_link(account, ORIGINS, card, class_inserted=True, object_inserted=False)
    assert raised.value.object_body["rotatingBarcode"]["totpDetails"]["parameters"][0]["key"] == SECRET.hex()

    url = save_link(account, ORIGINS, card, class_inserted=True, object_inserted=True)
    claims = decode_save_jwt(jwt_of(url), account)
    assert claims["payload"] == {"loyaltyObjects": [{"id": card.object_id, "classId": card.program.class_id}]}
    assert SECRET.hex() not in json.dumps(claims) and "totp" not in json.dumps(claims)


# -- the service account ------------------------------------------------------------------------------------


def test_dev_key_file_has_googles_shape_and_loads() -> None:
    content = json.loads(make_dev_service_account("issuer@shop-dev.iam.gserviceaccount.com"))
    assert content["type"] == "service_account"
    assert content["project_id"] == "shop-dev"
    assert content["client_email"] == "issuer@shop-dev.iam.gserviceaccount.com"
    assert content["token_uri"] == "https://oauth2.googleapis.com/token"
    assert len(content["private_key_id"]) == 40 and int(content["private_key_id"], 16) >= 0
    assert content["client_id"].isdigit() and len(content["client_id"]) == 21
    assert content["private_key"].startswith("-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, as Google writes it
    key = serialization.load_pem_private_key(content["private_key"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048

    account = ServiceAccount.from_json(json.dumps(content))
    assert account.client_email == content["client_email"]
    assert account.private_key_id == content["private_key_id"]
    assert account.token_uri == content["token_uri"]
    assert account.public_key_pem() == key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert "PRIVATE" not in repr(account) and "private_key=" not in repr(account)
    assert json.loads(make_dev_service_account())["private_key_id"] != content["private_key_id"]


def _key_file(**changes: Any) -> str:
    content = json.loads(make_dev_service_account())
    content.update(changes)
    return json.dumps({key: value for key, value in content.items() if value is not None})


EC_PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


@pytest.mark.parametrize(
    ("make_data", "message"),
    [
        (lambda: b"{not json", "not JSON"),
        (lambda: "[]", "JSON object"),
        (lambda: _key_file(type="authorized_user"), "type"),
        (lambda: _key_file(client_email=None), "client_email"),
        (lambda: _key_file(client_email="nobody"), "client_email"),
        (lambda: _key_file(private_key="-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
         "private_key"),
        (lambda: _key_file(private_key=EC_PEM), "private_key"),
        (lambda: _key_file(private_key_id=""), "private_key_id"),
        (lambda: _key_file(token_uri="oauth2.googleapis.com"), "token_uri"),
    ],
)
def test_unusable_key_files_are_refused_by_name(make_data: Callable[[], str | bytes], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServiceAccount.from_json(make_data())


def test_package_exports_the_google_names() -> None:
    for name in ("LoyaltyCard", "LoyaltyProgram", "RotatingBarcode", "ServiceAccount", "WalletClient",
                 "WalletResult", "GooglePassError", "NeedsInsert", "loyalty_class", "loyalty_object", "save_jwt",
                 "save_link", "save_url", "totp", "make_dev_service_account", "SAVE_URL_PREFIX"):
        assert name in passes.__all__
        assert getattr(passes, name) is not None
    assert passes.Offer is Offer  # one Offer for both wallets


# -- the REST client against LocalWallet --------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def wallet(account: ServiceAccount, clock: FakeClock) -> Iterator[LocalWallet]:
    with LocalWallet(account, clock=clock) as server:
        yield server


@pytest.fixture
def client(account: ServiceAccount, wallet: LocalWallet, clock: FakeClock) -> Iterator[WalletClient]:
    with WalletClient(account, base_url=wallet.base_url, token_url=wallet.token_url, clock=clock,
                      timeout=5) as wallet_client:
        yield wallet_client


def bearer(headers: dict[str, str]) -> str:
    scheme, _, token = headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


def test_insert_patch_get_and_message_send_the_documented_requests(
    account: ServiceAccount, wallet: LocalWallet, client: WalletClient, clock: FakeClock
) -> None:
    card = CARDS["everything"]
    class_body, object_body = loyalty_class(card.program), loyalty_object(card)

    inserted = client.insert_class(class_body)
    assert (inserted.status, inserted.ok, inserted.reason) == (200, True, None)
    assert inserted.body == class_body
    assert client.patch_class(card.program.class_id, {"hexBackgroundColor": "#000000"}).ok
    assert client.insert_object(object_body).ok
    changed = loyalty_object(dataclasses.replace(card, points=1300))
    patched = client.patch_object(card.object_id, changed)
    assert patched.ok and patched.body is not None
    assert patched.body["loyaltyPoints"]["balance"] == {"int": 1300}
    fetched = client.get_object(card.object_id)
    assert fetched.ok and fetched.body == changed
    message = client.add_message(card.object_id, "Double points", "All weekend long", message_id="promo-1",
                                 notify=True)
    assert message.ok and message.body is not None
    assert message.body["resource"]["messages"] == [{"header": "Double points", "body": "All weekend long",
                                                     "messageType": "TEXT_AND_NOTIFY", "id": "promo-1"}]
    assert client.add_message(card.object_id, "Hello", "Welcome").ok

    base = API_ROOT
    assert [(request.method, request.path) for request in wallet.requests] == [
        ("POST", f"{base}/loyaltyClass"),
        ("PATCH", f"{base}/loyaltyClass/{ISSUER}.coffee-club"),
        ("POST", f"{base}/loyaltyObject"),
        ("PATCH", f"{base}/loyaltyObject/{ISSUER}.card-7Q2K4M9X"),
        ("GET", f"{base}/loyaltyObject/{ISSUER}.card-7Q2K4M9X"),
        ("POST", f"{base}/loyaltyObject/{ISSUER}.card-7Q2K4M9X/addMessage"),
        ("POST", f"{base}/loyaltyObject/{ISSUER}.card-7Q2K4M9X/addMessage"),
    ]
    assert wallet.requests[0].json == class_body
    assert wallet.requests[2].json == object_body
    assert wallet.requests[6].json == {"message": {"header": "Hello", "body": "Welcome", "messageType": "TEXT"}}
    for request in wallet.requests:
        if request.json is not None:
            kind = "AddMessageRequest" if request.path.endswith("addMessage") else (
                "LoyaltyClass" if "/loyaltyClass" in request.path else "LoyaltyObject")
            assert_valid(kind, request.json)

    # One token for all of it, obtained with a proper JWT bearer assertion (the server verified it with PyJWT).
    assert wallet.token_requests == 1
    assert {bearer(request.headers) for request in wallet.requests} == set(wallet.issued_tokens)
    [claims] = wallet.token_claims
    assert claims["iss"] == account.client_email
    assert claims["aud"] == wallet.token_url
    assert claims["scope"] == WALLET_SCOPE
    assert (claims["iat"], claims["exp"]) == (int(clock.now), int(clock.now) + 3600)


def test_rotating_object_is_inserted_over_rest_with_its_secret(wallet: LocalWallet, client: WalletClient) -> None:
    card = CARDS["rotating"]
    assert client.insert_class(loyalty_class(card.program)).ok
    assert client.insert_object(loyalty_object(card)).ok
    stored = wallet.objects[card.object_id]
    assert stored["rotatingBarcode"]["totpDetails"]["parameters"][0]["key"] == SECRET.hex()
    assert stored["passConstraints"]["screenshotEligibility"] == "INELIGIBLE"


def test_access_token_is_cached_until_a_minute_before_it_expires(
    wallet: LocalWallet, client: WalletClient, clock: FakeClock
) -> None:
    assert client.insert_class(loyalty_class(make_program())).status == 200
    clock.advance(3599 - 60 - 1)
    assert client.get_class(make_program().class_id).ok
    assert wallet.token_requests == 1
    clock.advance(1)
    assert client.get_class(make_program().class_id).ok
    assert wallet.token_requests == 2
    first, second, third = (bearer(request.headers) for request in wallet.requests)
    assert first == second != third
    assert wallet.token_claims[1]["iat"] == int(clock.now)


def test_a_401_gets_a_new_token_and_one_retry(wallet: LocalWallet, client: WalletClient) -> None:
    assert client.insert_class(loyalty_class(make_program())).ok
    wallet.revoke_tokens()
    result = client.get_class(make_program().class_id)
    assert result.ok
    assert wallet.token_requests == 2
    assert [request.method for request in wallet.requests] == ["POST", "GET", "GET"]
    refused, retried = wallet.requests[1:]
    assert bearer(refused.headers) != bearer(retried.headers)


def test_a_401_that_persists_is_returned_after_one_retry(wallet: LocalWallet, client: WalletClient) -> None:
    wallet.fail_next("loyaltyClass", 401, 401, 401)
    result = client.get_class(make_program().class_id)
    assert (result.status, result.ok, result.retryable) == (401, False, False)
    assert result.reason == "scripted failure"
    assert len(wallet.requests) == 2 and wallet.token_requests == 2


def test_missing_and_existing_resources_are_surfaced(wallet: LocalWallet, client: WalletClient) -> None:
    card = CARDS["plain"]
    missing = client.patch_object(card.object_id, loyalty_object(card))
    assert (missing.status, missing.not_found, missing.retryable) == (404, True, False)
    assert missing.reason is not None and "not found" in missing.reason
    assert client.insert_object(loyalty_object(card)).not_found  # its class does not exist yet
    assert client.insert_class(loyalty_class(card.program)).ok
    again = client.insert_class(loyalty_class(card.program))
    assert (again.status, again.conflict, again.ok) == (409, True, False)
    assert again.body is not None and again.body["error"]["status"] == "ALREADY_EXISTS"


def test_a_body_google_would_refuse_comes_back_as_400(wallet: LocalWallet, client: WalletClient) -> None:
    assert client.insert_class(loyalty_class(make_program())).ok
    result = client.patch_class(make_program().class_id, {"programColour": "#fff"})
    assert (result.status, result.ok, result.retryable) == (400, False, False)
    assert result.reason is not None and "programColour: unknown field" in result.reason


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_trouble_and_throttling_are_retryable(wallet: LocalWallet, client: WalletClient, status: int) -> None:
    wallet.fail_next("loyaltyObject", status)
    result = client.get_object(CARDS["plain"].object_id)
    assert (result.status, result.retryable, result.ok) == (status, True, False)
    assert client.get_object(CARDS["plain"].object_id).not_found  # the next call goes through


def test_a_dropped_connection_is_status_zero(wallet: LocalWallet, client: WalletClient) -> None:
    wallet.fail_next("loyaltyObject", 0)
    result = client.get_object(CARDS["plain"].object_id)
    assert (result.status, result.body, result.retryable) == (0, None, True)
    assert result.reason


def test_refused_connection_is_status_zero(account: ServiceAccount) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    with WalletClient(account, base_url=f"http://127.0.0.1:{port}/walletobjects/v1",
                      token_url=f"http://127.0.0.1:{port}/token", timeout=2) as client:
        result = client.insert_class(loyalty_class(make_program()))
    assert (result.status, result.body, result.retryable) == (0, None, True)
    assert result.reason


def test_silent_server_times_out_as_status_zero(account: ServiceAccount) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # accepts connections (in the kernel) and never answers
        port = listener.getsockname()[1]
        with WalletClient(account, base_url=f"http://127.0.0.1:{port}/walletobjects/v1",
                          token_url=f"http://127.0.0.1:{port}/token", timeout=0.3) as client:
            result = client.get_object(CARDS["plain"].object_id)
    assert (result.status, result.retryable) == (0, True)


def test_a_refused_assertion_is_the_token_endpoints_answer(account: ServiceAccount, wallet: LocalWallet) -> None:
    impostor = ServiceAccount.from_json(make_dev_service_account(account.client_email))
    impostor = dataclasses.replace(impostor, private_key_id=account.private_key_id)
    with WalletClient(impostor, base_url=wallet.base_url, token_url=wallet.token_url) as client:
        result = client.insert_class(loyalty_class(make_program()))
    assert (result.status, result.ok, result.retryable) == (400, False, False)
    assert result.reason is not None and result.reason.startswith("token request refused: invalid_grant")
    assert wallet.requests == [] and wallet.token_requests == 1


def test_token_endpoint_trouble_is_retryable(wallet: LocalWallet, client: WalletClient) -> None:
    wallet.fail_next("/token", 503)
    result = client.get_class(make_program().class_id)
    assert (result.status, result.retryable) == (503, True)
    assert wallet.requests == []


def test_threads_share_one_token(wallet: LocalWallet, client: WalletClient) -> None:
    results: list[WalletResult] = []
    threads = [threading.Thread(target=lambda: results.append(client.get_object(CARDS["plain"].object_id)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [result.status for result in results] == [404] * 8
    assert wallet.token_requests == 1


@pytest.mark.parametrize("resource_id", ["../admin", f"{ISSUER}.a/b", "issuer.card", f"{ISSUER}.a?x=1",
                                         f"{ISSUER}.a b", f"{ISSUER}.", "", f"{ISSUER}.é"])
def test_resource_ids_are_checked_before_they_reach_a_url(
    wallet: LocalWallet, client: WalletClient, resource_id: str
) -> None:
    calls: list[Callable[[], WalletResult]] = [lambda: client.get_object(resource_id),
                                               lambda: client.patch_class(resource_id, {}),
                                               lambda: client.add_message(resource_id, "a", "b")]
    for call in calls:
        with pytest.raises(GooglePassError) as raised:
            call()
        assert raised.value.field == "resourceId"
    assert wallet.requests == [] and wallet.token_requests == 0


def test_client_refuses_plain_http_beyond_this_machine(account: ServiceAccount) -> None:
    with pytest.raises(ValueError, match="base_url"):
        WalletClient(account, base_url="http://walletobjects.googleapis.com/walletobjects/v1")
    with pytest.raises(ValueError, match="token_url"):
        WalletClient(account, token_url="http://oauth2.example/token")


@pytest.mark.parametrize(
    ("status", "ok", "not_found", "conflict", "retryable"),
    [(200, True, False, False, False), (204, True, False, False, False), (0, False, False, False, True),
     (400, False, False, False, False), (404, False, True, False, False), (409, False, False, True, False),
     (429, False, False, False, True), (500, False, False, False, True), (503, False, False, False, True)],
)
def test_wallet_result_outcomes(status: int, ok: bool, not_found: bool, conflict: bool, retryable: bool) -> None:
    result = WalletResult(status, None, None)
    assert (result.ok, result.not_found, result.conflict, result.retryable) == (ok, not_found, conflict, retryable)


def test_local_wallet_leaves_no_threads_behind(account: ServiceAccount) -> None:
    before = set(threading.enumerate())
    with LocalWallet(account) as server, WalletClient(account, base_url=server.base_url,
                                                      token_url=server.token_url) as client:
        assert client.get_object(CARDS["plain"].object_id).not_found
    # Closed in the other order too: the server wakes the connection threads the client keeps open.
    server = LocalWallet(account)
    client = WalletClient(account, base_url=server.base_url, token_url=server.token_url)
    assert client.get_object(CARDS["plain"].object_id).not_found
    server.close()
    client.close()
    assert set(threading.enumerate()) <= before
