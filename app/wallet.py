"""The app's Apple Wallet set-up: pass certificates, the APNs sender, and the background pass publisher.

Configuration (environment, see the README):

- `APPLE_PASS_CERT` (a .p12, or a PEM with `APPLE_PASS_KEY`), `APPLE_PASS_CERT_PASSWORD`, `APPLE_WWDR_CERT`:
  a real Pass Type ID certificate. Without them, development certificates are made on first use in
  `APPLE_DEV_CERTS_DIR` (or by `flask --app wsgi passes dev-certs`): passes then verify against the dev CA
  but no iPhone will open them.
- `APPLE_PASS_TYPE_ID`, `APPLE_TEAM_ID`: default to what the certificate says (its UID and OU).
- `APNS_URL` (default Apple's production host with a real certificate, none with dev certificates),
  `APNS_KEY_FILE` + `APNS_KEY_ID` (+ `APNS_TEAM_ID`) for token auth, else the pass certificate authenticates;
  `APNS_CA_FILE` to trust a private APNs stand-in (the tests' local server).

A purchase never waits for any of this: its transaction notes the card on the session (domain/pass_changes.py);
after the commit the note reaches `PassUpdateWorker`, whose thread republishes the pass (new tag, new
Last-Modified) and sends each registered device its push. A sweep every `SWEEP_SECONDS` catches changes made in
other processes, and pushes due for a retry.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from flask import Flask, current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

from app import google_wallet
from app.db import begin_reading, get_db, start_writing
from app.domain.apple_wallet import (
    ApplePassConfig,
    PushOutcome,
    claim_due_pushes,
    next_push_due,
    publish_changes,
    record_push_result,
    stale_pass_card_ids,
)
from app.domain.pass_changes import take_changes
from app.models import utcnow
from passes import ApnsClient, CertificateAuth, PassCertificates, TokenAuth, make_dev_certificates

log = logging.getLogger(__name__)

WEB_SERVICE_PATH = "/wallet/apple"
APPLE_PRODUCTION_APNS = "https://api.push.apple.com"
DEV_PASS_TYPE_ID = "pass.local.loyalty.development"
DEV_TEAM_ID = "DEVTEAM000"
DEV_FILES = {"ca": "ca.pem", "wwdr": "wwdr.pem", "cert": "pass-cert.pem", "key": "pass-key.pem"}
SWEEP_SECONDS = 30.0
ROUND_INTERVAL_SECONDS = 0.5


@dataclass(frozen=True)
class NotSent:
    """A push that was never attempted, and will not be."""

    reason: str
    status: int = 0
    delivered: bool = False
    unregistered: bool = False
    retryable: bool = False


@dataclass
class AppleWallet:
    """What the app needs to sign passes and push their updates, loaded once per process."""

    certificates: PassCertificates
    pass_type_identifier: str
    team_identifier: str
    development: bool
    apns_url: str
    apns_auth: TokenAuth | CertificateAuth
    apns_ca_file: str | None
    _client: ApnsClient | None = field(default=None, repr=False)

    def config(self, web_service_url: str) -> ApplePassConfig:
        return ApplePassConfig(self.pass_type_identifier, self.team_identifier, web_service_url, self.development)

    def push(self, push_token: str) -> PushOutcome:
        """Send one pass-update push; an unconfigured APNs is a permanent failure that says so."""
        if not self.apns_url:
            return NotSent("APNs is not configured (set APNS_URL); development certificates cannot push")
        if self._client is None:
            self._client = ApnsClient(self.apns_auth, base_url=self.apns_url, ca_file=self.apns_ca_file)
        return self._client.push_pass_update(push_token, self.pass_type_identifier)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def init_app(app: Flask) -> None:
    worker = PassUpdateWorker(app)
    app.extensions["pass_updates"] = worker
    _publish_after_commit(app)
    # Each serving process runs its own publisher from its first request on (gunicorn forks after loading the
    # app, and threads do not survive a fork), so its sweep runs even before the first purchase.
    app.before_request(worker.start)


def get_apple_wallet() -> AppleWallet:
    """The process's wallet set-up, loaded (and dev certificates made) on first use."""
    wallet: AppleWallet | None = current_app.extensions.get("apple_wallet")
    if wallet is None:
        wallet = load_apple_wallet(current_app.config)
        current_app.extensions["apple_wallet"] = wallet
    return wallet


def apple_pass_config() -> ApplePassConfig:
    """The pass settings for this request: the web service lives on this server's public address."""
    return get_apple_wallet().config(google_wallet.public_base_url() + WEB_SERVICE_PATH)


