"""The APNs client for Wallet pass updates, against a local HTTP/2 server that checks requests like APNs.

Provider tokens are verified on the server side by PyJWT, an implementation independent of the client's own
ES256 signing; client certificates by OpenSSL's handshake against a CA the test made.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from passes.apns import ApnsClient, CertificateAuth, PushResult, TokenAuth
from tests.apns_server import LocalApns, ThrowawayCA

TEAM_ID = "TEAM123456"
KEY_ID = "KEY1234567"
TOPIC = "pass.com.example.loyalty"
DEVICE = "0123456789abcdef" * 4
START = 1_700_000_000.0


class FakeClock:
    """A clock the test moves by hand; the client and the server can share one."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def token_auth(signing_key: ec.EllipticCurvePrivateKey) -> TokenAuth:
    key_pem = signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return TokenAuth(key_pem=key_pem, key_id=KEY_ID, team_id=TEAM_ID)


@pytest.fixture(scope="module")
def public_pem(signing_key: ec.EllipticCurvePrivateKey) -> bytes:
    return signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def token_server(public_pem: bytes, clock: FakeClock) -> LocalApns:
    return LocalApns(token_key_public_pem=public_pem, team_id=TEAM_ID, key_id=KEY_ID, clock=clock)


def client_for(apns: LocalApns, auth: TokenAuth | CertificateAuth, clock: FakeClock | None = None) -> ApnsClient:
    return ApnsClient(auth, base_url=apns.url, ca_file=apns.ca_file, clock=clock or FakeClock())


def bearer_token(headers: dict[str, str]) -> str:
    scheme, _, token = headers["authorization"].partition(" ")
    assert scheme == "bearer"
    return token


# -- the request ---------------------------------------------------------------------------------------------


def test_token_push_is_delivered_with_the_documented_request(token_auth: TokenAuth, public_pem: bytes) -> None:
    clock = FakeClock()
    with token_server(public_pem, clock) as apns, client_for(apns, token_auth, clock) as client:
        result = client.push_pass_update(DEVICE, TOPIC)
        (push,) = apns.wait_for(1)

    assert result == PushResult(200, None, push.apns_id)
    assert result.delivered and not result.retryable and not result.unregistered
    assert push.authorized
    assert push.headers[":method"] == "POST"
    assert push.headers[":scheme"] == "https"
    assert push.headers[":path"] == f"/3/device/{DEVICE}"
    assert {name: value for name, value in push.headers.items() if name.startswith("apns-")} == {
        "apns-topic": TOPIC,
        "apns-push-type": "background",
        "apns-priority": "5",
    }
    assert push.headers["content-type"] == "application/json"
    assert push.body == b"{}"

    token = bearer_token(push.headers)
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": KEY_ID}
    claims = jwt.decode(token, public_pem, algorithms=["ES256"], options={"verify_iat": False})
    assert claims == {"iss": TEAM_ID, "iat": int(START)}
    # JWS compact form: unpadded base64url, and a raw 64-byte r||s signature rather than DER.
    assert "=" not in token
    assert len(base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "==")) == 64


def test_provider_token_is_reused_for_50_minutes_then_replaced(token_auth: TokenAuth, public_pem: bytes) -> None:
    clock = FakeClock()
    with token_server(public_pem, clock) as apns, client_for(apns, token_auth, clock) as client:
        first = client.push_pass_update(DEVICE, TOPIC)
        clock.advance(50 * 60 - 1)
        second = client.push_pass_update(DEVICE, TOPIC)
        clock.advance(1)
        third = client.push_pass_update(DEVICE, TOPIC)
        pushes = apns.wait_for(3)

    assert first.delivered and second.delivered and third.delivered
    assert all(push.authorized for push in pushes)
    tokens = [bearer_token(push.headers) for push in pushes]
    assert tokens[0] == tokens[1]
    assert tokens[2] != tokens[1]
    claims = jwt.decode(tokens[2], public_pem, algorithms=["ES256"], options={"verify_iat": False})
    assert claims["iat"] == int(START) + 50 * 60


