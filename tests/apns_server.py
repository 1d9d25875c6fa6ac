"""A local stand-in for Apple Push Notification service, for the tests of `passes.apns`.

`LocalApns` listens on 127.0.0.1 with TLS and HTTP/2 (the h2 library, one thread per connection), checks each
request the way APNs documents it (POST /3/device/<hex token>, an apns-topic, a JSON object body, valid push
type and priority) and authenticates it the way APNs does: either a provider token, verified with PyJWT as an
independent ES256 implementation, or a TLS client certificate that must chain to a given CA. It records every
request, answers 200 with an apns-id unless a test scripted other answers with `respond`, and counts the TLS
connections it accepted so tests can see that the client reuses one.

`ThrowawayCA` makes the certificates: the server's own for localhost/127.0.0.1, and client certificates for the
certificate-auth tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import select
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# How often idle threads look up to see whether the server is closing.
_POLL_SECONDS = 0.05
# APNs: a provider token older than an hour is refused with ExpiredProviderToken.
_TOKEN_MAX_AGE_SECONDS = 3600
_MAX_PAYLOAD_BYTES = 4096
_PUSH_TYPES = frozenset(
    {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity", "pushtotalk"}
)
_DEFAULT_REASONS = {
    400: "BadDeviceToken",
    403: "InvalidProviderToken",
    404: "BadPath",
    405: "MethodNotAllowed",
    410: "Unregistered",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}
_DEVICE_PATH = re.compile(r"/3/device/([^/?#]*)")
_HEX = re.compile(r"[0-9A-Fa-f]+")


class ThrowawayCA:
    """A certificate authority that lives for one test: an EC P-256 key and a self-signed CA certificate."""

    def __init__(self, name: str) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        public_key = self._key.public_key()
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        *,
        server_names: Iterable[str] = (),
        client: bool = False,
        password: bytes | None = None,
    ) -> tuple[bytes, bytes]:
        """A leaf certificate and its PKCS#8 key, both PEM; the key is encrypted when `password` is given.

        `server_names` (host names or IP addresses) make a TLS server certificate; `client=True` a client one.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        names = list(server_names)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), False)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if names else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@dataclass(frozen=True)
class ReceivedPush:
    """One request as the server saw it, with the answer it gave.

    `headers` holds every header with lower-case names, the HTTP/2 pseudo-headers (":method", ":path") included.
    `authorized` says whether the request passed authentication. `connection` numbers the TLS connection it came
    on, from 1.
    """

    device_token: str
    headers: dict[str, str]
    body: bytes
    authorized: bool
    status: int
    apns_id: str
    connection: int


