"""The one conftest: the app on a migrated database, a per-test session that rolls back, and factories.

The database is SQLite in a temporary folder, or PostgreSQL when DATABASE_URL is set (as .ci/run does).
Either way the schema comes from the Alembic migrations, not create_all. Each test runs inside an outer
transaction that is rolled back afterwards; the app's own commits only release savepoints inside it. Tests
that need real commits from several threads use `committing_app` and make their own program. Browser tests
(the section at the end) serve the app for real with `live_server` and drive Debian's Chromium.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import create_engine, delete, text
from sqlalchemy.orm import Session

os.environ.setdefault("SECRET_KEY", "test-secret-key")

from app import create_app  # noqa: E402
from app.config import normalise_database_url  # noqa: E402
from app.db import Database  # noqa: E402
from app.domain.programs import create_api_key, create_location, create_program, create_staff  # noqa: E402
from app.keys import get_keys  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.models import Location, Program, RateLimitWindow, Staff  # noqa: E402

TEST_RULES: dict[str, Any] = {
    "earn": {"points_per_unit": "1", "rounding": "down"},
    "tiers": [
        {"name": "Silver", "min_spend": 10_000, "discount_bp": 500},
        {"name": "Gold", "min_spend": 50_000, "discount_bp": 1000},
    ],
    "welcome_bonus": 50,
    "redeem": {"point_value": 1, "max_percent": 50},
}


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        url = normalise_database_url(url)
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    app = create_app({
        "TESTING": True,
        "DATABASE_URL": database_url,
        "SIGNING_KEYS_DIR": str(tmp_path_factory.mktemp("signing-keys")),
        "SERVER_NAME": "loyalty.test",
        "APPLE_DEV_CERTS_DIR": str(tmp_path_factory.mktemp("apple-dev-certs")),
        "GOOGLE_DEV_KEY_FILE": str(tmp_path_factory.mktemp("google-dev-key") / "service-account.json"),
        # Tests run the pass publisher's rounds themselves (`run_once`), or start its thread on purpose.
        "PASS_UPDATE_WORKER": False,
    })
    yield app
    app.extensions["db"].dispose()


@pytest.fixture()
def db_session(app: Flask) -> Iterator[Session]:
    """A session joined to an outer transaction that is rolled back after the test, whatever it committed.

    Requests made during the test share this session, so their commits only release savepoints.
    """
    database: Database = app.extensions["db"]
    connection = database.engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    database.pinned_session = session
    try:
        # No app context is held open here: each request pushes its own and tears it down, as in production.
        yield session
    finally:
        database.pinned_session = None
        session.close()
        outer.rollback()
        connection.close()


@pytest.fixture()
def client(app: Flask, db_session: Session) -> FlaskClient:
    return app.test_client()


@pytest.fixture()
def runner(app: Flask, db_session: Session) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture()
def committing_app(app: Flask) -> Flask:
    """The app on its real engine: commits are real, so several threads can race. Make a fresh program."""
    return app


@pytest.fixture()
def committed_client(app: Flask) -> FlaskClient:
    """A client whose requests commit for real, so background work (the pass publisher) sees them.

    It must not share a test with `client`/`db_session`; use `committed_shop` for a program."""
    assert app.extensions["db"].pinned_session is None, "committed_client cannot share a test with db_session"
    return app.test_client()


@pytest.fixture()
def committed_shop(app: Flask) -> ProgramKit:
    """A new program, committed for real (see `committed_client`)."""
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            return build_program(session, app)
        finally:
            session.close()


@dataclass
class ProgramKit:
    """A program ready for the till: a location and an API key, with the headers to use it."""

    program: Program
    location: Location
    api_key: str
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.headers = {"Authorization": f"Bearer {self.api_key}"}

    def purchase_headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        return {**self.headers, "Idempotency-Key": idempotency_key or str(uuid.uuid4())}


def build_program(session: Session, app: Flask, rules: dict[str, Any] | None = None,
                  currency: str = "EUR", name: str | None = None) -> ProgramKit:
    name = name or f"Shop {secrets.token_hex(4)}"
    program = create_program(session, get_keys(), name=name, currency=currency,
                             rules=TEST_RULES if rules is None else rules)
    location = create_location(session, program, "High Street")
    _, secret = create_api_key(session, location, "test till")
    session.commit()
    return ProgramKit(program, location, secret)


@pytest.fixture()
def make_program(app: Flask, db_session: Session) -> Callable[..., ProgramKit]:
    """make_program(rules=None, currency="EUR") -> a ProgramKit in the rolled-back test transaction."""
    def make(**kwargs: Any) -> ProgramKit:
        with app.app_context():
            return build_program(db_session, app, **kwargs)
    return make


PASSWORD = "correct horse battery"


@pytest.fixture()
def staff_of(db_session: Session):  # type: ignore[no-untyped-def]
    """staff_of(kit, role="manager") -> a new member of staff of that program (password PASSWORD)."""
    def make(kit, role: str = "manager", email: str | None = None) -> Staff:  # type: ignore[no-untyped-def]
        staff = create_staff(db_session, kit.program, email=email or f"{role}-{kit.program.slug}@example.com",
                             role=role, password=PASSWORD)
        db_session.commit()
        return staff
    return make


@pytest.fixture()
def manager_client(client: FlaskClient, staff_of):  # type: ignore[no-untyped-def]
    """manager_client(kit) -> the test client, signed in as a new manager of that program."""
    def sign_in_as_manager(kit) -> FlaskClient:  # type: ignore[no-untyped-def]
        login = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
        assert token, "the sign-in page carries a CSRF token"
        response = client.post("/login", data={"csrf_token": token.group(1), "email": staff_of(kit).email,
                                                "password": PASSWORD})
        assert response.status_code == 303, response.text
        return client
    return sign_in_as_manager


@pytest.fixture()
def enroll(client: FlaskClient) -> Callable[..., dict[str, Any]]:
    """enroll(kit, name=..., email=...) -> the enrollment API's answer for a new member."""
    def do_enroll(kit: ProgramKit, **fields: Any) -> dict[str, Any]:
        body = {"name": "Amina Karimi", "email": f"{secrets.token_hex(5)}@example.com", **fields}
        response = client.post("/api/v1/enrollments", json=body, headers=kit.headers)
        assert response.status_code == 201, response.json
        return response.json  # type: ignore[no-any-return]
    return do_enroll