def test_expired_provider_token_is_retryable_and_the_next_push_signs_a_new_one(
    token_auth: TokenAuth, public_pem: bytes
) -> None:
    # The provider's clock runs 51 minutes behind APNs', so a token it still trusts is over an hour old to APNs.
    client_clock, server_clock = FakeClock(), FakeClock()
    with token_server(public_pem, server_clock) as apns, client_for(apns, token_auth, client_clock) as client:
        assert client.push_pass_update(DEVICE, TOPIC).delivered
        client_clock.advance(10 * 60)
        server_clock.advance(61 * 60)
        refused = client.push_pass_update(DEVICE, TOPIC)
        retried = client.push_pass_update(DEVICE, TOPIC)
        pushes = apns.wait_for(3)

    assert (refused.status, refused.reason) == (403, "ExpiredProviderToken")
    assert refused.retryable and not refused.delivered
    assert retried.delivered
    tokens = [bearer_token(push.headers) for push in pushes]
    assert tokens[1] == tokens[0]
    assert tokens[2] != tokens[1]
    claims = jwt.decode(tokens[2], public_pem, algorithms=["ES256"], options={"verify_iat": False})
    assert claims["iat"] == int(START) + 10 * 60


def test_token_signed_with_another_key_is_refused_for_good(token_auth: TokenAuth, public_pem: bytes) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    wrong_auth = TokenAuth(key_pem=stranger, key_id=KEY_ID, team_id=TEAM_ID)
    with token_server(public_pem, FakeClock()) as apns, client_for(apns, wrong_auth) as client:
        result = client.push_pass_update(DEVICE, TOPIC)
        (push,) = apns.wait_for(1)

    assert (result.status, result.reason) == (403, "InvalidProviderToken")
    assert not result.retryable and not result.delivered
    assert not push.authorized


# -- what APNs answers ---------------------------------------------------------------------------------------


def test_unregistered_device_tells_the_caller_to_drop_the_registration(
    token_auth: TokenAuth, public_pem: bytes
) -> None:
    with token_server(public_pem, FakeClock()) as apns, client_for(apns, token_auth) as client:
        apns.respond(DEVICE, 410)
        result = client.push_pass_update(DEVICE, TOPIC)
        (push,) = apns.wait_for(1)

    assert result == PushResult(410, "Unregistered", push.apns_id)
    assert result.unregistered and not result.retryable and not result.delivered


@pytest.mark.parametrize(
    ("status", "reason"),
    [(500, "InternalServerError"), (503, "ServiceUnavailable"), (429, "TooManyRequests")],
)
def test_server_trouble_and_throttling_are_retryable(
    token_auth: TokenAuth, public_pem: bytes, status: int, reason: str
) -> None:
    with token_server(public_pem, FakeClock()) as apns, client_for(apns, token_auth) as client:
        apns.respond(DEVICE, status, 200)
        first = client.push_pass_update(DEVICE, TOPIC)
        second = client.push_pass_update(DEVICE, TOPIC)

    assert (first.status, first.reason) == (status, reason)
    assert first.retryable and not first.delivered and not first.unregistered
    assert second.delivered


def test_bad_device_token_from_apns_is_permanent(token_auth: TokenAuth, public_pem: bytes) -> None:
    with token_server(public_pem, FakeClock()) as apns, client_for(apns, token_auth) as client:
        apns.respond(DEVICE, 400)
        result = client.push_pass_update(DEVICE, TOPIC)

    assert (result.status, result.reason) == (400, "BadDeviceToken")
    assert not result.retryable and not result.unregistered and not result.delivered


