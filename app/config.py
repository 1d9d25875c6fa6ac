"""Configuration from the environment, with embedded defaults that run on a laptop."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any


def _secret_key(instance_path: Path) -> str:
    """SECRET_KEY from the environment, else one made on first run and kept in the instance folder."""
    from_env = os.environ.get("SECRET_KEY")
    if from_env:
        return from_env
    path = instance_path / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def normalise_database_url(url: str) -> str:
    """Point plain postgres URLs at psycopg 3, the driver we install."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def load_config(instance_path: Path) -> dict[str, Any]:
    instance_path.mkdir(parents=True, exist_ok=True)
    default_db = f"sqlite:///{instance_path / 'loyalty.sqlite3'}"
    return {
        "SECRET_KEY": _secret_key(instance_path),
        "DATABASE_URL": normalise_database_url(os.environ.get("DATABASE_URL", default_db)),
        # Private signing keys live here, never in the database or in git.
        "SIGNING_KEYS_DIR": os.environ.get("SIGNING_KEYS_DIR", str(instance_path / "signing-keys")),
        "PUBLIC_BASE_URL": os.environ.get("PUBLIC_BASE_URL", "").rstrip("/"),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": os.environ.get("SESSION_COOKIE_SECURE", "0") == "1",
        "MAX_CONTENT_LENGTH": 64 * 1024,
        "MAIL_SERVER": os.environ.get("MAIL_SERVER", ""),
        "MAIL_PORT": int(os.environ.get("MAIL_PORT", "25")),
        "MAIL_STARTTLS": os.environ.get("MAIL_STARTTLS", "0") == "1",
        "MAIL_USERNAME": os.environ.get("MAIL_USERNAME", ""),
        "MAIL_PASSWORD": os.environ.get("MAIL_PASSWORD", ""),
        "MAIL_FROM": os.environ.get("MAIL_FROM", "loyalty@localhost"),
        # Apple Wallet (app/wallet.py explains each); without a certificate, development ones are made here.
        "APPLE_PASS_CERT": os.environ.get("APPLE_PASS_CERT", ""),
        "APPLE_PASS_KEY": os.environ.get("APPLE_PASS_KEY", ""),
        "APPLE_PASS_CERT_PASSWORD": os.environ.get("APPLE_PASS_CERT_PASSWORD", ""),
        "APPLE_WWDR_CERT": os.environ.get("APPLE_WWDR_CERT", ""),
        "APPLE_PASS_TYPE_ID": os.environ.get("APPLE_PASS_TYPE_ID", ""),
        "APPLE_TEAM_ID": os.environ.get("APPLE_TEAM_ID", ""),
        "APPLE_DEV_CERTS_DIR": os.environ.get("APPLE_DEV_CERTS_DIR", str(instance_path / "apple-dev-certs")),
        "APNS_URL": os.environ.get("APNS_URL", ""),
        "APNS_KEY_FILE": os.environ.get("APNS_KEY_FILE", ""),
        "APNS_KEY_ID": os.environ.get("APNS_KEY_ID", ""),
        "APNS_TEAM_ID": os.environ.get("APNS_TEAM_ID", ""),
        "APNS_CA_FILE": os.environ.get("APNS_CA_FILE", ""),
        # Google Wallet (app/google_wallet.py explains each); without a key, a development one is made here.
        "GOOGLE_WALLET_ISSUER_ID": os.environ.get("GOOGLE_WALLET_ISSUER_ID", ""),
        "GOOGLE_SERVICE_ACCOUNT_FILE": os.environ.get("GOOGLE_SERVICE_ACCOUNT_FILE", ""),
        "GOOGLE_DEV_KEY_FILE": os.environ.get("GOOGLE_DEV_KEY_FILE",
                                              str(instance_path / "google-dev-service-account.json")),
        "GOOGLE_WALLET_API_URL": os.environ.get("GOOGLE_WALLET_API_URL", ""),
        "GOOGLE_OAUTH_TOKEN_URL": os.environ.get("GOOGLE_OAUTH_TOKEN_URL", ""),
        "GOOGLE_WALLET_ORIGINS": os.environ.get("GOOGLE_WALLET_ORIGINS", ""),
        # Publish pass changes and send pushes on a background thread in each app process.
        "PASS_UPDATE_WORKER": os.environ.get("PASS_UPDATE_WORKER", "1") == "1",
        # The bare reference endpoint that bench/ compares purchases with; off unless asked for.
        "BENCH_REFERENCE_ENDPOINT": os.environ.get("BENCH_REFERENCE_ENDPOINT", "0") == "1",
    }
