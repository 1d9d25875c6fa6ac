"""The signed card code that the QR carries: format, signing and verification. Pure: no database, no I/O.

Layout (docs/card-code.md is the reference for other implementers):

    payload   = version (1 byte, 0x01) || kid (2 bytes) || serial (8 bytes)
    signed    = b"loyalty-card-code/v1" || 0x00 || program slug (UTF-8) || 0x00 || payload
    code      = BASE32(payload || Ed25519 signature over `signed` (64 bytes)), upper case, no padding

75 bytes make exactly 120 base32 characters, with no spare bits to tamper with, all in the QR alphanumeric
set: QR version 5 at error correction M holds at most 122 alphanumeric characters.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.domain.errors import InvalidCardCode

VERSION = 1
CONTEXT = b"loyalty-card-code/v1"
KID_BYTES = 2
SERIAL_BYTES = 8
PAYLOAD_BYTES = 1 + KID_BYTES + SERIAL_BYTES
SIGNATURE_BYTES = 64
CODE_LENGTH = (PAYLOAD_BYTES + SIGNATURE_BYTES) * 8 // 5  # 120
_BASE32_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


@dataclass(frozen=True)
class ParsedCode:
    """A code whose shape is right; its signature is not checked yet."""

    kid: str
    serial: str
    payload: bytes
    signature: bytes


def new_serial() -> str:
    """64 random bits as 13 base32 characters: unguessable, never sequential."""
    return _b32(secrets.token_bytes(SERIAL_BYTES))


def new_kid() -> str:
    return secrets.token_bytes(KID_BYTES).hex()


def signed_message(program_slug: str, payload: bytes) -> bytes:
    """What the signature covers: a fixed context, the program, then the payload (domain separation)."""
    return CONTEXT + b"\x00" + program_slug.encode("utf-8") + b"\x00" + payload


def sign_card_code(private_key: Ed25519PrivateKey, kid: str, program_slug: str, serial: str) -> str:
    serial_bytes = _b32decode(serial)
    if _b32(serial_bytes) != serial:
        raise ValueError(f"serial {serial!r} is not in canonical base32")
    payload = bytes([VERSION]) + bytes.fromhex(kid) + serial_bytes
    if len(payload) != PAYLOAD_BYTES:
        raise ValueError("kid or serial has the wrong length")
    signature = private_key.sign(signed_message(program_slug, payload))
    return _b32(payload + signature)


def parse_card_code(code: object) -> ParsedCode:
    """Check the code's shape and split it; raise InvalidCardCode with a reason a cashier can act on."""
    if not isinstance(code, str) or not code:
        raise InvalidCardCode("No card code was given.")
    if len(code) != CODE_LENGTH:
        raise InvalidCardCode(
            f"This is not a complete card code (it has {len(code)} characters, a card code has "
            f"{CODE_LENGTH}). Scan it again."
        )
    if not _BASE32_ALPHABET.issuperset(code):
        raise InvalidCardCode("This is not one of our card codes: it holds characters a card code never has.")
    try:
        raw = base64.b32decode(code)
    except binascii.Error:  # pragma: no cover - the alphabet and length checks above rule this out
        raise InvalidCardCode("This card code cannot be decoded.") from None
    payload, signature = raw[:PAYLOAD_BYTES], raw[PAYLOAD_BYTES:]
    if payload[0] != VERSION:
        raise InvalidCardCode(f"Card code version {payload[0]} is not supported.")
    return ParsedCode(
        kid=payload[1 : 1 + KID_BYTES].hex(),
        serial=_b32(payload[1 + KID_BYTES :]),
        payload=payload,
        signature=signature,
    )


def verify_signature(parsed: ParsedCode, program_slug: str, public_key: Ed25519PublicKey) -> None:
    try:
        public_key.verify(parsed.signature, signed_message(program_slug, parsed.payload))
    except InvalidSignature:
        raise InvalidCardCode("This card code has been altered or was not issued by us.") from None


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _b32decode(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))