@pytest.mark.parametrize(
    ("status", "reason", "delivered", "unregistered", "retryable"),
    [
        (200, None, True, False, False),
        (410, "Unregistered", False, True, False),
        (410, "ExpiredToken", False, True, False),
        (0, "timed out", False, False, True),
        (429, "TooManyProviderTokenUpdates", False, False, True),
        (500, "InternalServerError", False, False, True),
        (503, "ServiceUnavailable", False, False, True),
        (403, "ExpiredProviderToken", False, False, True),
        (403, "InvalidProviderToken", False, False, False),
        (403, "BadCertificateEnvironment", False, False, False),
        (400, "BadDeviceToken", False, False, False),
        (400, "TopicDisallowed", False, False, False),
        (413, "PayloadTooLarge", False, False, False),
    ],
)
def test_push_result_outcomes(
    status: int, reason: str | None, delivered: bool, unregistered: bool, retryable: bool
) -> None:
    result = PushResult(status, reason, None)
    assert (result.delivered, result.unregistered, result.retryable) == (delivered, unregistered, retryable)


# -- input that must never reach the network -----------------------------------------------------------------


@pytest.mark.parametrize(
    "device_token",
    ["", "xyz", "ab cd", "ab\n", "ab/../cd", "../3/device/ab", "ab?x=1", "ab#x", "ab%2F", "é1", "a" * 201],
)
def test_invalid_device_token_is_never_sent(token_auth: TokenAuth, public_pem: bytes, device_token: str) -> None:
    with token_server(public_pem, FakeClock()) as apns, client_for(apns, token_auth) as client:
        result = client.push_pass_update(device_token, TOPIC)
        assert client.push_pass_update(DEVICE, TOPIC).delivered
        (only,) = apns.wait_for(1)

    assert result == PushResult(400, "BadDeviceToken", None)
    assert not result.retryable
    assert only.device_token == DEVICE
    assert len(apns.received) == 1


@pytest.mark.parametrize(
    ("topic", "reason"),
    [("", "MissingTopic"), ("pass.com.example\r\nx-evil: 1", "BadTopic"), ("pass com", "BadTopic"), ("/p", "BadTopic")],
)
def test_invalid_topic_is_never_sent(token_auth: TokenAuth, public_pem: bytes, topic: str, reason: str) -> None:
    with token_server(public_pem, FakeClock()) as apns, client_for(apns, token_auth) as client:
        result = client.push_pass_update(DEVICE, topic)
        assert client.push_pass_update(DEVICE, TOPIC).delivered
        apns.wait_for(1)

    assert result == PushResult(400, reason, None)
    assert len(apns.received) == 1


# -- certificate authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize("password", [None, b"correct horse"])
def test_pass_type_certificate_from_the_expected_ca_is_accepted(password: bytes | None) -> None:
    pass_ca = ThrowawayCA("Pass Type ID test CA")
    cert_pem, key_pem = pass_ca.issue(f"Pass Type ID: {TOPIC}", client=True, password=password)
    auth = CertificateAuth(cert_pem=cert_pem, key_pem=key_pem, password=password)
    with LocalApns(client_ca_pem=pass_ca.cert_pem) as apns, client_for(apns, auth) as client:
        result = client.push_pass_update(DEVICE, TOPIC)
        (push,) = apns.wait_for(1)

    assert result.delivered
    assert push.authorized
    assert "authorization" not in push.headers
    assert push.body == b"{}"
    assert apns.handshake_failures == []


def test_certificate_from_another_ca_is_refused_at_the_handshake() -> None:
    pass_ca, stranger_ca = ThrowawayCA("Pass Type ID test CA"), ThrowawayCA("Someone else's CA")
    cert_pem, key_pem = stranger_ca.issue(f"Pass Type ID: {TOPIC}", client=True)
    auth = CertificateAuth(cert_pem=cert_pem, key_pem=key_pem)
    with LocalApns(client_ca_pem=pass_ca.cert_pem) as apns, client_for(apns, auth) as client:
        result = client.push_pass_update(DEVICE, TOPIC)
        failures = apns.wait_for_handshake_failures(1)

    assert result.status == 0 and result.retryable and not result.delivered
    assert result.reason
    assert "certificate" in failures[0].lower()
    assert apns.received == []
    assert apns.connections == 0


