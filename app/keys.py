"""The app's signing key store, configured from SIGNING_KEYS_DIR."""

from __future__ import annotations

from flask import Flask, current_app

from app.domain.signing import KeyStore


def init_app(app: Flask) -> None:
    app.extensions["keys"] = KeyStore(app.config["SIGNING_KEYS_DIR"])


def get_keys() -> KeyStore:
    keys: KeyStore = current_app.extensions["keys"]
    return keys
