"""Apple Wallet .pkpass files, checked the way iOS and a stranger would check them.

The package is opened with zipfile, its manifest recomputed with hashlib, its signature verified by the `openssl`
command against the development root CA, its pass.json held against tables of the keys, types and values Apple's
PassKit Package Format Reference documents, and its images decoded by Pillow and measured. `passes` itself only
builds; nothing here trusts it to check its own output.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import re
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import NameOID
from PIL import Image

import passes
import passes._images
from passes import (
    PKPASS_MIME_TYPE,
    CardPass,
    DevCertificates,
    Offer,
    PassCertificates,
    PassDescriptionError,
    build_pkpass,
    make_dev_certificates,
    pass_json,
    validate,
)

PASS_TYPE = "pass.com.example.beanclub"
TEAM = "ABCDE12345"


# --- Apple's documented pass.json vocabulary (PassKit Package Format Reference / WalletPasses "Pass") ----------

def _string(value: object) -> bool:
    return isinstance(value, str)


def _boolean(value: object) -> bool:
    return isinstance(value, bool)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _dictionary(value: object) -> bool:
    return isinstance(value, dict)


def _array(value: object) -> bool:
    return isinstance(value, list)


def _colour(value: object) -> bool:
    match = re.fullmatch(r"rgb\((\d{1,3}), (\d{1,3}), (\d{1,3})\)", value) if isinstance(value, str) else None
    return match is not None and all(int(channel) <= 255 for channel in match.groups())


PASS_STYLES = ("boardingPass", "coupon", "eventTicket", "generic", "storeCard")
PASS_KEYS: dict[str, Callable[[object], bool]] = {
    "formatVersion": lambda value: value == 1,
    "passTypeIdentifier": _string,
    "serialNumber": _string,
    "teamIdentifier": _string,
    "organizationName": _string,
    "description": _string,
    "logoText": _string,
    "foregroundColor": _colour,
    "backgroundColor": _colour,
    "labelColor": _colour,
    "barcode": _dictionary,
    "barcodes": _array,
    "webServiceURL": _string,
    "authenticationToken": _string,
    "voided": _boolean,
    "expirationDate": _string,
    "relevantDate": _string,
    "relevantDates": _array,
    "locations": _array,
    "maxDistance": _number,
    "beacons": _array,
    "associatedStoreIdentifiers": _array,
    "appLaunchURL": _string,
    "userInfo": _dictionary,
    "groupingIdentifier": _string,
    "sharingProhibited": _boolean,
    "suppressStripShine": _boolean,
    "nfc": _dictionary,
    "semantics": _dictionary,
    "preferredStyleSchemes": _array,
    **{style: _dictionary for style in PASS_STYLES},
}
REQUIRED_PASS_KEYS = {"formatVersion", "passTypeIdentifier", "serialNumber", "teamIdentifier", "organizationName",
                      "description"}
STRUCTURE_KEYS: dict[str, Callable[[object], bool]] = {
    "headerFields": _array, "primaryFields": _array, "secondaryFields": _array, "auxiliaryFields": _array,
    "backFields": _array, "transitType": _string, "additionalInfoFields": _array,
}
TEXT_ALIGNMENTS = {"PKTextAlignmentLeft", "PKTextAlignmentCenter", "PKTextAlignmentRight", "PKTextAlignmentNatural"}
NUMBER_STYLES = {"PKNumberStyleDecimal", "PKNumberStylePercent", "PKNumberStyleScientific", "PKNumberStyleSpellOut"}
DATE_STYLES = {"PKDateStyleNone", "PKDateStyleShort", "PKDateStyleMedium", "PKDateStyleLong", "PKDateStyleFull"}
DATA_DETECTORS = {"PKDataDetectorTypePhoneNumber", "PKDataDetectorTypeLink", "PKDataDetectorTypeAddress",
                  "PKDataDetectorTypeCalendarEvent"}
FIELD_KEYS: dict[str, Callable[[object], bool]] = {
    "key": _string,
    "value": lambda value: _string(value) or _number(value),
    "label": _string,
    "changeMessage": lambda value: _string(value) and "%@" in str(value),
    "attributedValue": lambda value: _string(value) or _number(value),
    "textAlignment": lambda value: value in TEXT_ALIGNMENTS,
    "dataDetectorTypes": lambda value: isinstance(value, list) and set(value) <= DATA_DETECTORS,
    "currencyCode": _string,
    "numberStyle": lambda value: value in NUMBER_STYLES,
    "dateStyle": lambda value: value in DATE_STYLES,
    "timeStyle": lambda value: value in DATE_STYLES,
    "ignoresTimeZone": _boolean,
    "isRelative": _boolean,
    "semantics": _dictionary,
    "row": _integer,
}
BARCODE_FORMATS = {"PKBarcodeFormatQR", "PKBarcodeFormatPDF417", "PKBarcodeFormatAztec", "PKBarcodeFormatCode128"}
BARCODE_KEYS: dict[str, Callable[[object], bool]] = {
    "format": lambda value: value in BARCODE_FORMATS,
    "message": _string,
    "messageEncoding": _string,
    "altText": _string,
}
# A store card shows at most 3 header fields, 1 primary field and 4 secondary and auxiliary fields together.
STORE_CARD_LIMITS = {"headerFields": 3, "primaryFields": 1}
STORE_CARD_SECONDARY_AND_AUXILIARY = 4

# Apple's image sizes in points for a store card; @2x and @3x are twice and three times as many pixels.
EXACT_IMAGE_SIZES = {"icon": (29, 29), "strip": (375, 123)}
LOGO_BOX = (160, 50)
SCALES = {"": 1, "@2x": 2, "@3x": 3}


def assert_documented_pass_json(content: dict[str, Any]) -> None:
    """Every key in `content` documented, of its documented type and value; required keys present."""
    assert REQUIRED_PASS_KEYS <= content.keys(), REQUIRED_PASS_KEYS - content.keys()
    for key, value in content.items():
        assert key in PASS_KEYS, f"undocumented top-level key {key!r}"
        assert PASS_KEYS[key](value), f"{key}={value!r} is not of the documented type"
    assert [style for style in PASS_STYLES if style in content] == ["storeCard"]
    assert ("webServiceURL" in content) == ("authenticationToken" in content)
    barcodes = content["barcodes"] + ([content["barcode"]] if "barcode" in content else [])
    for barcode in barcodes:
        assert {"format", "message", "messageEncoding"} <= barcode.keys()
        for key, value in barcode.items():
            assert key in BARCODE_KEYS and BARCODE_KEYS[key](value), f"barcode {key}={value!r}"
        barcode["message"].encode(barcode["messageEncoding"])
    if "barcode" in content:
        assert content["barcode"]["format"] != "PKBarcodeFormatCode128"  # the legacy key predates Code 128

    structure = content["storeCard"]
    seen_keys: list[str] = []
    for group, fields in structure.items():
        assert group in STRUCTURE_KEYS and STRUCTURE_KEYS[group](fields), f"storeCard.{group}"
        if group == "transitType":
            continue
        assert len(fields) <= STORE_CARD_LIMITS.get(group, len(fields))
        for field in fields:
            assert {"key", "value"} <= field.keys(), field
            for key, value in field.items():
                assert key in FIELD_KEYS, f"undocumented field key {key!r} in {group}"
                assert FIELD_KEYS[key](value), f"{group}[{field['key']}].{key}={value!r}"
            if group in ("primaryFields", "backFields"):
                assert "textAlignment" not in field, "textAlignment is not allowed on primary or back fields"
            if "numberStyle" in field or "currencyCode" in field:
                assert _number(field["value"]), "number styles apply to numeric values"
            if "attributedValue" in field:
                tags = re.findall(r"<[^>]*>", str(field["attributedValue"]))
                assert all(re.fullmatch(r'<a href="[^"<>]*">|</a>', tag) for tag in tags), tags
            seen_keys.append(field["key"])
    assert len(seen_keys) == len(set(seen_keys)), f"field keys must be unique across the pass: {seen_keys}"
    assert (len(structure.get("secondaryFields", [])) + len(structure.get("auxiliaryFields", []))
            <= STORE_CARD_SECONDARY_AND_AUXILIARY)


# --- fixtures and helpers ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dev() -> DevCertificates:
    return make_dev_certificates(PASS_TYPE, TEAM, "Bean Club Coffee Ltd")


@pytest.fixture(scope="module")
def certificates(dev: DevCertificates) -> PassCertificates:
    return dev.pass_certificates()


@pytest.fixture(scope="module")
def openssl() -> str:
    path = shutil.which("openssl")
    assert path is not None, "the openssl command is needed to verify pass signatures independently"
    return path


def png(size: tuple[int, int], colour: tuple[int, int, int, int] = (200, 30, 30, 255)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def make_card(**changes: Any) -> CardPass:
    card = CardPass(
        pass_type_identifier=PASS_TYPE,
        team_identifier=TEAM,
        serial_number="K7Q2M4XW9PA3B",
        organization_name="Bean Club Coffee Ltd",
        program_name="Bean Club",
        holder_name="Ada Lovelace",
        points=1240,
        barcode_message="AEAQGAZAMFRWIZLGM5UGS2LKNNWG23TPOBYXE43UOV3HO6DZPIYTEMZUGU3DOOBZGA2TKNRXHA4TAMJSGM2DKNRX"
                        "HA4TAMJSGM2DKNRXHA4TAMJSGM2DKNRX",
        barcode_alt_text="K7Q2-M4XW",
        card_page_url="https://loyalty.example.com/card/2f1c9a?x=1&y=2",
    )
    return dataclasses.replace(card, **changes)


FULL_CARD = make_card(
    logo_png=png((300, 90)), tier="Gold", offers=(Offer("Free coffee", "After ten stamps"), Offer("10% off")),
    terms="One card per person. Points expire after a year without a visit.",
    web_service_url="https://loyalty.example.com/wallet", authentication_token="t" * 32,
    background_color="#F5E6C8", foreground_color="#3b2a1a", label_color="#7a5c3e",
)
CARDS = {
    "minimal": make_card(),
    "full": FULL_CARD,
    "voided": dataclasses.replace(FULL_CARD, voided=True),
    "development-http": make_card(web_service_url="http://192.168.1.20:5000/wallet", authentication_token="d" * 20,
                                  development=True),
    "non-ascii": make_card(holder_name="Zoë Ångström", program_name="Café Crème", tier="Or"),
}


def unpack(pkpass: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(pkpass)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def manifest_problems(files: dict[str, bytes]) -> list[str]:
    """Names whose SHA-1 does not match manifest.json, and files missing from it or listed but absent."""
    manifest = json.loads(files["manifest.json"])
    payload = {name for name in files if name not in ("manifest.json", "signature")}
    problems = sorted(payload ^ manifest.keys())
    problems += sorted(name for name in payload & manifest.keys()
                       if hashlib.sha1(files[name]).hexdigest() != manifest[name])
    return problems


def write_out(files: dict[str, bytes], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def openssl_verify(openssl: str, directory: Path, ca_pem: bytes) -> subprocess.CompletedProcess[str]:
    ca_file = directory / "trusted-ca.pem"
    ca_file.write_bytes(ca_pem)
    return subprocess.run(
        [openssl, "smime", "-verify", "-inform", "DER", "-binary", "-content", str(directory / "manifest.json"),
         "-purpose", "any", "-CAfile", str(ca_file), "-in", str(directory / "signature"), "-out", "/dev/null"],
        capture_output=True, text=True, timeout=30,
    )


# --- the signed package --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CARDS)
def test_every_pass_verifies_with_openssl(name: str, certificates: PassCertificates, dev: DevCertificates,
                                          openssl: str, tmp_path: Path) -> None:
    files = unpack(build_pkpass(CARDS[name], certificates))
    result = openssl_verify(openssl, write_out(files, tmp_path), dev.ca_cert_pem)
    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr


def test_signature_carries_wwdr_signer_and_signing_time(certificates: PassCertificates, openssl: str,
                                                        tmp_path: Path) -> None:
    files = unpack(build_pkpass(FULL_CARD, certificates))
    carried = pkcs7.load_der_pkcs7_certificates(files["signature"])
    assert set(carried) == {certificates.signer_cert, certificates.wwdr_cert}

    (tmp_path / "signature").write_bytes(files["signature"])
    printed = subprocess.run(
        [openssl, "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(tmp_path / "signature")],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    assert "signingTime" in printed
    assert "sha256" in printed
    assert "eContent: <ABSENT>" in printed  # detached: the manifest travels beside the signature, not in it


@pytest.mark.parametrize("name", CARDS)
def test_manifest_lists_every_file_with_its_sha1(name: str, certificates: PassCertificates) -> None:
    files = unpack(build_pkpass(CARDS[name], certificates))
    assert manifest_problems(files) == []
    assert {"pass.json", "manifest.json", "signature"} <= files.keys()
    assert json.loads(files["manifest.json"]).keys() == files.keys() - {"manifest.json", "signature"}


@pytest.mark.parametrize("name", CARDS)
def test_pass_json_uses_only_documented_keys_and_types(name: str, certificates: PassCertificates) -> None:
    card = CARDS[name]
    files = unpack(build_pkpass(card, certificates))
    content = json.loads(files["pass.json"].decode("utf-8"))
    assert_documented_pass_json(content)
    assert content == pass_json(card)
    assert (content["passTypeIdentifier"], content["teamIdentifier"]) == (PASS_TYPE, TEAM)
    assert content["serialNumber"] == card.serial_number
    assert content["barcodes"][0]["message"] == card.barcode_message
    assert content.get("voided", False) is card.voided


def test_pass_json_content_of_a_full_card() -> None:
    content = pass_json(FULL_CARD)
    assert content["backgroundColor"] == "rgb(245, 230, 200)"
    assert content["foregroundColor"] == "rgb(59, 42, 26)"
    assert content["description"] == "Bean Club loyalty card"
    assert content["logoText"] == "Bean Club"
    assert content["webServiceURL"] == "https://loyalty.example.com/wallet"
    assert content["authenticationToken"] == "t" * 32
    fields = {field["key"]: field for group in content["storeCard"].values() for field in group}
    points = fields["points"]
    # The lock screen says "You now have 1,240 points": a number, decimal style, %@ replaced by the new value.
    assert (points["value"], points["numberStyle"]) == (1240, "PKNumberStyleDecimal")
    assert points["changeMessage"].replace("%@", "1,240") == "You now have 1,240 points"
    assert fields["tier"]["value"] == "Gold" and "%@" in fields["tier"]["changeMessage"]
    assert fields["holder"]["value"] == "Ada Lovelace"
    back = {field["key"]: field for field in content["storeCard"]["backFields"]}
    assert back["card-page"]["attributedValue"] == \
        '<a href="https://loyalty.example.com/card/2f1c9a?x=1&amp;y=2">Open your card</a>'
    assert back["terms"]["value"].startswith("One card per person")
    assert [back["offer-1"]["value"], back["offer-2"]["value"]] == ["After ten stamps", "10% off"]


def test_a_card_without_tier_or_web_service_leaves_them_out() -> None:
    content = pass_json(make_card(description="Stamps at Bean Club"))
    assert "webServiceURL" not in content and "authenticationToken" not in content and "voided" not in content
    keys = {field["key"] for group in content["storeCard"].values() for field in group}
    assert "tier" not in keys and "offer" not in keys
    assert content["description"] == "Stamps at Bean Club"


def test_the_package_is_a_plain_zip_served_with_the_pkpass_type(certificates: PassCertificates) -> None:
    pkpass = build_pkpass(FULL_CARD, certificates)
    with zipfile.ZipFile(io.BytesIO(pkpass)) as archive:
        infos = archive.infolist()
    assert all(not info.is_dir() and "/" not in info.filename for info in infos)
    assert all(info.compress_type == zipfile.ZIP_STORED for info in infos if info.filename.endswith(".png"))
    assert PKPASS_MIME_TYPE == "application/vnd.apple.pkpass"
    assert passes.PKPASS_MIME_TYPE == PKPASS_MIME_TYPE


# --- tampering ------------------------------------------------------------------------------------------------------

def test_a_changed_pass_json_no_longer_matches_the_manifest(certificates: PassCertificates) -> None:
    files = unpack(build_pkpass(make_card(), certificates))
    files["pass.json"] = files["pass.json"].replace(b'"value":1240', b'"value":9240')
    assert manifest_problems(files) == ["pass.json"]


def test_an_added_or_missing_file_is_caught(certificates: PassCertificates) -> None:
    files = unpack(build_pkpass(make_card(), certificates))
    assert manifest_problems({**files, "thumbnail.png": png((90, 90))}) == ["thumbnail.png"]
    assert manifest_problems({name: data for name, data in files.items() if name != "strip@2x.png"}) == \
        ["strip@2x.png"]


def test_a_changed_manifest_fails_openssl(certificates: PassCertificates, dev: DevCertificates, openssl: str,
                                          tmp_path: Path) -> None:
    files = unpack(build_pkpass(make_card(), certificates))
    manifest = bytearray(files["manifest.json"])
    position = manifest.index(b'"pass.json":"') + len(b'"pass.json":"')
    manifest[position] = ord("0") if manifest[position] != ord("0") else ord("1")
    files["manifest.json"] = bytes(manifest)
    result = openssl_verify(openssl, write_out(files, tmp_path), dev.ca_cert_pem)
    assert result.returncode != 0
    assert "Verification successful" not in result.stderr


def test_a_signature_from_another_ca_fails(dev: DevCertificates, openssl: str, tmp_path: Path) -> None:
    stranger = make_dev_certificates(PASS_TYPE, TEAM, "Someone Else")
    files = unpack(build_pkpass(make_card(), stranger.pass_certificates()))
    directory = write_out(files, tmp_path)
    assert openssl_verify(openssl, directory, stranger.ca_cert_pem).returncode == 0  # the pass itself is sound
    result = openssl_verify(openssl, directory, dev.ca_cert_pem)
    assert result.returncode != 0
    assert "Verification successful" not in result.stderr


# --- images ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("logo", [None, png((300, 90)), png((40, 200)), png((16, 16))],
                         ids=["monogram", "wide-logo", "tall-logo", "tiny-logo"])
def test_every_image_has_the_documented_size(logo: bytes | None, certificates: PassCertificates) -> None:
    files = unpack(build_pkpass(make_card(logo_png=logo), certificates))
    images = {name for name in files if name.endswith(".png")}
    assert images == {f"{base}{suffix}.png" for base in ("icon", "logo", "strip") for suffix in SCALES}
    for name in images:
        base, suffix = re.fullmatch(r"(\w+)(@\dx)?\.png", name).groups()  # type: ignore[union-attr]
        scale = SCALES[suffix or ""]
        with Image.open(io.BytesIO(files[name])) as image:
            image.load()
            assert image.format == "PNG"
            width, height = image.size
        if base in EXACT_IMAGE_SIZES:
            assert (width, height) == (EXACT_IMAGE_SIZES[base][0] * scale, EXACT_IMAGE_SIZES[base][1] * scale), name
        else:  # the logo keeps its aspect ratio and fills its box on one side
            box = (LOGO_BOX[0] * scale, LOGO_BOX[1] * scale)
            assert width <= box[0] and height <= box[1], name
            assert width == box[0] or height == box[1], name


def test_the_logo_keeps_its_aspect_ratio(certificates: PassCertificates) -> None:
    files = unpack(build_pkpass(make_card(logo_png=png((300, 90))), certificates))
    with Image.open(io.BytesIO(files["logo@3x.png"])) as image:
        assert image.size == (480, 144)
        assert image.convert("RGBA").getpixel((240, 72)) == (200, 30, 30, 255)


def test_the_strip_is_in_the_background_colour(certificates: PassCertificates) -> None:
    files = unpack(build_pkpass(make_card(background_color="#336699"), certificates))
    with Image.open(io.BytesIO(files["strip@2x.png"])) as image:
        middle = image.convert("RGB").getpixel((375, 123))
    assert isinstance(middle, tuple)
    assert all(abs(got - want) <= 12 for got, want in zip(middle, (0x33, 0x66, 0x99), strict=True)), middle


def test_images_are_rendered_once_per_program(certificates: PassCertificates, monkeypatch: pytest.MonkeyPatch) -> None:
    art = {"logo_png": png((120, 60), (10, 120, 90, 255)), "background_color": "#0a785a"}
    first = unpack(build_pkpass(make_card(**art), certificates))

    def no_rendering(*args: object) -> object:
        raise AssertionError("images were rendered again for the same program")

    monkeypatch.setattr(passes._images, "_png", no_rendering)
    second = unpack(build_pkpass(make_card(**art, serial_number="OTHERMEMBER22", holder_name="Grace Hopper",
                                           points=7, tier="Silver"), certificates))
    assert {name: data for name, data in first.items() if name.endswith(".png")} == \
        {name: data for name, data in second.items() if name.endswith(".png")}
    assert first["pass.json"] != second["pass.json"]


# --- refusals -------------------------------------------------------------------------------------------------------

HTTPS_SERVICE = {"web_service_url": "https://loyalty.example.com/wallet", "authentication_token": "a" * 16}

BAD_DESCRIPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("short token", {**HTTPS_SERVICE, "authentication_token": "a" * 15}, "authenticationToken"),
    ("token with spaces", {**HTTPS_SERVICE, "authentication_token": "a secret token with spaces"},
     "authenticationToken"),
    ("token not a str", {**HTTPS_SERVICE, "authentication_token": 1234567890123456789}, "authenticationToken"),
    ("http outside development", {**HTTPS_SERVICE, "web_service_url": "http://loyalty.example.com/wallet"},
     "webServiceURL"),
    ("ftp even in development", {**HTTPS_SERVICE, "web_service_url": "ftp://example.com/w", "development": True},
     "webServiceURL"),
    ("url without host", {**HTTPS_SERVICE, "web_service_url": "https:///wallet"}, "webServiceURL"),
    ("token without url", {"authentication_token": "a" * 16}, "webServiceURL"),
    ("url without token", {"web_service_url": "https://loyalty.example.com/wallet"}, "authenticationToken"),
    ("points changeMessage without %@", {"points_change_message": "Your points changed"},
     "storeCard.headerFields[points].changeMessage"),
    ("tier changeMessage without %@", {"tier": "Gold", "tier_change_message": "New tier!"},
     "storeCard.secondaryFields[tier].changeMessage"),
    ("short colour", {"background_color": "#fff"}, "backgroundColor"),
    ("rgb colour", {"foreground_color": "rgb(1, 2, 3)"}, "foregroundColor"),
    ("named colour", {"label_color": "red"}, "labelColor"),
    ("colour not a str", {"background_color": 0x1F2937}, "backgroundColor"),
    ("label not a str", {"points_label": 5}, "storeCard.headerFields[points].label"),
    ("empty label", {"points_label": " "}, "storeCard.headerFields[points].label"),
    ("organization not a str", {"organization_name": None}, "organizationName"),
    ("empty pass type", {"pass_type_identifier": ""}, "passTypeIdentifier"),
    ("team not a str", {"team_identifier": b"ABCDE12345"}, "teamIdentifier"),
    ("description not a str", {"description": 3}, "description"),
    ("bool points", {"points": True}, "storeCard.headerFields[points].value"),
    ("float points", {"points": 12.5}, "storeCard.headerFields[points].value"),
    ("str points", {"points": "1240"}, "storeCard.headerFields[points].value"),
    ("huge points", {"points": 2**60}, "storeCard.headerFields[points].value"),
    ("barcode not latin-1", {"barcode_message": "CODE-€-ZŁ"}, "barcodes[0].message"),
    ("empty barcode", {"barcode_message": ""}, "barcodes[0].message"),
    ("alt text not a str", {"barcode_alt_text": None}, "barcodes[0].altText"),
    ("bad logo bytes", {"logo_png": b"not a png at all"}, "logo.png"),
    ("truncated logo", {"logo_png": png((64, 64))[:60]}, "logo.png"),
    ("logo not bytes", {"logo_png": "logo.png"}, "logo.png"),
    ("serial with a slash", {"serial_number": "ab/cd"}, "serialNumber"),
    ("serial too long", {"serial_number": "A" * 129}, "serialNumber"),
    ("serial not a str", {"serial_number": 12345}, "serialNumber"),
    ("empty holder", {"holder_name": ""}, "storeCard.primaryFields[holder].value"),
    ("empty tier", {"tier": ""}, "storeCard.secondaryFields[tier].value"),
    ("offer without title", {"offers": (Offer(""),)}, "storeCard.backFields[offer-1].label"),
    ("offers not a tuple of Offer", {"offers": ("Free coffee",)}, "storeCard.backFields[offer-1]"),
    ("card page not a url", {"card_page_url": "javascript:alert(1)"}, "storeCard.backFields[card-page].value"),
    ("terms not a str", {"terms": None}, "storeCard.backFields[terms].value"),
    ("lone surrogate", {"holder_name": "Ada \udc80"}, "storeCard.primaryFields[holder].value"),
    ("voided not a bool", {"voided": "yes"}, "voided"),
]


@pytest.mark.parametrize(("changes", "field"), [case[1:] for case in BAD_DESCRIPTIONS],
                         ids=[case[0] for case in BAD_DESCRIPTIONS])
def test_a_bad_description_is_refused_naming_the_key(changes: dict[str, Any], field: str,
                                                     certificates: PassCertificates) -> None:
    card = make_card(**changes)
    with pytest.raises(PassDescriptionError) as raised:
        validate(card)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")
    with pytest.raises(PassDescriptionError):
        build_pkpass(card, certificates)
    with pytest.raises(ValueError):  # callers that only know ValueError still catch it
        pass_json(card)


@pytest.mark.parametrize(("changes", "field"), [
    ({"pass_type_identifier": "pass.com.example.other"}, "passTypeIdentifier"),
    ({"team_identifier": "ZZZZZ99999"}, "teamIdentifier"),
], ids=["pass type id", "team id"])
def test_identifiers_must_match_the_certificate(changes: dict[str, Any], field: str,
                                                certificates: PassCertificates) -> None:
    card = make_card(**changes)
    validate(card)  # a sound description: only the certificate disagrees
    with pytest.raises(PassDescriptionError, match="must match the signing certificate") as raised:
        build_pkpass(card, certificates)
    assert raised.value.field == field


def test_http_web_service_is_allowed_in_development(certificates: PassCertificates, dev: DevCertificates,
                                                    openssl: str, tmp_path: Path) -> None:
    card = make_card(web_service_url="http://127.0.0.1:5000/wallet", authentication_token="a" * 16,
                     development=True)
    validate(card)
    files = unpack(build_pkpass(card, certificates))
    assert json.loads(files["pass.json"])["webServiceURL"] == "http://127.0.0.1:5000/wallet"
    assert openssl_verify(openssl, write_out(files, tmp_path), dev.ca_cert_pem).returncode == 0


# --- certificates ---------------------------------------------------------------------------------------------------

def test_dev_certificates_look_like_apples(dev: DevCertificates, certificates: PassCertificates) -> None:
    assert certificates.pass_type_identifier == PASS_TYPE
    assert certificates.team_identifier == TEAM
    signer = x509.load_pem_x509_certificate(dev.pass_cert_pem)
    wwdr = x509.load_pem_x509_certificate(dev.wwdr_cert_pem)
    root = x509.load_pem_x509_certificate(dev.ca_cert_pem)
    assert signer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"Pass Type ID: {PASS_TYPE}"
    assert signer.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Bean Club Coffee Ltd"
    assert signer.issuer == wwdr.subject and wwdr.issuer == root.subject
    signer.verify_directly_issued_by(wwdr)
    wwdr.verify_directly_issued_by(root)
    constraints = wwdr.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    assert signer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert signer.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    for certificate in (signer, wwdr, root):
        assert isinstance(certificate.signature_hash_algorithm, hashes.SHA256)
        assert certificate.public_key().key_size == 2048  # type: ignore[union-attr]
        assert certificate.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=3000)
    assert b"BEGIN PRIVATE KEY" in dev.pass_key_pem  # unencrypted PKCS#8


def test_pkcs12_round_trip(dev: DevCertificates, openssl: str, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(dev.pass_key_pem, None)
    cert = x509.load_pem_x509_certificate(dev.pass_cert_pem)
    assert isinstance(key, pkcs12.PKCS12PrivateKeyTypes)  # type: ignore[arg-type]
    p12 = pkcs12.serialize_key_and_certificates(b"Bean Club pass", key, cert, None,  # type: ignore[arg-type]
                                                serialization.BestAvailableEncryption(b"keychain"))
    wwdr_der = x509.load_pem_x509_certificate(dev.wwdr_cert_pem).public_bytes(serialization.Encoding.DER)
    loaded = PassCertificates.from_pkcs12(p12, b"keychain", wwdr_der)  # WWDR as Apple serves it: a DER .cer
    assert loaded.pass_type_identifier == PASS_TYPE and loaded.team_identifier == TEAM

    files = unpack(build_pkpass(FULL_CARD, loaded))
    assert openssl_verify(openssl, write_out(files, tmp_path), dev.ca_cert_pem).returncode == 0
    with pytest.raises(ValueError):
        PassCertificates.from_pkcs12(p12, b"wrong password", wwdr_der)


def test_der_certificates_and_an_encrypted_key_load(dev: DevCertificates) -> None:
    key = serialization.load_pem_private_key(dev.pass_key_pem, None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"secret"))
    cert_der = x509.load_pem_x509_certificate(dev.pass_cert_pem).public_bytes(serialization.Encoding.DER)
    loaded = PassCertificates.from_pem(cert_der, encrypted, dev.wwdr_cert_pem, password=b"secret")
    assert loaded.pass_type_identifier == PASS_TYPE
    with pytest.raises(ValueError, match="private key"):
        PassCertificates.from_pem(dev.pass_cert_pem, encrypted, dev.wwdr_cert_pem)
    with pytest.raises(ValueError, match="WWDR"):
        PassCertificates.from_pem(dev.pass_cert_pem, dev.pass_key_pem, b"not a certificate")


def test_a_key_that_is_not_the_certificates_is_refused(dev: DevCertificates) -> None:
    stranger = make_dev_certificates(PASS_TYPE, TEAM, "Someone Else")
    with pytest.raises(ValueError, match="does not match"):
        PassCertificates.from_pem(dev.pass_cert_pem, stranger.pass_key_pem, dev.wwdr_cert_pem)
    with pytest.raises(ValueError, match="does not match"):
        PassCertificates(signer_cert=x509.load_pem_x509_certificate(dev.pass_cert_pem),
                         signer_key=serialization.load_pem_private_key(stranger.pass_key_pem, None),  # type: ignore[arg-type]
                         wwdr_cert=x509.load_pem_x509_certificate(dev.wwdr_cert_pem))


@pytest.fixture(scope="module")
def bare_ec_certificates() -> Iterator[tuple[PassCertificates, bytes]]:
    """A self-signed P-256 signer whose subject has neither UID nor OU: it is its own "WWDR" and CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bare signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    yield PassCertificates(signer_cert=cert, signer_key=key, wwdr_cert=cert), cert.public_bytes(
        serialization.Encoding.PEM)


def test_a_certificate_without_identifiers_signs_any_card(bare_ec_certificates: tuple[PassCertificates, bytes],
                                                          openssl: str, tmp_path: Path) -> None:
    certificates, ca_pem = bare_ec_certificates
    assert certificates.pass_type_identifier is None and certificates.team_identifier is None
    files = unpack(build_pkpass(make_card(pass_type_identifier="pass.com.example.anything"), certificates))
    result = openssl_verify(openssl, write_out(files, tmp_path), ca_pem)
    assert result.returncode == 0, result.stderr


def test_public_api_is_explicit() -> None:
    for name in ("CardPass", "Offer", "PassDescriptionError", "build_pkpass", "pass_json", "validate",
                 "PassCertificates", "DevCertificates", "make_dev_certificates", "PKPASS_MIME_TYPE"):
        assert name in passes.__all__
        assert getattr(passes, name) is not None
    assert issubclass(PassDescriptionError, ValueError)