def load_apple_wallet(config: dict[str, Any]) -> AppleWallet:
    if config.get("APPLE_PASS_CERT"):
        certificates = _load_real_certificates(config)
        development = False
    else:
        certificates = load_dev_certificates(Path(config["APPLE_DEV_CERTS_DIR"]))
        development = True
    pass_type_id = config.get("APPLE_PASS_TYPE_ID") or certificates.pass_type_identifier
    team_id = config.get("APPLE_TEAM_ID") or certificates.team_identifier
    if not pass_type_id or not team_id:
        raise RuntimeError("The pass certificate names no Pass Type ID or team: set APPLE_PASS_TYPE_ID and "
                           "APPLE_TEAM_ID.")
    apns_url = config.get("APNS_URL") or ("" if development else APPLE_PRODUCTION_APNS)
    auth: TokenAuth | CertificateAuth
    if config.get("APNS_KEY_FILE"):
        auth = TokenAuth(Path(config["APNS_KEY_FILE"]).read_bytes(), config["APNS_KEY_ID"],
                         config.get("APNS_TEAM_ID") or team_id)
    else:
        # Apple's Pass Type ID certificate is also an APNs client certificate for that topic.
        auth = CertificateAuth(
            certificates.signer_cert.public_bytes(serialization.Encoding.PEM),
            certificates.signer_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()),
        )
    return AppleWallet(certificates, pass_type_id, team_id, development, apns_url.rstrip("/"), auth,
                       config.get("APNS_CA_FILE") or None)


def _load_real_certificates(config: dict[str, Any]) -> PassCertificates:
    cert_path = Path(config["APPLE_PASS_CERT"])
    password = (config.get("APPLE_PASS_CERT_PASSWORD") or "").encode() or None
    if not config.get("APPLE_WWDR_CERT"):
        raise RuntimeError("APPLE_WWDR_CERT must name Apple's WWDR G4 intermediate certificate (.cer or .pem).")
    wwdr = Path(config["APPLE_WWDR_CERT"]).read_bytes()
    if cert_path.suffix.lower() in (".p12", ".pfx"):
        return PassCertificates.from_pkcs12(cert_path.read_bytes(), password, wwdr)
    if not config.get("APPLE_PASS_KEY"):
        raise RuntimeError("APPLE_PASS_CERT is a PEM certificate: APPLE_PASS_KEY must name its private key.")
    return PassCertificates.from_pem(cert_path.read_bytes(), Path(config["APPLE_PASS_KEY"]).read_bytes(), wwdr,
                                     password)


def write_dev_certificates(directory: Path, *, pass_type_id: str = DEV_PASS_TYPE_ID, team_id: str = DEV_TEAM_ID,
                           organization: str = "Loyalty (development)") -> Path:
    """Make a throwaway CA, a WWDR stand-in and a pass certificate; return the CA's path."""
    dev = make_dev_certificates(pass_type_id, team_id, organization)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in ((DEV_FILES["ca"], dev.ca_cert_pem), (DEV_FILES["wwdr"], dev.wwdr_cert_pem),
                       (DEV_FILES["cert"], dev.pass_cert_pem)):
        (directory / name).write_bytes(data)
    key_path = directory / DEV_FILES["key"]
    key_path.touch(mode=0o600)
    key_path.write_bytes(dev.pass_key_pem)
    return directory / DEV_FILES["ca"]


def load_dev_certificates(directory: Path) -> PassCertificates:
    if not (directory / DEV_FILES["key"]).exists():
        write_dev_certificates(directory)
        log.info("Made development pass certificates in %s", directory)
    return PassCertificates.from_pem((directory / DEV_FILES["cert"]).read_bytes(),
                                     (directory / DEV_FILES["key"]).read_bytes(),
                                     (directory / DEV_FILES["wwdr"]).read_bytes())


def _publish_after_commit(app: Flask) -> None:
    """Hand the cards a transaction changed to the worker once (and only if) it commits."""
    worker: PassUpdateWorker = app.extensions["pass_updates"]
    sessionmaker = app.extensions["db"].sessionmaker

    @event.listens_for(sessionmaker, "after_commit")
    def _after_commit(session: Session) -> None:
        cards, programs = take_changes(session)
        if cards or programs:
            worker.notify(cards, programs)

    @event.listens_for(sessionmaker, "after_rollback")
    def _after_rollback(session: Session) -> None:
        take_changes(session)


@dataclass
class WorkerReport:
    republished: int = 0
    sent: int = 0
    purged: int = 0
    retrying: int = 0
    failed: int = 0
    next_due: dt.datetime | None = None
    google: google_wallet.GoogleReport = field(default_factory=lambda: google_wallet.GoogleReport())


