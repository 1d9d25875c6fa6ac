"""A local stand-in for Google's OAuth 2.0 token endpoint and the Wallet REST API, for `passes.google` tests.

`LocalWallet` listens on 127.0.0.1 over plain HTTP/1.1 (keep-alive, one thread per connection) and behaves the
way Google documents:

- `POST /token` takes the JWT bearer grant (RFC 7523): form fields `grant_type` and `assertion`. The assertion
  is verified with PyJWT, an independent RS256 implementation, against the service account's public key: alg
  RS256, `kid` the key id, `iss` the account email, `aud` this endpoint's own URL, the Wallet `scope`, and an
  `iat`/`exp` at most an hour apart around the server's clock. The answer is {"access_token", "expires_in",
  "token_type": "Bearer"}; refusals are 400 {"error": "invalid_grant", ...} as Google sends them.
- Under `/walletobjects/v1`: `loyaltyClass` (POST insert, GET/PATCH by id) and `loyaltyObject` (POST insert,
  GET/PATCH by id, POST `{id}/addMessage`). Each call needs `Authorization: Bearer <a token it issued, not
  expired>` (else 401); each body is validated against the discovery document with `wallet_schema` (else 400
  with every problem). Classes and objects live in memory: insert answers 200 with the resource or 409 when the
  id exists; patch merges the fields sent, or 404; an object's class must exist.

Every API request is recorded (`requests`), token requests are counted (`token_requests`) and their verified
claims kept (`token_claims`). `fail_next(path, *statuses)` scripts answers for the next requests to a path (or
a path prefix); status 0 drops the connection without an answer. `revoke_tokens()` makes every issued token
invalid, as a revoked key or an early expiry would.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

from passes.google import WALLET_SCOPE, ServiceAccount
from tests.wallet_schema import validate

API_ROOT = "/walletobjects/v1"
TOKEN_PATH = "/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Google answers 3599 seconds for a service-account access token.
DEFAULT_TOKEN_LIFETIME = 3599
# How far in the future an assertion's iat may be, and how long it may live (Google: one hour at most).
_CLOCK_SKEW_SECONDS = 60
_MAX_ASSERTION_LIFETIME = 3600
_RESOURCE_ID = re.compile(r"[0-9]{1,19}\.[A-Za-z0-9._-]+")
_ROUTE = re.compile(r"/(loyaltyClass|loyaltyObject)(?:/([^/]+))?(/addMessage)?")
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_REQUIRED = {
    "LoyaltyClass": ("id", "issuerName", "programName", "reviewStatus", "programLogo"),
    "LoyaltyObject": ("id", "classId", "state"),
}
# Sentinel status for a scripted failure: close the connection without an answer.
DROP_CONNECTION = 0


@dataclass(frozen=True)
class RecordedRequest:
    """One request to the Wallet API as the server saw it; header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any


