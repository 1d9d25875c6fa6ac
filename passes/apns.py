"""Apple Push Notification service client that tells devices a Wallet pass has changed.

For the issuer's update job: after a card's pass changes, it calls `ApnsClient.push_pass_update` once per
registered device push token and acts on the `PushResult` (delete the registration when `unregistered`, try
again later when `retryable`, log anything else). The push only wakes Wallet; the device then asks the pass web
service for the serial numbers that changed and downloads the new pass.

The request follows Apple's documents:

- Wallet Developer Guide, "Updating a Pass", and WalletPasses, "Adding a Web Service to Update Passes": the
  payload is an empty JSON dictionary and the topic is the pass type identifier. The credential is the Pass
  Type ID certificate, or a provider token signed with a key of the same team. Wallet listens on production
  APNs, hence the default `base_url`.
- User Notifications, "Sending notification requests to APNs": HTTP/2 `POST /3/device/<token>`, the
  `apns-push-type`, `apns-priority` and `authorization: bearer <ES256 JWT>` headers, the error reasons, and the
  advice to keep one connection open for many notifications.

Nothing here reads configuration or the environment: keys and certificates arrive as bytes, and network
failures come back as a `PushResult` with status 0 rather than as exceptions.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = ["ApnsClient", "CertificateAuth", "PushResult", "TokenAuth"]

PRODUCTION_URL = "https://api.push.apple.com"

# A pass update carries no information: Wallet ignores the payload and fetches the changes from the web service.
# Apple: "Send a push notification with an empty JSON dictionary as its payload."
PASS_UPDATE_PAYLOAD = b"{}"

# The push shows nothing by itself (any lock-screen message comes from the new pass's changeMessage, which Wallet
# displays after the download), so it is a background push in APNs' terms. APNs documents that a background push
# must use priority 5 and that priority 10 with it is an error. Priority 5 lets APNs batch delivery around the
# device's power state; a balance that shows up a little later is fine for a loyalty card.
PASS_UPDATE_PUSH_TYPE = "background"
PASS_UPDATE_PRIORITY = "5"
# No apns-expiration header: APNs then stores a push it cannot deliver yet (one per topic and device) and hands it
# over when the device is back, which is what an update wants. A late "something changed" costs the device one
# request to the web service, which answers that nothing is new.

# APNs refuses provider tokens older than an hour and answers TooManyProviderTokenUpdates to a provider that
# signs new ones more often than every 20 minutes, so one token serves for 50 minutes.
TOKEN_LIFETIME_SECONDS = 50 * 60

# APNs device tokens are hexadecimal (64 digits today; Apple warns the length may change). Checking them before
# they reach the URL keeps a path like "../" or a query string out of the request.
_DEVICE_TOKEN = re.compile(r"[0-9A-Fa-f]{1,200}")
# Pass type identifiers are reverse-DNS strings ("pass.com.example.loyalty"); anything else would be a header
# injection or a certain BadTopic.
_TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")

_RETRYABLE_STATUSES = frozenset({0, 429, 500, 503})


@dataclass(frozen=True)
class TokenAuth:
    """Provider-token credentials: the .p8 signing key Apple issues, its Key ID and the Team ID.

    `key_pem` is the PKCS#8 PEM of an EC P-256 private key, exactly as downloaded from the developer account.
    """

    key_pem: bytes = field(repr=False)
    key_id: str
    team_id: str


@dataclass(frozen=True)
class CertificateAuth:
    """TLS client-certificate credentials: the Pass Type ID certificate (PEM, chain allowed) and its key.

    `password` decrypts `key_pem` when the key is encrypted; leave it None for an unencrypted key.
    """

    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    password: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PushResult:
    """What APNs said about one push, or status 0 when no answer arrived (connection failure or timeout).

    `reason` is APNs' error reason ("BadDeviceToken", "Unregistered", ...) or the network error's text; it is
    None on success. `apns_id` is the identifier APNs gave the notification, when it answered.
    """

    status: int
    reason: str | None
    apns_id: str | None

    @property
    def delivered(self) -> bool:
        """APNs accepted the push for delivery."""
        return self.status == 200

    @property
    def unregistered(self) -> bool:
        """The device token is no longer valid: the caller should delete that device's registration."""
        return self.status == 410

    @property
    def retryable(self) -> bool:
        """Sending the same push again later may succeed; anything else not delivered is permanent."""
        if self.status in _RETRYABLE_STATUSES:
            return True
        # The client has already dropped the stale token, so the next attempt signs a fresh one.
        return self.status == 403 and self.reason == "ExpiredProviderToken"