def test_no_client_certificate_is_refused_at_the_handshake(token_auth: TokenAuth) -> None:
    pass_ca = ThrowawayCA("Pass Type ID test CA")
    with LocalApns(client_ca_pem=pass_ca.cert_pem) as apns, client_for(apns, token_auth) as client:
        result = client.push_pass_update(DEVICE, TOPIC)
        apns.wait_for_handshake_failures(1)

    assert result.status == 0 and result.reason
    assert apns.received == []


def test_unusable_credentials_fail_when_the_client_is_built(tmp_path: Path) -> None:
    authority = ThrowawayCA("Pass Type ID test CA")
    cert_pem, encrypted_key = authority.issue("Pass Type ID", client=True, password=b"secret")
    _, other_key = authority.issue("Another", client=True)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(authority.cert_pem)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    unusable: list[TokenAuth | CertificateAuth] = [
        CertificateAuth(cert_pem=cert_pem, key_pem=encrypted_key),  # no password: never an OpenSSL prompt
        CertificateAuth(cert_pem=cert_pem, key_pem=encrypted_key, password=b"wrong"),
        CertificateAuth(cert_pem=cert_pem, key_pem=other_key),
        TokenAuth(key_pem=rsa_key, key_id=KEY_ID, team_id=TEAM_ID),
        TokenAuth(key_pem=b"not a key", key_id=KEY_ID, team_id=TEAM_ID),
    ]
    for auth in unusable:
        with pytest.raises(ValueError):
            ApnsClient(auth, base_url="https://127.0.0.1:9", ca_file=str(ca_file))


# -- the connection ------------------------------------------------------------------------------------------


def test_one_connection_carries_many_pushes(token_auth: TokenAuth, public_pem: bytes) -> None:
    devices = [f"{number:064x}" for number in range(50)]
    with token_server(public_pem, FakeClock()) as apns, client_for(apns, token_auth) as client:
        results = [client.push_pass_update(device, TOPIC) for device in devices]
        pushes = apns.wait_for(50)

    assert all(result.delivered for result in results)
    assert [push.device_token for push in pushes] == devices
    assert apns.connections == 1
    assert {push.connection for push in pushes} == {1}


def test_connection_closed_by_apns_while_idle_costs_no_push(token_auth: TokenAuth, public_pem: bytes) -> None:
    with token_server(public_pem, FakeClock()) as apns, client_for(apns, token_auth) as client:
        assert client.push_pass_update(DEVICE, TOPIC).delivered
        apns.drop_connections()
        result = client.push_pass_update(DEVICE, TOPIC)
        pushes = apns.wait_for(2)

    assert result.delivered
    assert apns.connections == 2
    assert [push.connection for push in pushes] == [1, 2]


def test_server_gone_is_status_zero_not_an_exception(token_auth: TokenAuth, public_pem: bytes) -> None:
    with token_server(public_pem, FakeClock()) as apns:
        client = client_for(apns, token_auth)
    with client:
        result = client.push_pass_update(DEVICE, TOPIC)

    assert result.status == 0 and result.retryable and result.apns_id is None
    assert "refused" in (result.reason or "").lower()


def test_server_closing_a_used_connection_is_status_zero(token_auth: TokenAuth, public_pem: bytes) -> None:
    with token_server(public_pem, FakeClock()) as apns:
        client = client_for(apns, token_auth)
        assert client.push_pass_update(DEVICE, TOPIC).delivered
    with client:
        result = client.push_pass_update(DEVICE, TOPIC)

    assert result.status == 0 and result.retryable and result.reason