class _Inbox:
    """An aiosmtpd handler that keeps every message it is sent."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(message_from_bytes(envelope.content, policy=default_policy))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


@pytest.fixture()
def smtp_inbox(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Inbox]:
    """A real SMTP server on 127.0.0.1 that the app is pointed at; `.messages` holds what it received."""
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setitem(app.config, "MAIL_SERVER", "127.0.0.1")
    monkeypatch.setitem(app.config, "MAIL_PORT", port)
    try:
        yield inbox
    finally:
        controller.stop()


# ======================================================================================================================
# Browser: the app served for real to Debian's Chromium, driven by Playwright.
#
# `live_server` serves the session's app on 127.0.0.1 with real commits (no rolled-back outer transaction), so
# browser tests never take `client`, `db_session` or `make_program`: each makes its own program with `live_shop`.
# Chromium is /usr/bin/chromium from Debian (`.ci/run` installs it); Playwright never downloads a browser.
# ======================================================================================================================

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
# A phone (iPhone 12-15 class) and a laptop, as the cashier and the manager hold them.
PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
                         "has_touch": True}
LAPTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
# Short, so a missing element fails the test in seconds rather than Playwright's default 30.
BROWSER_TIMEOUT_MS = 5_000
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


@pytest.fixture()
def live_server(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The app served on 127.0.0.1 (a free port, a thread per request) with real commits; yields the base URL."""
    from werkzeug.serving import make_server

    database: Database = app.extensions["db"]
    if database.pinned_session is not None:
        pytest.fail("live_server cannot share a test with db_session/client/make_program: the browser's "
                    "requests must commit for real. Use live_shop to make a program.")

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if database.pinned_session is not None:  # db_session was set up after us: its rollback would hide commits
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"live_server and db_session in one test: the browser's requests must commit for real."]
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, serve, threaded=True)
    base_url = f"http://127.0.0.1:{server.server_port}"
    # Links the app builds with _external=True point at the server the browser is talking to.
    monkeypatch.setitem(app.config, "SERVER_NAME", f"127.0.0.1:{server.server_port}")
    # A short poll interval, so shutting down takes milliseconds rather than half a second per test.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="live-server",
                              daemon=True)
    thread.start()
    try:
        yield base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        # Sign-ins from the browser committed their rate-limit counts; leave none for the next test.
        with app.app_context():
            session = database.sessionmaker()
            try:
                session.execute(delete(RateLimitWindow).where(RateLimitWindow.key.like("sign-in:%")))
                session.commit()
            finally:
                session.close()


@contextmanager
def live_db(app: Flask) -> Iterator[Session]:
    """A real (committing) session in an app context, for a browser test to set up and check the database."""
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            yield session
        finally:
            session.close()


@dataclass(frozen=True)
class StaffLogin:
    email: str
    password: str