class ApnsClient:
    """Sends Wallet pass-update pushes to APNs over one long-lived HTTP/2 connection.

    Build one per credential and keep it for the life of the worker: APNs asks providers to reuse connections
    rather than open one per notification. Use it as a context manager or call `close()`. `ca_file` replaces
    the public trust store (tests point it at a local server's CA); `clock` returns Unix seconds and dates the
    provider tokens. Bad keys or certificates raise ValueError here, not at push time.
    """

    def __init__(
        self,
        auth: TokenAuth | CertificateAuth,
        *,
        base_url: str = PRODUCTION_URL,
        ca_file: str | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not base_url.startswith("https://"):
            raise ValueError(f"APNs base_url must be an https:// URL, got {base_url!r}")
        self._base_url = base_url.rstrip("/")
        self._clock = clock
        self._token_auth: TokenAuth | None = None
        self._signing_key: ec.EllipticCurvePrivateKey | None = None
        self._token: tuple[str, float] | None = None
        self._token_lock = threading.Lock()

        if ca_file is not None:
            ssl_context = ssl.create_default_context(cafile=ca_file)
        else:
            # certifi's bundle, and deliberately not SSL_CERT_FILE and friends: this library reads no settings.
            ssl_context = httpx.create_ssl_context(trust_env=False)

        if isinstance(auth, TokenAuth):
            self._token_auth = auth
            self._signing_key = _load_signing_key(auth.key_pem)
        else:
            _load_client_certificate(ssl_context, auth)

        self._client = httpx.Client(
            verify=ssl_context,
            # APNs speaks only HTTP/2; with HTTP/1.1 switched off httpx never falls back to it.
            http1=False,
            http2=True,
            timeout=timeout,
            # Idle connections stay open, as APNs prefers; one that APNs closed meanwhile is replaced (see _post).
            limits=httpx.Limits(keepalive_expiry=None),
            # Proxy and certificate settings come from the caller, never from environment variables.
            trust_env=False,
        )

    def push_pass_update(self, device_token: str, topic: str) -> PushResult:
        """Tell the device with `device_token` that passes of type `topic` (the pass type identifier) changed.

        Invalid tokens and topics are answered locally, as APNs would (400 BadDeviceToken / BadTopic), without
        sending anything. Network failures come back as status 0.
        """
        if not _DEVICE_TOKEN.fullmatch(device_token):
            return PushResult(400, "BadDeviceToken", None)
        if not topic:
            return PushResult(400, "MissingTopic", None)
        if not _TOPIC.fullmatch(topic):
            return PushResult(400, "BadTopic", None)

        headers = {
            "apns-topic": topic,
            "apns-push-type": PASS_UPDATE_PUSH_TYPE,
            "apns-priority": PASS_UPDATE_PRIORITY,
            "content-type": "application/json",
        }
        token = self._current_token()
        if token is not None:
            headers["authorization"] = f"bearer {token}"

        try:
            response = self._post(f"{self._base_url}/3/device/{device_token}", headers)
        except (httpx.HTTPError, OSError) as error:
            return PushResult(0, str(error) or type(error).__name__, None)

        result = PushResult(response.status_code, _error_reason(response), response.headers.get("apns-id"))
        if result.status == 403 and result.reason == "ExpiredProviderToken" and token is not None:
            self._forget_token(token)
        return result

    def close(self) -> None:
        """Close the connection to APNs. Pushing afterwards raises RuntimeError."""
        self._client.close()

    def __enter__(self) -> ApnsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _post(self, url: str, headers: dict[str, str]) -> httpx.Response:
        try:
            return self._client.post(url, headers=headers, content=PASS_UPDATE_PAYLOAD)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            # APNs closes connections that sat idle, and httpx's HTTP/2 only notices when it next uses one, so the
            # first push after a quiet spell can hit a dead connection. The failed connection is discarded, and
            # the push is sent once more on a new one: sending a pass update twice is harmless (it carries
            # nothing; the device just asks the web service again), losing it is not. Timeouts and refused
            # connections are not retried here; they go back to the caller as status 0.
            return self._client.post(url, headers=headers, content=PASS_UPDATE_PAYLOAD)

    def _current_token(self) -> str | None:
        if self._token_auth is None or self._signing_key is None:
            return None
        with self._token_lock:
            now = self._clock()
            if self._token is None or now - self._token[1] >= TOKEN_LIFETIME_SECONDS:
                self._token = (_sign_provider_token(self._token_auth, self._signing_key, now), now)
            return self._token[0]

    def _forget_token(self, token: str) -> None:
        with self._token_lock:
            # Another thread may already have replaced it; only drop the one APNs refused.
            if self._token is not None and self._token[0] == token:
                self._token = None


def _load_signing_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"the APNs signing key is not an unencrypted PKCS#8 PEM key: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the APNs signing key must be an EC P-256 key (the .p8 file from Apple)")
    return key