class PassUpdateWorker:
    """Republishes changed passes and sends their pushes on a daemon thread, so a purchase never waits for APNs.

    With PASS_UPDATE_WORKER off (the tests' default) nothing runs by itself and `run_once` does one round.
    """

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._cards: set[int] = set()
        self._programs: set[int] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._next_due: dt.datetime | None = None
        self._google_next_due: dt.datetime | None = None

    def notify(self, card_ids: set[int], program_ids: set[int]) -> None:
        with self._lock:
            self._cards |= card_ids
            self._programs |= program_ids
        self._wake.set()
        self.start()

    def start(self) -> None:
        """Start the thread in this process (again after a fork: threads do not survive one)."""
        if not self._app.config["PASS_UPDATE_WORKER"] or self._running_here():
            return
        with self._lock:
            if self._running_here():
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._loop, name="pass-updates", daemon=True)
            self._thread_pid = os.getpid()
            self._thread.start()

    def _running_here(self) -> bool:
        thread = self._thread
        return thread is not None and self._thread_pid == os.getpid() and thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)
        self._thread = None

    def run_once(self, *, sweep: bool = False, now: Callable[[], dt.datetime] = utcnow) -> WorkerReport:
        """Publish what was noted (or everything stale, on a sweep), then send the pushes that are due.

        Most cards have no registered pass, so the usual round is one read that finds nothing to do: the write
        transaction (and on SQLite the database's one write lock) is taken only when there is something to write.
        """
        with self._lock:
            cards, programs = self._cards, self._programs
            self._cards, self._programs = set(), set()
        report = WorkerReport()
        with self._app.app_context():
            session = get_db().sessionmaker()
            try:
                noted = None if sweep else (cards, programs)
                if sweep or cards or programs:
                    report.republished = self._publish(session, now, noted)
                # Pushes and patches fall due only when owed here (or on a sweep, from elsewhere) or when a retry's
                # time comes, so a round that owed nothing and expects no retry yet does not even look. Apple first:
                # its pushes are quick, and Google's calls must not hold them up.
                known = self._next_due
                if sweep or report.republished or (known is not None and known <= now()):
                    self._next_due = self._send_due(session, report, now)
                if google_wallet.can_reach_google():
                    if sweep or cards or programs:
                        begin_reading(session)
                        report.google.owed = google_wallet.note_stale_objects(session, now(), noted)
                    if sweep or programs:
                        google_wallet.patch_stale_classes(session, report.google, now())
                    known = self._google_next_due
                    if sweep or report.google.owed or (known is not None and known <= now()):
                        self._google_next_due = google_wallet.send_due_patches(session, report.google, now())
                report.next_due = min((due for due in (self._next_due, self._google_next_due) if due is not None),
                                      default=None)
            finally:
                session.close()
        return report

    def _publish(self, session: Session, now: Callable[[], dt.datetime],
                 noted: tuple[set[int], set[int]] | None) -> int:
        card_ids, program_ids = noted if noted is not None else (None, None)
        begin_reading(session)
        stale = stale_pass_card_ids(session, card_ids=card_ids, program_ids=program_ids)
        if not stale:
            session.rollback()
            return 0
        start_writing(session)
        republished = publish_changes(session, now(), card_ids=stale)
        session.commit()
        return republished

    def _send_due(self, session: Session, report: WorkerReport,
                  now: Callable[[], dt.datetime]) -> dt.datetime | None:
        """Send every push that is due; answer when the next one falls due."""
        wallet = get_apple_wallet()
        while True:
            begin_reading(session)
            due = next_push_due(session)
            session.rollback()
            if due is None or due > now():
                return due
            start_writing(session)
            jobs = claim_due_pushes(session, now())
            session.commit()  # the claim is ours before any network time; no transaction stays open meanwhile
            if not jobs:
                continue
            for job in jobs:
                outcome = wallet.push(job.push_token)
                status = record_push_result(session, job, outcome, now())
                session.commit()
                if status == "sent":
                    report.sent += 1
                elif status == "purged":
                    report.purged += 1
                elif status == "failed":
                    report.failed += 1
                    log.warning("Push to device %s failed for good: %s %s", job.device_library_id,
                                outcome.status, outcome.reason)
                else:
                    report.retrying += 1

    def _loop(self) -> None:
        last_sweep = 0.0
        while not self._stopping.is_set():
            started = time.monotonic()
            sweep = started - last_sweep >= SWEEP_SECONDS
            wait = SWEEP_SECONDS
            try:
                report = self.run_once(sweep=sweep)
                if sweep:
                    last_sweep = started
                if report.next_due is not None:
                    wait = min(wait, max(0.0, (report.next_due - utcnow()).total_seconds()))
            except Exception:  # a database or network hiccup must not end the thread; try again shortly
                log.exception("Publishing pass updates failed; trying again")
                wait = 5.0
            self._wake.wait(wait)
            self._wake.clear()
            # Under load a round per purchase would be wasteful: collect what arrives for a moment, then go.
            time.sleep(max(0.0, started + ROUND_INTERVAL_SECONDS - time.monotonic()))
        with self._app.app_context():
            get_apple_wallet().close()
            if "google_wallet" in self._app.extensions:
                google_wallet.get_google_wallet().close()