@dataclass
class LiveShop:
    """A committed program with a cashier and a manager, for one browser test."""

    app: Flask
    kit: ProgramKit
    cashier: StaffLogin
    manager: StaffLogin

    def enroll(self, **fields: Any) -> dict[str, Any]:
        """Enroll a member through the API (channel "api"); answers its serial, code and card_url."""
        body = {"name": "Amina Karimi", "email": f"{secrets.token_hex(5)}@example.com", **fields}
        response = self.app.test_client().post("/api/v1/enrollments", json=body, headers=self.kit.headers)
        assert response.status_code == 201, response.json
        return response.json  # type: ignore[no-any-return]


@pytest.fixture()
def live_shop(app: Flask, live_server: str) -> Callable[..., LiveShop]:
    """live_shop(name=None, rules=None) -> a committed LiveShop; every call makes a new program and staff."""
    def make(**kwargs: Any) -> LiveShop:
        with live_db(app) as session:
            kit = build_program(session, app, **kwargs)
            logins = {}
            for role in ("cashier", "manager"):
                login = StaffLogin(f"{role}-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(12))
                create_staff(session, kit.program, email=login.email, role=role, password=login.password)
                logins[role] = login
            session.commit()
        return LiveShop(app, kit, logins["cashier"], logins["manager"])
    return make


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


def _launch_chromium(driver: Any, extra_args: list[str] | None = None) -> Any:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing. The browser tests drive Debian's Chromium: "
                    "apt-get install -y chromium (.ci/run does this when it is absent).")
    return driver.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                  args=CHROMIUM_ARGS + (extra_args or []))


@pytest.fixture(scope="session")
def browser(playwright_driver: Any) -> Iterator[Any]:
    """One headless Chromium for the whole session; tests open their own contexts with `open_page`."""
    chromium = _launch_chromium(playwright_driver)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture()
def camera_browser(playwright_driver: Any) -> Iterator[Callable[[Path], Any]]:
    """camera_browser(video) -> a Chromium whose camera plays `video` (.y4m, see `write_qr_video`) on a loop.

    Permission prompts are answered yes, so getUserMedia resolves at once with the file as the camera.
    """
    launched: list[Any] = []

    def launch(video: Path) -> Any:
        chromium = _launch_chromium(playwright_driver, [
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}",
        ])
        launched.append(chromium)
        return chromium

    try:
        yield launch
    finally:
        for chromium in launched:
            chromium.close()


VIDEO_SIZE = (640, 480)


