"""Compact JWS (RFC 7515) signing with RS256, on `cryptography` alone.

Google takes two kinds of RS256 tokens from an issuer, both signed with the service account's key: the
"Save to Google Wallet" JWT and the OAuth 2.0 assertion that buys an access token (RFC 7523). Both are built
here; the tests check them with PyJWT, an independent implementation.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["b64url", "sign_rs256"]


def sign_rs256(key: rsa.RSAPrivateKey, header: Mapping[str, object], claims: Mapping[str, object]) -> str:
    """`header` (to which "alg": "RS256" is added) and `claims` as a signed compact JWS.

    JSON is written compactly and as UTF-8 rather than with \\u escapes: the save link carries the token in its
    URL, where every byte counts.
    """
    protected = {"alg": "RS256", **header}
    signing_input = f"{_b64url_json(protected)}.{_b64url_json(claims)}".encode("ascii")
    # RS256 is RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 section 3.3).
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode('ascii')}.{b64url(signature)}"


def b64url(data: bytes) -> str:
    """Base64url without padding, as JWS writes every part."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_json(value: Mapping[str, object]) -> str:
    return b64url(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
