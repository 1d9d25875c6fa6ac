"""The signed card code against its written contract, docs/card-code.md.

Codes are checked the way a stranger would check them: decoded with the standard library, verified with PyNaCl
and the `openssl` command against the keys the server publishes, with the signed message rebuilt from the doc.
The app's own module only appears where the test is about the app (its refusals, its test vector).
"""

from __future__ import annotations

import base64
import re
import shutil
import string
import subprocess
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing
import pytest
import qrcode
import qrcode.constants
import qrcode.exceptions
import qrcode.util
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from app.domain.card_code import parse_card_code, sign_card_code, signed_message
from app.domain.cards import verify_card_code
from app.domain.errors import CardRefused, InvalidCardCode
from app.qr import qr_version
from tests.conftest import ProgramKit

DOC = Path(__file__).resolve().parent.parent / "docs" / "card-code.md"

# The format, as docs/card-code.md states it.
CONTEXT = b"loyalty-card-code/v1"
CODE_CHARS = 120
RAW_BYTES = 75
PAYLOAD_BYTES = 11  # version (1) || kid (2) || serial (8)
BASE32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
SPKI_ED25519_PREFIX = bytes.fromhex("302a300506032b6570032100")

QR_ALPHANUMERIC = string.digits + string.ascii_uppercase + " $%*+-./:"
# What a scanner or a person could put in place of a character: the whole QR alphanumeric set, and lower case.
SUBSTITUTES = QR_ALPHANUMERIC + string.ascii_lowercase

# The test vector of docs/card-code.md.
VECTOR_SEED = bytes(range(32))
VECTOR_PUBLIC_KEY = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
VECTOR_JWK_X = "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"
VECTOR_KID = "a1b2"
VECTOR_SLUG = "corner-coffee"
VECTOR_SERIAL_BYTES = "0011223344556677"
VECTOR_SERIAL = "AAISEM2EKVTHO"
VECTOR_PAYLOAD = "01a1b20011223344556677"
VECTOR_MESSAGE = (
    "6c6f79616c74792d636172642d636f64652f763100636f726e65722d636f666665650001a1b20011223344556677"
)
VECTOR_SIGNATURE = (
    "09a83469c5172044bba7ffd9272282963377466aee9bfd7c7d8046cc8f89b494"
    "9866eb706ec3a7489829ebe0270d1be9613fa90b2ed023dc2e1be097cdac6b0b"
)
VECTOR_CODE = (
    "AGQ3EAAREIZUIVLGO4E2QNDJYULSARF3U775SJZCQKLDG52GNLXJX7L4PWAENTEP"
    "RG2JJGDG5NYG5Q5HJCMCT27AE4GRX2LBH6UQWLWQEPOC4G7AS7G2Y2YL"
)
VECTOR_PEM_BODY = "MCowBQYDK2VwAyEAA6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="

Enroll = Callable[..., dict[str, Any]]
MakeProgram = Callable[..., ProgramKit]


# --- an independent verifier, written from docs/card-code.md -------------------------------------------------


def decode_code(code: str) -> tuple[bytes, bytes]:
    """The payload and the signature of a code, by the standard library's base32."""
    raw = base64.b32decode(code)
    assert len(raw) == RAW_BYTES
    return raw[:PAYLOAD_BYTES], raw[PAYLOAD_BYTES:]


def kid_of(code: str) -> str:
    return decode_code(code)[0][1:3].hex()


def serial_of(code: str) -> str:
    return base64.b32encode(decode_code(code)[0][3:11]).decode("ascii").rstrip("=")


def doc_message(program_slug: str, payload: bytes) -> bytes:
    return CONTEXT + b"\x00" + program_slug.encode("utf-8") + b"\x00" + payload


def published_keys(client: FlaskClient) -> list[dict[str, Any]]:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    keys: list[dict[str, Any]] = response.json["keys"]  # type: ignore[index]
    return keys