class LocalWallet:
    """Google's token endpoint and Wallet REST API for one service account, on 127.0.0.1.

    `clock` (Unix seconds) judges assertion times and token expiry; share a test's fake clock with the client.
    """

    def __init__(
        self,
        account: ServiceAccount,
        *,
        clock: Callable[[], float] = time.time,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
    ) -> None:
        self._public_key_pem = account.public_key_pem()
        self._client_email = account.client_email
        self._key_id = account.private_key_id
        self._clock = clock
        self._token_lifetime = token_lifetime
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._failures: list[tuple[str, deque[int]]] = []
        self.classes: dict[str, dict[str, Any]] = {}
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self.token_claims: list[dict[str, Any]] = []
        self.token_requests = 0

        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="local-google-wallet", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        """The Wallet API root, as WalletClient's `base_url`."""
        return f"http://127.0.0.1:{self._port}{API_ROOT}"

    @property
    def token_url(self) -> str:
        """The OAuth 2.0 token endpoint, as WalletClient's `token_url` (and the assertions' `aud`)."""
        return f"http://127.0.0.1:{self._port}{TOKEN_PATH}"

    @property
    def issued_tokens(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    def fail_next(self, path: str, *statuses: int) -> None:
        """Answer the next requests whose path starts with `path` with `statuses`, one each, in order.

        A path without a leading slash is relative to the API root ("loyaltyObject/1.x"); 0 drops the
        connection without an answer.
        """
        if not path.startswith("/"):
            path = f"{API_ROOT}/{path}"
        with self._lock:
            self._failures.append((path, deque(statuses)))

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (the API answers 401)."""
        with self._lock:
            self._tokens.clear()

    def api_requests(self, method: str | None = None) -> list[RecordedRequest]:
        """The recorded API requests, optionally only those with `method`."""
        with self._lock:
            return [request for request in self.requests if method is None or request.method == method]

    def close(self) -> None:
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LocalWallet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- request handling (called from the server's threads) ---------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        """The status and JSON answer for one request; status 0 means "drop the connection"."""
        path = urlsplit(target).path
        with self._lock:
            if path == TOKEN_PATH:
                self.token_requests += 1
            else:
                self.requests.append(RecordedRequest(method, path, headers, _json_or_none(body)))
            scripted = self._scripted_failure(path)
            if scripted is not None:
                return scripted, _google_error(scripted, "scripted failure") if scripted else None
            if path == TOKEN_PATH:
                return self._token(method, headers, body)
            if path == API_ROOT or path.startswith(API_ROOT + "/"):
                return self._api(method, path[len(API_ROOT):], headers, body)
            return 404, _google_error(404, f"no such path {path}")

    def _scripted_failure(self, path: str) -> int | None:
        for prefix, statuses in self._failures:
            if statuses and path.startswith(prefix):
                return statuses.popleft()
        return None

    def _token(self, method: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if method != "POST":
            return 405, {"error": "invalid_request", "error_description": "POST only"}
        if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return 400, {"error": "invalid_request", "error_description": "expected a form body"}
        form = parse_qs(body.decode("ascii", "replace"), keep_blank_values=True)
        if form.get("grant_type") != [JWT_BEARER_GRANT]:
            return 400, {"error": "unsupported_grant_type", "error_description": f"{form.get('grant_type')}"}
        assertions = form.get("assertion", [])
        if len(assertions) != 1:
            return 400, {"error": "invalid_request", "error_description": "one assertion expected"}
        refusal = self._verify_assertion(assertions[0])
        if refusal is not None:
            return 400, {"error": "invalid_grant", "error_description": refusal}
        token = secrets.token_urlsafe(24)
        self._tokens[token] = self._clock() + self._token_lifetime
        return 200, {"access_token": token, "expires_in": self._token_lifetime, "token_type": "Bearer"}

    def _verify_assertion(self, assertion: str) -> str | None:
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self._public_key_pem,
                algorithms=["RS256"],
                audience=self.token_url,
                issuer=self._client_email,
                # Times are judged below against this server's clock, which tests may have moved.
                options={"require": ["iss", "aud", "scope", "iat", "exp"], "verify_exp": False,
                         "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidTokenError as error:
            return f"Invalid JWT Signature or claims: {error}"
        if header.get("alg") != "RS256" or header.get("kid") != self._key_id:
            return f"unexpected JWT header {header}"
        if WALLET_SCOPE not in str(claims["scope"]).split():
            return f"scope {claims['scope']!r} does not include the Wallet scope"
        now = self._clock()
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int) or not isinstance(exp, int):
            return "iat and exp must be integers"
        if iat > now + _CLOCK_SKEW_SECONDS or exp <= now or exp - iat > _MAX_ASSERTION_LIFETIME:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
        self.token_claims.append(claims)
        return None

    def _api(self, method: str, route: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        expiry = self._tokens.get(token) if scheme == "Bearer" else None
        if expiry is None or expiry <= self._clock():
            return 401, _google_error(401, "Request had invalid authentication credentials.")
        match = _ROUTE.fullmatch(route)
        if match is None:
            return 404, _google_error(404, f"no such resource {route}")
        collection, resource_id, add_message = match.groups()
        kind = "LoyaltyClass" if collection == "loyaltyClass" else "LoyaltyObject"
        store = self.classes if kind == "LoyaltyClass" else self.objects
        if resource_id is not None and not _RESOURCE_ID.fullmatch(resource_id):
            return 400, _google_error(400, f"invalid resource id {resource_id!r}")
        allowed: tuple[str, ...] = ("POST",) if resource_id is None or add_message else ("GET", "PATCH")
        if add_message and kind != "LoyaltyObject":
            allowed = ()
        if method not in allowed:
            return 405, _google_error(405, f"{method} is not allowed on {route}")

        content: Any = None
        if method in ("POST", "PATCH"):
            if not headers.get("content-type", "").startswith("application/json"):
                return 400, _google_error(400, "expected a JSON body")
            content = _json_or_none(body)
            problems = validate("AddMessageRequest" if add_message else kind, content)
            if problems:
                return 400, _google_error(400, "; ".join(problems))

        if resource_id is None:
            return self._insert(kind, store, content)
        if resource_id not in store:
            return 404, _google_error(404, f"{kind} {resource_id} not found")
        if method == "GET":
            return 200, copy.deepcopy(store[resource_id])
        if add_message:
            message = content.get("message")
            if not isinstance(message, dict) or not message.get("header") or not message.get("body"):
                return 400, _google_error(400, "a message needs a header and a body")
            store[resource_id].setdefault("messages", []).append(message)
            return 200, {"resource": copy.deepcopy(store[resource_id])}
        if "id" in content and content["id"] != resource_id:
            return 400, _google_error(400, f"the body's id {content['id']!r} differs from the path's")
        store[resource_id].update(copy.deepcopy(content))
        return 200, copy.deepcopy(store[resource_id])

    def _insert(self, kind: str, store: dict[str, dict[str, Any]], content: dict[str, Any]) -> tuple[int, Any]:
        missing = [name for name in _REQUIRED[kind] if name not in content]
        if missing:
            return 400, _google_error(400, f"{kind} misses required fields {missing}")
        resource_id = content["id"]
        if not isinstance(resource_id, str) or not _RESOURCE_ID.fullmatch(resource_id):
            return 400, _google_error(400, f"invalid resource id {resource_id!r}")
        if kind == "LoyaltyObject" and content["classId"] not in self.classes:
            return 404, _google_error(404, f"class {content['classId']} not found")
        if resource_id in store:
            return 409, _google_error(409, f"{kind} {resource_id} already exists")
        store[resource_id] = copy.deepcopy(content)
        return 200, copy.deepcopy(content)


class _Server(ThreadingHTTPServer):
    # Connection threads are joined by server_close, after close_connections has woken them up.
    daemon_threads = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], wallet: LocalWallet):
        self.wallet = wallet
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def close_connections(self) -> None:
        with self.connections_lock:
            for connection in self.connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A stuck client cannot hold a thread for ever.
    timeout = 10
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def do_PATCH(self) -> None:  # noqa: N802
        self._serve()

    def do_PUT(self) -> None:  # noqa: N802
        self._serve()

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, answer = self.server.wallet.handle(self.command, self.path, headers, body)
        if status == DROP_CONNECTION:
            self.close_connection = True
            return
        payload = json.dumps(answer).encode("utf-8")
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=utf-8")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _google_error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": _STATUS_NAMES.get(status, "UNKNOWN")}}