def _load_client_certificate(ssl_context: ssl.SSLContext, auth: CertificateAuth) -> None:
    # Decrypting here first turns a missing or wrong password into a clear error; left to OpenSSL, a missing
    # password for an encrypted key would make it prompt on the terminal.
    try:
        serialization.load_pem_private_key(auth.key_pem, password=auth.password)
    except (ValueError, TypeError) as error:
        raise ValueError(f"the APNs client key cannot be loaded: {error}") from error

    # load_cert_chain only reads files. The file is private to this user (mkstemp makes it 0600), holds the key
    # as it was given (still encrypted if it was), and is deleted as soon as OpenSSL has read it.
    descriptor, path = tempfile.mkstemp(prefix="apns-client-", suffix=".pem")
    try:
        with os.fdopen(descriptor, "wb") as pem_file:
            pem_file.write(auth.cert_pem.rstrip(b"\n") + b"\n" + auth.key_pem)
        ssl_context.load_cert_chain(path, password=auth.password)
    except ssl.SSLError as error:
        raise ValueError(f"the APNs client certificate and key do not load together: {error}") from error
    finally:
        os.unlink(path)


def _sign_provider_token(auth: TokenAuth, key: ec.EllipticCurvePrivateKey, now: float) -> str:
    header: dict[str, str | int] = {"alg": "ES256", "kid": auth.key_id}
    claims: dict[str, str | int] = {"iss": auth.team_id, "iat": int(now)}
    signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}".encode("ascii")
    der_signature = key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
    # JWS (RFC 7518 section 3.4) wants the two 32-byte integers side by side, not cryptography's DER sequence.
    r, s = decode_dss_signature(der_signature)
    raw_signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input.decode('ascii')}.{_b64url(raw_signature)}"


def _b64url_json(value: dict[str, str | int]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _error_reason(response: httpx.Response) -> str | None:
    if response.status_code == 200:
        return None
    try:
        body = response.json()
    except ValueError:
        # Not APNs' JSON (a proxy or load balancer page): keep a little of it for the log.
        return response.text[:200] or None
    reason = body.get("reason") if isinstance(body, dict) else None
    return reason if isinstance(reason, str) else None