def test_silent_server_times_out_as_status_zero(token_auth: TokenAuth, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ThrowawayCA("unused").cert_pem)
    # Listening but never accepting: TCP connects, the TLS handshake never gets an answer.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        with ApnsClient(token_auth, base_url=f"https://127.0.0.1:{port}", ca_file=str(ca_file), timeout=0.2) as client:
            result = client.push_pass_update(DEVICE, TOPIC)

    assert result.status == 0 and result.retryable and result.reason


def test_client_refuses_plain_http_base_url(token_auth: TokenAuth) -> None:
    with pytest.raises(ValueError, match="https"):
        ApnsClient(token_auth, base_url="http://api.push.apple.com")


def test_local_apns_leaves_no_threads_behind(token_auth: TokenAuth, public_pem: bytes) -> None:
    with token_server(public_pem, FakeClock()) as apns, client_for(apns, token_auth) as client:
        assert client.push_pass_update(DEVICE, TOPIC).delivered
        assert any(thread.name.startswith("local-apns") for thread in threading.enumerate())

    assert not any(thread.name.startswith("local-apns") for thread in threading.enumerate())


# -- the stand-in itself checks what APNs checks -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "reason"),
    [
        ("POST", f"/3/device/{DEVICE}", {}, b"{}", 200, None),
        ("GET", f"/3/device/{DEVICE}", {}, b"", 405, "MethodNotAllowed"),
        ("POST", f"/3/devices/{DEVICE}", {}, b"{}", 404, "BadPath"),
        ("POST", "/3/device/not-hex", {}, b"{}", 400, "BadDeviceToken"),
        ("POST", f"/3/device/{DEVICE}", {"authorization": None}, b"{}", 403, "MissingProviderToken"),
        ("POST", f"/3/device/{DEVICE}", {"authorization": "bearer x.y.z"}, b"{}", 403, "InvalidProviderToken"),
        ("POST", f"/3/device/{DEVICE}", {"apns-topic": None}, b"{}", 400, "MissingTopic"),
        ("POST", f"/3/device/{DEVICE}", {"apns-priority": "10"}, b"{}", 400, "BadPriority"),
        ("POST", f"/3/device/{DEVICE}", {"apns-push-type": "loud"}, b"{}", 400, "InvalidPushType"),
        ("POST", f"/3/device/{DEVICE}", {}, b"", 400, "PayloadEmpty"),
        ("POST", f"/3/device/{DEVICE}", {}, b"[]", 400, "BadPayload"),
        ("POST", f"/3/device/{DEVICE}", {}, b"{", 400, "BadPayload"),
        ("POST", f"/3/device/{DEVICE}", {}, b'{"x":"' + b"y" * 4096 + b'"}', 413, "PayloadTooLarge"),
    ],
)
def test_local_apns_checks_requests_like_apns(
    signing_key: ec.EllipticCurvePrivateKey,
    public_pem: bytes,
    method: str,
    path: str,
    headers: dict[str, str | None],
    body: bytes,
    status: int,
    reason: str | None,
) -> None:
    token = jwt.encode({"iss": TEAM_ID, "iat": int(START)}, signing_key, algorithm="ES256", headers={"kid": KEY_ID})
    request_headers: dict[str, str | None] = {
        "authorization": f"bearer {token}",
        "apns-topic": TOPIC,
        "apns-push-type": "background",
        "apns-priority": "5",
    }
    request_headers.update(headers)
    sent = {name: value for name, value in request_headers.items() if value is not None}
    with token_server(public_pem, FakeClock()) as apns:
        context = ssl.create_default_context(cafile=apns.ca_file)
        with httpx.Client(http1=False, http2=True, verify=context, trust_env=False) as raw:
            response = raw.request(method, f"{apns.url}{path}", headers=sent, content=body)

    assert response.status_code == status
    assert response.headers["apns-id"]
    assert (response.json()["reason"] if status != 200 else None) == reason