def key_statuses(client: FlaskClient, program_slug: str) -> dict[str, str]:
    return {key["kid"]: key["status"] for key in published_keys(client) if key["program"] == program_slug}


def published_key(client: FlaskClient, kid: str) -> dict[str, Any]:
    matches = [key for key in published_keys(client) if key["kid"] == kid]
    assert len(matches) == 1, f"kid {kid} is published {len(matches)} times"
    return matches[0]


def jwk_public_key(jwk: dict[str, Any]) -> bytes:
    x: str = jwk["x"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", x), "x is 32 bytes of unpadded base64url"
    return base64.urlsafe_b64decode(x + "=")


def spki_pem(public_key: bytes) -> str:
    body = base64.b64encode(SPKI_ED25519_PREFIX + public_key).decode("ascii")
    return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"


@pytest.fixture(scope="module")
def openssl() -> str:
    """The openssl command; 3.0 is the first release whose pkeyutl verifies Ed25519 with -rawin."""
    path = shutil.which("openssl")
    assert path is not None, "the openssl command is needed to verify card codes independently"
    version = subprocess.run([path, "version"], capture_output=True, text=True, check=True).stdout
    match = re.match(r"OpenSSL (\d+)\.", version)
    assert match is not None and int(match.group(1)) >= 3, f"{version.strip()} cannot verify Ed25519 with -rawin"
    return path


def openssl_verify(openssl: str, workdir: Path, public_key: bytes, message: bytes,
                   signature: bytes) -> subprocess.CompletedProcess[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "pub.pem").write_text(spki_pem(public_key))
    (workdir / "msg.bin").write_bytes(message)
    (workdir / "sig.bin").write_bytes(signature)
    return subprocess.run(
        [openssl, "pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", "pub.pem", "-sigfile", "sig.bin",
         "-in", "msg.bin"],
        cwd=workdir, capture_output=True, text=True, check=False, timeout=30,
    )


def scan(client: FlaskClient, kit: ProgramKit, code: object) -> Any:
    return client.post("/api/v1/scans", json={"code": code}, headers=kit.headers)


def assert_refused(response: Any, code: str, reason: str) -> None:
    assert response.status_code == 422, response.json
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == 422
    assert response.json["code"] == code
    assert response.json["reason"] == reason
    assert response.json["type"].endswith("/" + code)
    assert response.json["detail"]


# --- the test vector ------------------------------------------------------------------------------------------


def test_the_code_produces_the_documented_test_vector() -> None:
    private_key = Ed25519PrivateKey.from_private_bytes(VECTOR_SEED)
    public_raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert public_raw.hex() == VECTOR_PUBLIC_KEY
    assert base64.urlsafe_b64encode(public_raw).rstrip(b"=").decode() == VECTOR_JWK_X
    assert base64.b32encode(bytes.fromhex(VECTOR_SERIAL_BYTES)).decode().rstrip("=") == VECTOR_SERIAL

    code = sign_card_code(private_key, VECTOR_KID, VECTOR_SLUG, VECTOR_SERIAL)

    assert code == VECTOR_CODE
    parsed = parse_card_code(code)
    assert (parsed.kid, parsed.serial) == (VECTOR_KID, VECTOR_SERIAL)
    assert parsed.payload.hex() == VECTOR_PAYLOAD
    assert parsed.signature.hex() == VECTOR_SIGNATURE
    assert signed_message(VECTOR_SLUG, parsed.payload).hex() == VECTOR_MESSAGE


def test_the_documented_test_vector_is_self_consistent_under_other_verifiers(openssl: str, tmp_path: Path) -> None:
    payload = bytes.fromhex(VECTOR_PAYLOAD)
    message = bytes.fromhex(VECTOR_MESSAGE)
    signature = bytes.fromhex(VECTOR_SIGNATURE)
    assert payload == b"\x01" + bytes.fromhex(VECTOR_KID) + bytes.fromhex(VECTOR_SERIAL_BYTES)
    assert message == doc_message(VECTOR_SLUG, payload)
    assert base64.b32encode(payload + signature).decode() == VECTOR_CODE
    assert len(VECTOR_CODE) == CODE_CHARS

    signing_key = nacl.signing.SigningKey(VECTOR_SEED)
    assert bytes(signing_key.verify_key).hex() == VECTOR_PUBLIC_KEY
    assert signing_key.sign(message).signature.hex() == VECTOR_SIGNATURE  # Ed25519 is deterministic
    verify_key = nacl.signing.VerifyKey(bytes.fromhex(VECTOR_PUBLIC_KEY))
    assert verify_key.verify(message, signature) == message
    with pytest.raises(nacl.exceptions.BadSignatureError):
        verify_key.verify(doc_message("corner-coffee-2", payload), signature)

    assert spki_pem(bytes.fromhex(VECTOR_PUBLIC_KEY)).splitlines()[1] == VECTOR_PEM_BODY
    verified = openssl_verify(openssl, tmp_path, bytes.fromhex(VECTOR_PUBLIC_KEY), message, signature)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Signature Verified Successfully" in verified.stdout


def test_the_doc_states_the_test_vector_and_the_format() -> None:
    text = DOC.read_text(encoding="utf-8")
    for value in (VECTOR_SEED.hex(), VECTOR_PUBLIC_KEY, VECTOR_JWK_X, f"`{VECTOR_KID}`", VECTOR_SERIAL_BYTES,
                  VECTOR_SERIAL, VECTOR_PAYLOAD, VECTOR_MESSAGE, VECTOR_SIGNATURE, VECTOR_CODE, VECTOR_PEM_BODY,
                  SPKI_ED25519_PREFIX.hex(), CONTEXT.hex(), BASE32_ALPHABET):
        assert value in text, f"docs/card-code.md no longer shows {value}"
    for fact in (f"exactly {RAW_BYTES} bytes", f"{CODE_CHARS} characters", "`invalid_code`", "`wrong_program`",
                 "`revoked_card`", "alphanumeric mode", "error correction level M", "Version 5 (37 x 37"):
        assert fact in text, f"docs/card-code.md no longer says {fact!r}"


# --- live codes, verified independently -----------------------------------------------------------------------


def test_an_enrolled_code_verifies_with_pynacl_against_the_published_jwks(
    client: FlaskClient, make_program: MakeProgram, enroll: Enroll
) -> None:
    kit = make_program()
    member = enroll(kit)
    code: str = member["code"]
    payload, signature = decode_code(code)
    assert payload[0] == 0x01

    jwk = published_key(client, kid_of(code))
    assert {k: jwk[k] for k in ("kty", "crv", "use", "alg", "program", "status")} == {
        "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "program": kit.program.slug,
        "status": "active",
    }
    assert re.fullmatch(r"[0-9a-f]{4}", jwk["kid"])
    verify_key = nacl.signing.VerifyKey(jwk_public_key(jwk))
    message = doc_message(kit.program.slug, payload)
    assert verify_key.verify(message, signature) == message
    assert serial_of(code) == member["serial"]

    for forged_message in (doc_message(kit.program.slug + "x", payload), b"x" + message, message[:-1]):
        with pytest.raises(nacl.exceptions.BadSignatureError):
            verify_key.verify(forged_message, signature)


def test_an_enrolled_code_verifies_with_openssl(
    client: FlaskClient, make_program: MakeProgram, enroll: Enroll, openssl: str, tmp_path: Path
) -> None:
    kit = make_program()
    code: str = enroll(kit)["code"]
    payload, signature = decode_code(code)
    public_key = jwk_public_key(published_key(client, kid_of(code)))
    message = doc_message(kit.program.slug, payload)

    verified = openssl_verify(openssl, tmp_path / "good", public_key, message, signature)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Signature Verified Successfully" in verified.stdout

    tampered = bytearray(message)
    tampered[-1] ^= 0x01
    refused = openssl_verify(openssl, tmp_path / "tampered", public_key, bytes(tampered), signature)
    assert refused.returncode != 0
    assert "Signature Verification Failure" in refused.stdout + refused.stderr


# --- every small edit of a code is refused ------------------------------------------------------------------


def single_edits(code: str) -> Iterator[tuple[str, str]]:
    """Every one-character substitution, every truncation, and every one-character extension at either end."""
    for position, original in enumerate(code):
        for replacement in SUBSTITUTES:
            if replacement != original:
                edited = code[:position] + replacement + code[position + 1:]
                yield f"{original!r}->{replacement!r} at {position}", edited
    for length in range(len(code)):
        yield f"truncated to {length}", code[:length]
    for extra in SUBSTITUTES:
        yield f"{extra!r} appended", code + extra
        yield f"{extra!r} prepended", extra + code


def refusal_of(session: Session, kit: ProgramKit, code: str) -> str | None:
    """None when the code is refused as invalid_code; otherwise what happened instead."""
    try:
        card = verify_card_code(session, kit.program, code)
    except InvalidCardCode as error:
        if (error.code, error.extra.get("reason")) != ("invalid_code", "invalid"):
            return f"refused as {error.code}/{error.extra.get('reason')}"
        return None
    except CardRefused as error:
        return f"refused as {error.code}, not invalid_code"
    return f"accepted as card {card.serial}"


def test_every_single_character_edit_of_a_code_is_refused_as_invalid(
    db_session: Session, make_program: MakeProgram, enroll: Enroll
) -> None:
    kit = make_program()
    member = enroll(kit)
    code: str = member["code"]
    assert verify_card_code(db_session, kit.program, code).serial == member["serial"]

    checked = 0
    wrong: list[str] = []
    for description, edited in single_edits(code):
        checked += 1
        outcome = refusal_of(db_session, kit, edited)
        if outcome is not None:
            wrong.append(f"{description}: {outcome}")

    assert wrong == []
    substitutions = CODE_CHARS * (len(SUBSTITUTES) - 1)
    assert checked == substitutions + CODE_CHARS + 2 * len(SUBSTITUTES)


EDIT = st.one_of(
    st.tuples(st.just("substitute"), st.integers(0, CODE_CHARS), st.sampled_from(SUBSTITUTES)),
    st.tuples(st.just("insert"), st.integers(0, CODE_CHARS), st.sampled_from(SUBSTITUTES)),
    st.tuples(st.just("delete"), st.integers(0, CODE_CHARS), st.just("")),
)


def apply_edits(code: str, edits: list[tuple[str, int, str]]) -> str:
    for kind, at, char in edits:
        position = at % (len(code) + 1)
        if kind == "insert":
            code = code[:position] + char + code[position:]
        elif position < len(code):
            code = code[:position] + char + code[position + 1:]
    return code


@pytest.fixture()
def issued(make_program: MakeProgram, enroll: Enroll) -> tuple[ProgramKit, str]:
    """One program and one valid code of it."""
    kit = make_program()
    return kit, enroll(kit)["code"]


# Hypothesis runs the body many times within one use of the fixtures. That is sound here: every example only
# reads the program and the code that `issued` made.
_SHARED_FIXTURES = settings(max_examples=300, deadline=None,
                            suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SHARED_FIXTURES
@given(edits=st.lists(EDIT, min_size=1, max_size=4))
def test_random_edits_of_a_code_are_refused_as_invalid(
    db_session: Session, issued: tuple[ProgramKit, str], edits: list[tuple[str, int, str]]
) -> None:
    kit, code = issued
    edited = apply_edits(code, edits)
    assume(edited != code)
    assert refusal_of(db_session, kit, edited) is None


@_SHARED_FIXTURES
@given(signature=st.binary(min_size=64, max_size=64), serial=st.binary(min_size=8, max_size=8),
       keep_serial=st.booleans())
def test_well_formed_codes_with_a_made_up_signature_are_refused_as_invalid(
    db_session: Session, issued: tuple[ProgramKit, str], signature: bytes, serial: bytes, keep_serial: bool
) -> None:
    kit, code = issued
    payload, real_signature = decode_code(code)
    assume(signature != real_signature)
    forged_payload = payload if keep_serial else payload[:3] + serial
    forged = base64.b32encode(forged_payload + signature).decode("ascii")
    assert len(forged) == CODE_CHARS
    assert refusal_of(db_session, kit, forged) is None


HTTP_EDITS: dict[str, Callable[[str], object]] = {
    "version character": lambda code: "B" + code[1:],
    "kid character": lambda code: code[:3] + ("A" if code[3] != "A" else "B") + code[4:],
    "serial character": lambda code: code[:10] + ("Z" if code[10] != "Z" else "Y") + code[11:],
    "signature character": lambda code: code[:-1] + ("2" if code[-1] != "2" else "3"),
    "lower case": lambda code: code.lower(),
    "one character short": lambda code: code[:-1],
    "scanner's newline appended": lambda code: code + "\n",
    "space prepended": lambda code: " " + code,
    "ambiguous digit 0 for O": lambda code: code[:60] + "0" + code[61:],
}


@pytest.mark.parametrize("edit", HTTP_EDITS.values(), ids=HTTP_EDITS.keys())
def test_the_scan_api_refuses_an_edited_code_as_invalid_code(
    client: FlaskClient, make_program: MakeProgram, enroll: Enroll, edit: Callable[[str], object]
) -> None:
    kit = make_program()
    code: str = enroll(kit)["code"]
    assert scan(client, kit, code).status_code == 200
    assert_refused(scan(client, kit, edit(code)), "invalid_code", "invalid")


@pytest.mark.parametrize("not_a_code", ["", 12345, None])
def test_the_scan_api_asks_for_a_code_when_none_is_given(
    client: FlaskClient, make_program: MakeProgram, not_a_code: object
) -> None:
    # No code at all is malformed input, answered like quote and purchase answer it, not a refused card.
    response = scan(client, make_program(), not_a_code)
    assert response.status_code == 422
    assert response.json["code"] == "validation_error"
    assert response.json["field"] == "code"


def test_a_genuinely_signed_code_of_an_unknown_version_is_refused(
    app: Flask, client: FlaskClient, make_program: MakeProgram, enroll: Enroll
) -> None:
    kit = make_program()
    code: str = enroll(kit)["code"]
    payload, _ = decode_code(code)
    private_key = app.extensions["keys"].load(kid_of(code))
    seed = private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
    next_version = b"\x02" + payload[1:]
    signature = nacl.signing.SigningKey(seed).sign(doc_message(kit.program.slug, next_version)).signature
    # The same signing, with version 0x01, gives back the genuine code: the forgery differs only in its version.
    original_signature = nacl.signing.SigningKey(seed).sign(doc_message(kit.program.slug, payload)).signature
    assert base64.b32encode(payload + original_signature).decode() == code

    forged = base64.b32encode(next_version + signature).decode("ascii")
    assert_refused(scan(client, kit, forged), "invalid_code", "invalid")


# --- what a code is made of ------------------------------------------------------------------------------------


def test_a_code_is_120_qr_alphanumeric_characters_without_personal_data(
    client: FlaskClient, make_program: MakeProgram, enroll: Enroll
) -> None:
    kit = make_program()
    name, email, phone = "Zoë Quintero-Håland", "zoe.quintero@example.com", "+33 6 12 34 56 78"
    member = enroll(kit, name=name, email=email, phone=phone)
    code: str = member["code"]

    assert len(code) == CODE_CHARS
    assert set(code) <= set(BASE32_ALPHABET) <= set(QR_ALPHANUMERIC)

    payload, signature = decode_code(code)
    jwk = published_key(client, kid_of(code))
    # Every byte is accounted for: the version, the key id, the serial, and a signature that verifies.
    assert payload == b"\x01" + bytes.fromhex(jwk["kid"]) + base64.b32decode(member["serial"] + "===")
    nacl.signing.VerifyKey(jwk_public_key(jwk)).verify(doc_message(kit.program.slug, payload), signature)
    raw = payload + signature
    for personal in (name, "Zoë", "Quintero", email, "zoe.quintero", phone, "+33612345678", "612345678"):
        for encoded in (personal.encode("utf-8"), personal.upper().encode("utf-8")):
            assert encoded not in raw
        assert personal.upper() not in code


def test_serials_are_distinct_random_and_not_sequential(
    client: FlaskClient, make_program: MakeProgram, enroll: Enroll
) -> None:
    kit = make_program()
    members = [enroll(kit) for _ in range(40)]
    serials = [member["serial"] for member in members]

    assert [serial_of(member["code"]) for member in members] == serials
    assert len(set(serials)) == len(serials)
    assert all(re.fullmatch(r"[A-Z2-7]{13}", serial) for serial in serials)
    numbers = [int.from_bytes(base64.b32decode(serial + "==="), "big") for serial in serials]
    # Neighbours in enrollment order are far apart (random 64-bit numbers are within 2**40 once in 2**23)...
    assert all(abs(a - b) > 2**40 for a, b in pairwise(numbers))
    # ...and all 64 bits vary: none is fixed across 40 cards (each would be, by chance, once in 2**39).
    assert all(len({(n >> bit) & 1 for n in numbers}) == 2 for bit in range(64))


def test_a_code_fits_qr_version_5_at_error_correction_m(make_program: MakeProgram, enroll: Enroll) -> None:
    kit = make_program()
    code: str = enroll(kit)["code"]

    assert qr_version(code) <= 5

    qr = qrcode.QRCode(version=5, error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(code, optimize=0)
    assert [segment.mode for segment in qr.data_list] == [qrcode.util.MODE_ALPHA_NUM]
    qr.make(fit=False)  # raises DataOverflowError if the code does not fit
    assert qr.modules_count == 37

    smaller = qrcode.QRCode(version=4, error_correction=qrcode.constants.ERROR_CORRECT_M)
    smaller.add_data(code, optimize=0)
    with pytest.raises(qrcode.exceptions.DataOverflowError):  # as the doc says: version 4-M is too small
        smaller.make(fit=False)


# --- keys, revocation, programs ---------------------------------------------------------------------------------


def test_rotation_keeps_old_codes_until_the_old_key_is_removed(
    client: FlaskClient, runner: FlaskCliRunner, make_program: MakeProgram, enroll: Enroll
) -> None:
    kit = make_program()
    slug = kit.program.slug
    early = enroll(kit)
    old_kid = kid_of(early["code"])
    assert key_statuses(client, slug) == {old_kid: "active"}

    rotated = runner.invoke(args=["keys", "rotate", "--program", slug])
    assert rotated.exit_code == 0, rotated.output
    new_kid = rotated.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{4}", new_kid) and new_kid != old_kid

    assert scan(client, kit, early["code"]).json["serial"] == early["serial"]
    late = enroll(kit)
    assert kid_of(late["code"]) == new_kid
    assert key_statuses(client, slug) == {old_kid: "retired", new_kid: "active"}
    for member in (early, late):  # each code verifies offline with the key its kid names
        payload, signature = decode_code(member["code"])
        nacl.signing.VerifyKey(jwk_public_key(published_key(client, kid_of(member["code"])))).verify(
            doc_message(slug, payload), signature)

    refused = runner.invoke(args=["keys", "remove", new_kid])
    assert refused.exit_code == 1
    assert "active key" in refused.output

    removed = runner.invoke(args=["keys", "remove", old_kid])
    assert removed.exit_code == 0, removed.output
    assert key_statuses(client, slug) == {new_kid: "active"}
    assert_refused(scan(client, kit, early["code"]), "invalid_code", "invalid")
    assert scan(client, kit, late["code"]).status_code == 200
    # The removed key's id stays taken, so it is never handed to another key; removing it twice is refused.
    assert runner.invoke(args=["keys", "remove", old_kid]).exit_code == 1


def test_a_revoked_card_is_refused_and_its_reissue_scans_with_the_same_points(
    client: FlaskClient, runner: FlaskCliRunner, make_program: MakeProgram, enroll: Enroll
) -> None:
    kit = make_program()
    member = enroll(kit, name="Amina Karimi")
    before = scan(client, kit, member["code"])
    assert before.status_code == 200

    revoked = runner.invoke(args=["cards", "revoke", member["serial"]])
    assert revoked.exit_code == 0, revoked.output
    assert_refused(scan(client, kit, member["code"]), "revoked_card", "revoked")

    reissued = runner.invoke(args=["cards", "reissue", member["serial"]])
    assert reissued.exit_code == 0, reissued.output
    new_code = reissued.stdout.strip()
    assert len(new_code) == CODE_CHARS and new_code != member["code"]
    assert kid_of(new_code) == kid_of(member["code"])

    after = scan(client, kit, new_code)
    assert after.status_code == 200, after.json
    assert after.json["serial"] == serial_of(new_code) != member["serial"]
    assert {k: after.json[k] for k in ("display_name", "points", "tier")} == {
        k: before.json[k] for k in ("display_name", "points", "tier")
    }
    assert_refused(scan(client, kit, member["code"]), "revoked_card", "revoked")
    card: Any = client.get(f"/api/v1/cards/{after.json['serial']}", headers=kit.headers)
    assert card.status_code == 200
    assert (card.json["status"], card.json["points"]) == ("active", before.json["points"])


def test_a_reissue_alone_retires_the_old_code(
    client: FlaskClient, runner: FlaskCliRunner, make_program: MakeProgram, enroll: Enroll
) -> None:
    kit = make_program()
    member = enroll(kit)
    first = runner.invoke(args=["cards", "reissue", member["serial"]])
    assert first.exit_code == 0, first.output
    second = runner.invoke(args=["cards", "reissue", serial_of(first.stdout.strip())])
    assert second.exit_code == 0, second.output

    assert scan(client, kit, second.stdout.strip()).status_code == 200
    for old_code in (member["code"], first.stdout.strip()):
        assert_refused(scan(client, kit, old_code), "revoked_card", "revoked")


def test_a_code_of_another_program_is_refused_as_wrong_program(
    client: FlaskClient, make_program: MakeProgram, enroll: Enroll
) -> None:
    shop_a, shop_b = make_program(), make_program()
    code: str = enroll(shop_a)["code"]

    assert scan(client, shop_a, code).status_code == 200
    assert_refused(scan(client, shop_b, code), "wrong_program", "wrong program")
    # The signature is checked first: an altered code of another program is simply invalid.
    altered = code[:-1] + ("2" if code[-1] != "2" else "3")
    assert_refused(scan(client, shop_b, altered), "invalid_code", "invalid")


def test_the_scan_api_and_the_jwks_answer_as_documented(client: FlaskClient, make_program: MakeProgram) -> None:
    kit = make_program()

    jwks = client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    assert jwks.headers["Cache-Control"] == "public, max-age=300"

    no_code: Any = client.post("/api/v1/scans", json={"serial": "X"}, headers=kit.headers)
    assert (no_code.status_code, no_code.json["code"]) == (422, "validation_error")
    not_an_object: Any = client.post("/api/v1/scans", json=["code"], headers=kit.headers)
    assert (not_an_object.status_code, not_an_object.json["code"]) == (400, "invalid_json")
    no_key: Any = client.post("/api/v1/scans", json={"code": VECTOR_CODE})
    assert (no_key.status_code, no_key.json["code"]) == (401, "unauthorized")
    # The test vector's kid belongs to no key here (or, by chance, to a key that did not sign it).
    assert_refused(scan(client, kit, VECTOR_CODE), "invalid_code", "invalid")