def qr_frame(code: str, size: tuple[int, int] = VIDEO_SIZE) -> Any:
    """The card's QR, as the card page's PNG download draws it, centred on a white frame: what the camera sees."""
    from PIL import Image

    from app.qr import qr_png

    qr = Image.open(io.BytesIO(qr_png(code, box_size=8))).convert("RGB")
    frame = Image.new("RGB", size, "white")
    frame.paste(qr, ((size[0] - qr.width) // 2, (size[1] - qr.height) // 2))
    return frame


def write_qr_video(code: str, path: Path, *, seconds: int = 2, fps: int = 10) -> Path:
    """A YUV4MPEG2 (4:2:0) video of the card's QR standing still, for --use-file-for-fake-video-capture."""
    frame = qr_frame(code)
    width, height = frame.size
    y, cb, cr = frame.convert("YCbCr").split()
    half = (width // 2, height // 2)
    planes = y.tobytes() + cb.resize(half).tobytes() + cr.resize(half).tobytes()
    with path.open("wb") as video:
        video.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(seconds * fps):
            video.write(b"FRAME\n" + planes)
    return path


# 'wasm-unsafe-eval' lets the page compile WebAssembly it loaded from 'self' (the QR decoder); it runs no text.
_SCRIPT_SOURCES_OF_OUR_OWN = {"'self'", "'wasm-unsafe-eval'", "'strict-dynamic'"}


class RequestGuard:
    """Everything a browser context asked for and was told, for asserting the pages stay on their own origin.

    Records each request URL, the CSP of each page (document) response, refusals the CSP logged to the console,
    uncaught page errors and server errors (5xx).
    """

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.urls: list[str] = []
        self.document_csp: dict[str, str | None] = {}
        self.csp_refusals: list[str] = []
        self.page_errors: list[str] = []
        self.server_errors: list[str] = []
        self._in_flight: set[Any] = set()

    def attach(self, context: Any) -> None:
        context.on("request", self._on_request)
        context.on("requestfinished", lambda request: self._in_flight.discard(request))
        context.on("requestfailed", lambda request: self._in_flight.discard(request))
        context.on("response", self._on_response)
        context.on("console", self._on_console)
        context.on("weberror", lambda error: self.page_errors.append(str(error.error)))

    def _on_request(self, request: Any) -> None:
        self.urls.append(request.url)
        self._in_flight.add(request)

    def wait_until_quiet(self, page: Any, quiet_ms: int = 300) -> None:
        """Wait until no request has been in flight for `quiet_ms`: what the page's scripts sent has landed.

        (wait_for_load_state("networkidle") answers at once on a page that was idle once already.)
        """
        deadline = time.monotonic() + BROWSER_TIMEOUT_MS / 1000
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            page.wait_for_timeout(50)  # lets Playwright deliver the events that fill and empty _in_flight
            if self._in_flight:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_ms / 1000:
                return
        raise AssertionError(f"requests still in flight: {[request.url for request in self._in_flight]}")

    def _on_response(self, response: Any) -> None:
        if response.status >= 500:
            self.server_errors.append(f"{response.status} {response.url}")
        if response.request.resource_type == "document" and response.status == 200:
            self.document_csp[response.url] = response.headers.get("content-security-policy")

    def _on_console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.csp_refusals.append(message.text)

    def stray_urls(self) -> list[str]:
        return [url for url in self.urls
                if not (url == self.origin or url.startswith((self.origin + "/", "data:", "blob:")))]

    def assert_same_origin(self) -> None:
        """Every request went to the live server (or was data:/blob:), and the CSP refused nothing."""
        assert self.urls, "no request was recorded: the guard was not attached to the page's context"
        assert not self.stray_urls(), f"requests left {self.origin}: {self.stray_urls()}"
        assert not self.csp_refusals, f"the Content-Security-Policy refused: {self.csp_refusals}"

    def assert_no_errors(self) -> None:
        """No uncaught script error on any page and no 5xx from the server."""
        assert not self.page_errors, f"uncaught errors in the page: {self.page_errors}"
        assert not self.server_errors, f"server errors: {self.server_errors}"

    def assert_scripts_only_from_self(self) -> None:
        """Every page came with a CSP whose script-src (or default-src) allows no inline script and no other origin."""
        assert self.document_csp, "no page was loaded"
        for url, csp in self.document_csp.items():
            assert csp, f"{url} has no Content-Security-Policy"
            directives = {part.split()[0]: part.split()[1:] for part in csp.split(";") if part.strip()}
            script_src = directives.get("script-src", directives.get("default-src"))
            assert script_src, f"{url}: the CSP does not restrict scripts: {csp}"
            assert "'unsafe-inline'" not in script_src, f"{url}: script-src allows inline scripts: {csp}"
            strays = [source for source in script_src
                      if source not in _SCRIPT_SOURCES_OF_OUR_OWN and not source.startswith(("'nonce-", "'sha"))]
            assert not strays, f"{url}: script-src allows {strays}: {csp}"


@pytest.fixture()
def open_page(live_server: str, browser: Any) -> Iterator[Callable[..., tuple[Any, RequestGuard]]]:
    """open_page(device=PHONE, on=browser, init_script=None) -> (page, guard) in a fresh context of the live server.

    Relative URLs (`page.goto("/login")`) go to the live server; the guard has recorded every request since.
    """
    contexts: list[Any] = []

    def open_(device: dict[str, Any] | None = None, on: Any = None, init_script: str | None = None
              ) -> tuple[Any, RequestGuard]:
        context = (on or browser).new_context(base_url=live_server, **(PHONE if device is None else device))
        contexts.append(context)
        context.set_default_timeout(BROWSER_TIMEOUT_MS)
        guard = RequestGuard(live_server)
        guard.attach(context)
        if init_script:
            context.add_init_script(init_script)
        return context.new_page(), guard

    try:
        yield open_
    finally:
        for context in contexts:
            context.close()


def sign_in(page: Any, base_url: str, email: str, password: str) -> Any:
    """Sign in on /login as a person would; answers the response of the page it lands on."""
    page.goto(f"{base_url}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    with page.expect_navigation() as landed:
        page.click("form:has(input[name=password]) button[type=submit]")
    return landed.value


@pytest.fixture()
def save_screenshot(tmp_path: Path) -> Callable[[Any, str], Path]:
    """save_screenshot(page, name) -> the PNG: in docs/screenshots/ when UPDATE_SCREENSHOTS=1, else a temp dir."""
    from PIL import Image

    def save(page: Any, name: str) -> Path:
        folder = SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), animations="disabled", caret="hide")
        viewport = page.viewport_size
        with Image.open(path) as image:
            assert image.width >= viewport["width"] and image.height >= viewport["height"], image.size
        return path

    return save
