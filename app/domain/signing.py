"""Card-signing keys: the private halves on disk, the public halves in the database and the JWKS.

A program has exactly one active key; `rotate_signing_key` makes a new one active and retires the old, which
keeps verifying until the operator removes it. Private keys are PEM files named by key id in a directory the
operator chooses (the instance folder by default), so they never reach the database, a backup of it, or git.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.domain.card_code import new_kid
from app.domain.errors import Conflict, NotFound
from app.models import Program, SigningKey, utcnow


class KeyStore:
    """Private signing keys as PEM files in one directory, cached once read."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._cache: dict[str, Ed25519PrivateKey] = {}

    def save(self, kid: str, private_key: Ed25519PrivateKey) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path = self.directory / f"{kid}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        self._cache[kid] = private_key

    def exists(self, kid: str) -> bool:
        return (self.directory / f"{kid}.pem").exists()

    def delete(self, kid: str) -> None:
        self._cache.pop(kid, None)
        (self.directory / f"{kid}.pem").unlink(missing_ok=True)

    def load(self, kid: str) -> Ed25519PrivateKey:
        if kid not in self._cache:
            path = self.directory / f"{kid}.pem"
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except FileNotFoundError:
                raise RuntimeError(
                    f"The private signing key {kid} is missing from {self.directory}; restore it from a backup "
                    "or run `keys rotate` to make a new one."
                ) from None
            if not isinstance(key, Ed25519PrivateKey):
                raise RuntimeError(f"{path} does not hold an Ed25519 key")
            self._cache[kid] = key
        return self._cache[kid]


def create_signing_key(session: Session, program: Program, keys: KeyStore) -> SigningKey:
    """A new active key for the program; any key active before is retired (and keeps verifying)."""
    kid = new_kid()
    # Skip ids with a leftover file too: a key made in a transaction that rolled back leaves its file behind.
    while keys.exists(kid) or session.scalar(select(SigningKey.id).where(SigningKey.kid == kid)) is not None:
        kid = new_kid()
    private_key = Ed25519PrivateKey.generate()
    session.execute(
        update(SigningKey)
        .where(SigningKey.program_id == program.id, SigningKey.status == "active")
        .values(status="retired", retired_at=utcnow())
    )
    public_raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signing_key = SigningKey(program_id=program.id, kid=kid, public_key=public_raw, status="active")
    session.add(signing_key)
    session.flush()
    keys.save(kid, private_key)
    return signing_key


rotate_signing_key = create_signing_key


def remove_signing_key(session: Session, keys: KeyStore, kid: str) -> SigningKey:
    """Withdraw a retired key: codes it signed stop verifying and its private half is deleted.

    The row stays, marked removed, so the key id is never given to another key (tills may cache the JWKS).
    """
    key = session.scalar(select(SigningKey).where(SigningKey.kid == kid))
    if key is None or key.status == "removed":
        raise NotFound(f"No signing key {kid!r}.")
    if key.status == "active":
        raise Conflict(f"Key {kid} is the active key of its program; rotate first, then remove it.")
    key.status = "removed"
    session.flush()
    keys.delete(kid)
    return key


def active_signing_key(session: Session, program_id: int) -> SigningKey:
    key = session.scalar(
        select(SigningKey).where(SigningKey.program_id == program_id, SigningKey.status == "active")
    )
    if key is None:
        raise RuntimeError(f"Program {program_id} has no active signing key; run `keys rotate`.")
    return key


@lru_cache(maxsize=256)
def public_key_from_bytes(raw: bytes) -> Ed25519PublicKey:
    """Parsed once per key; keyed by the key's bytes, so nothing stale can come back under a reused name."""
    return Ed25519PublicKey.from_public_bytes(raw)


def jwks(session: Session) -> dict[str, Any]:
    """Every key that verifies, as an RFC 8037 JWK Set; `program` says whose cards each key signs."""
    rows = session.execute(
        select(SigningKey, Program.slug)
        .join(Program)
        .where(SigningKey.status != "removed")
        .order_by(SigningKey.program_id, SigningKey.id)
    ).all()
    return {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": base64.urlsafe_b64encode(key.public_key).rstrip(b"=").decode("ascii"),
                "kid": key.kid,
                "use": "sig",
                "alg": "EdDSA",
                "program": slug,
                "status": key.status,
            }
            for key, slug in rows
        ]
    }