class LocalApns:
    """An HTTP/2 server on 127.0.0.1 that answers APNs requests; a context manager that closes itself.

    Give it either the provider-token public key with the team and key IDs it expects, or the PEM of the CA
    that must have signed client certificates. `clock` dates provider tokens; share the client's fake clock
    with it to test token lifetimes.
    """

    def __init__(
        self,
        *,
        token_key_public_pem: bytes | None = None,
        team_id: str | None = None,
        key_id: str | None = None,
        client_ca_pem: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        token_mode = token_key_public_pem is not None
        if token_mode == (client_ca_pem is not None):
            raise ValueError("LocalApns needs exactly one of token_key_public_pem or client_ca_pem")
        if token_mode and (team_id is None or key_id is None):
            raise ValueError("token authentication needs team_id and key_id")
        self._token_key = serialization.load_pem_public_key(token_key_public_pem) if token_key_public_pem else None
        self._team_id = team_id
        self._key_id = key_id
        self._clock = clock

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._received: list[ReceivedPush] = []
        self._scripts: dict[str, deque[tuple[int, str | None]]] = {}
        self._connections = 0
        self._open_connections = 0
        self._drop_generation = 0
        self._handshake_failures: list[str] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._closed = False

        self._directory = tempfile.TemporaryDirectory(prefix="local-apns-")
        try:
            self._ssl_context = self._make_ssl_context(client_ca_pem)
            self._listener = socket.create_server(("127.0.0.1", 0))
        except BaseException:
            self._directory.cleanup()
            raise
        self._listener.settimeout(_POLL_SECONDS)
        self.port: int = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="local-apns-accept", daemon=True)
        self._accept_thread.start()

    # -- what tests use -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> str:
        """Path of the PEM CA certificate that signed this server's certificate, for the client's trust."""
        return str(Path(self._directory.name) / "ca.pem")

    @property
    def received(self) -> list[ReceivedPush]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._received)

    @property
    def connections(self) -> int:
        """How many TLS connections completed their handshake."""
        with self._lock:
            return self._connections

    @property
    def handshake_failures(self) -> list[str]:
        """The errors of TLS handshakes the server refused or that broke off (a bad client certificate...)."""
        with self._lock:
            return list(self._handshake_failures)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedPush]:
        """Block until at least `count` requests have arrived and return them; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"LocalApns received {len(self._received)} requests, expected {count}")
                self._changed.wait(remaining)
            return list(self._received)

    def wait_for_handshake_failures(self, count: int, timeout: float = 5.0) -> list[str]:
        """Block until at least `count` TLS handshakes failed and return their errors; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._handshake_failures) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self._handshake_failures)} handshakes failed, expected {count}")
                self._changed.wait(remaining)
            return list(self._handshake_failures)

    def drop_connections(self, timeout: float = 5.0) -> None:
        """End every open connection with an HTTP/2 GOAWAY, as APNs does to idle ones, and wait until they are
        closed; the server keeps accepting new connections."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._drop_generation += 1
            while self._open_connections:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self._open_connections} connections still open")
                self._changed.wait(remaining)

    def respond(self, device_token: str, *answers: int | tuple[int, str]) -> None:
        """Script the next answers for `device_token`, in order; afterwards it gets 200 again.

        An answer is a status (the reason is APNs' usual one for it, e.g. 410 Unregistered) or (status, reason).
        Scripted answers apply only to requests that pass the format and authentication checks.
        """
        scripted = [
            answer if isinstance(answer, tuple) else (answer, _DEFAULT_REASONS.get(answer)) for answer in answers
        ]
        with self._lock:
            self._scripts.setdefault(device_token.lower(), deque()).extend(scripted)

    def close(self) -> None:
        """Stop accepting, end every connection, wait for all threads and remove the certificate files."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._accept_thread.join()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join()
        self._directory.cleanup()

    def __enter__(self) -> LocalApns:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- TLS and connections --------------------------------------------------------------------------------

    def _make_ssl_context(self, client_ca_pem: bytes | None) -> ssl.SSLContext:
        authority = ThrowawayCA("LocalApns test CA")
        cert_pem, key_pem = authority.issue("localhost", server_names=["localhost", "127.0.0.1"])
        directory = Path(self._directory.name)
        (directory / "ca.pem").write_bytes(authority.cert_pem)
        (directory / "server.pem").write_bytes(cert_pem + key_pem)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(directory / "server.pem")
        context.set_alpn_protocols(["h2"])
        if client_ca_pem is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
        return context

    def _accept_loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    raw, _ = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                thread = threading.Thread(target=self._serve, args=(raw,), name="local-apns-conn", daemon=True)
                with self._lock:
                    self._threads.append(thread)
                thread.start()
        finally:
            self._listener.close()

    def _serve(self, raw: socket.socket) -> None:
        # Blocking with a timeout: the handshake and writes must not hang a test; reads wait in select() below.
        raw.settimeout(5.0)
        to_close: socket.socket = raw
        try:
            tls = self._ssl_context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            to_close = tls
            try:
                tls.do_handshake()
            except (ssl.SSLError, OSError) as error:
                with self._changed:
                    self._handshake_failures.append(str(error))
                    self._changed.notify_all()
                return
            with self._lock:
                self._connections += 1
                self._open_connections += 1
                number = self._connections
                generation = self._drop_generation
            try:
                self._speak_http2(tls, number, generation)
            finally:
                tls.close()
                with self._changed:
                    self._open_connections -= 1
                    self._changed.notify_all()
        finally:
            to_close.close()

    def _speak_http2(self, tls: ssl.SSLSocket, number: int, generation: int) -> None:
        connection = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        connection.initiate_connection()
        tls.sendall(connection.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while not self._stop.is_set() and generation == self._drop_generation:
                if not tls.pending() and not select.select([tls], [], [], _POLL_SECONDS)[0]:
                    continue
                data = tls.recv(65536)
                if not data:
                    return
                try:
                    events = connection.receive_data(data)
                except h2.exceptions.ProtocolError:
                    tls.sendall(connection.data_to_send())
                    return
                terminated = False
                for event in events:
                    if isinstance(event, h2.events.RequestReceived) and event.stream_id is not None:
                        headers = {str(name): str(value) for name, value in event.headers or []}
                        streams[event.stream_id] = (headers, bytearray())
                    elif isinstance(event, h2.events.DataReceived) and event.stream_id in streams:
                        streams[event.stream_id][1].extend(event.data or b"")
                        connection.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id in streams:
                        headers, body = streams.pop(event.stream_id)
                        self._answer(connection, event.stream_id, headers, bytes(body), number)
                    elif isinstance(event, h2.events.StreamReset):
                        streams.pop(event.stream_id or 0, None)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        terminated = True
                tls.sendall(connection.data_to_send())
                if terminated:
                    return
            # Closing or dropped: say goodbye the HTTP/2 way so the client sends nothing more on this connection.
            connection.close_connection()
            tls.sendall(connection.data_to_send())
        except (ssl.SSLError, OSError):
            return

    # -- what APNs would say --------------------------------------------------------------------------------

    def _answer(
        self, connection: h2.connection.H2Connection, stream_id: int, headers: dict[str, str], body: bytes, number: int
    ) -> None:
        match = _DEVICE_PATH.fullmatch(headers.get(":path", ""))
        device_token = match.group(1) if match else ""
        authentication_failure = self._authentication_failure(headers.get("authorization"))
        status, reason = self._check_request(headers, body, device_token, match is not None, authentication_failure)
        if status == 200:
            with self._lock:
                script = self._scripts.get(device_token.lower())
                if script:
                    status, reason = script.popleft()

        apns_id = headers.get("apns-id") or str(uuid.uuid4()).upper()
        response_headers = [(":status", str(status)), ("apns-id", apns_id)]
        if status == 200:
            connection.send_headers(stream_id, response_headers, end_stream=True)
        else:
            error: dict[str, str | int] = {"reason": reason or ""}
            if status == 410:
                error["timestamp"] = int(self._clock() * 1000)
            payload = json.dumps(error).encode()
            response_headers += [("content-type", "application/json"), ("content-length", str(len(payload)))]
            connection.send_headers(stream_id, response_headers)
            connection.send_data(stream_id, payload, end_stream=True)

        push = ReceivedPush(
            device_token=device_token,
            headers=headers,
            body=body,
            authorized=authentication_failure is None,
            status=status,
            apns_id=apns_id,
            connection=number,
        )
        with self._changed:
            self._received.append(push)
            self._changed.notify_all()

    def _check_request(
        self,
        headers: dict[str, str],
        body: bytes,
        device_token: str,
        path_matches: bool,
        authentication_failure: str | None,
    ) -> tuple[int, str | None]:
        if headers.get(":method") != "POST":
            return 405, "MethodNotAllowed"
        if not path_matches:
            return 404, "BadPath"
        if not _HEX.fullmatch(device_token):
            return 400, "BadDeviceToken"
        if authentication_failure is not None:
            return 403, authentication_failure
        if not headers.get("apns-topic"):
            return 400, "MissingTopic"
        push_type = headers.get("apns-push-type")
        if push_type is not None and push_type not in _PUSH_TYPES:
            return 400, "InvalidPushType"
        priority = headers.get("apns-priority")
        if priority is not None and priority not in {"1", "5", "10"}:
            return 400, "BadPriority"
        # Apple's header reference: a background push must use priority 5; priority 10 with it is an error.
        if push_type == "background" and priority == "10":
            return 400, "BadPriority"
        if not body:
            return 400, "PayloadEmpty"
        if len(body) > _MAX_PAYLOAD_BYTES:
            return 413, "PayloadTooLarge"
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, "BadPayload"
        if not isinstance(payload, dict):
            return 400, "BadPayload"
        return 200, None

    def _authentication_failure(self, authorization: str | None) -> str | None:
        """None when the request is authenticated, else the APNs reason for refusing it."""
        if self._token_key is None:
            # Certificate mode: the TLS handshake already required a certificate from the expected CA.
            return None
        if not authorization:
            return "MissingProviderToken"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "InvalidProviderToken"
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self._token_key,  # type: ignore[arg-type]
                algorithms=["ES256"],
                issuer=self._team_id,
                # The age check below uses this server's clock, which tests may have moved, not PyJWT's.
                options={"require": ["iss", "iat"], "verify_iat": False},
            )
        except jwt.PyJWTError:
            return "InvalidProviderToken"
        if header.get("kid") != self._key_id:
            return "InvalidProviderToken"
        issued_at = claims.get("iat")
        if not isinstance(issued_at, int):
            return "InvalidProviderToken"
        age = self._clock() - issued_at
        if age > _TOKEN_MAX_AGE_SECONDS:
            return "ExpiredProviderToken"
        if age < -60:
            return "InvalidProviderToken"
        return None


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
