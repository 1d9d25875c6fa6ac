"""The app's Google Wallet set-up: the service account and issuer, save links, and keeping objects current.

Configuration (environment, see the README):

- `GOOGLE_WALLET_ISSUER_ID`: the issuer account's id (digits) from the Google Pay & Wallet Console.
- `GOOGLE_SERVICE_ACCOUNT_FILE`: the service account's JSON key. Without it a throwaway key is made on first use
  in `GOOGLE_DEV_KEY_FILE` (or by `flask --app wsgi passes dev-google-key`): save links are then well-formed and
  signed, but Google will not accept them.
- `GOOGLE_WALLET_API_URL`, `GOOGLE_OAUTH_TOKEN_URL`: Google's by default; the tests point them at a local server.
- `GOOGLE_WALLET_ORIGINS`: the origins the save button appears on (default: this server's public address).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import current_app, has_request_context, request
from sqlalchemy.orm import Session

from app.db import begin_reading, start_writing
from app.domain.cards import card_code
from app.domain.google_wallet import (
    GoogleWalletConfig,
    claim_due_patches,
    class_row,
    loyalty_card,
    loyalty_program,
    mark_shown,
    next_patch_due,
    object_row,
    owe_patches,
    record_patch_result,
    retired_object_id,
    shown_values,
    stale_class_program_ids,
    stale_object_card_ids,
)
from app.domain.member_card import pass_offers
from app.domain.rotating_codes import slot0_secret
from app.keys import get_keys
from app.models import Card, GoogleWalletClass, GoogleWalletObject, Program, utcnow
from passes.google import (
    MAX_SAVE_URL_LENGTH,
    WALLET_API_URL,
    LoyaltyCard,
    NeedsInsert,
    ServiceAccount,
    WalletClient,
    loyalty_class,
    loyalty_object,
    make_dev_service_account,
    save_link,
)

log = logging.getLogger(__name__)

DEV_ISSUER_ID = "3388000000000000000"


class GoogleWalletUnavailable(Exception):
    """Google's API did not take what a save link needs first (the class or a rotating card's object)."""

    def __init__(self, reason: str, *, for_member: str = "Google Wallet could not be reached just now. Please try "
                                                         "again in a minute.") -> None:
        super().__init__(reason)
        self.for_member = for_member


@dataclass
class GoogleWallet:
    """What the app needs to make save links and patch objects, loaded once per process."""

    account: ServiceAccount
    issuer_id: str
    development: bool
    api_url: str
    token_url: str | None
    _client: WalletClient | None = field(default=None, repr=False)

    def client(self) -> WalletClient:
        if self._client is None:
            self._client = WalletClient(self.account, base_url=self.api_url, token_url=self.token_url)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def get_google_wallet() -> GoogleWallet:
    wallet: GoogleWallet | None = current_app.extensions.get("google_wallet")
    if wallet is None:
        wallet = load_google_wallet(current_app.config)
        current_app.extensions["google_wallet"] = wallet
    return wallet


def load_google_wallet(config: dict[str, Any]) -> GoogleWallet:
    if config.get("GOOGLE_SERVICE_ACCOUNT_FILE"):
        account = ServiceAccount.from_json(Path(config["GOOGLE_SERVICE_ACCOUNT_FILE"]).read_bytes())
        development = False
    else:
        account = ServiceAccount.from_json(ensure_dev_key(Path(config["GOOGLE_DEV_KEY_FILE"])).read_bytes())
        development = True
    issuer_id = config.get("GOOGLE_WALLET_ISSUER_ID") or DEV_ISSUER_ID
    return GoogleWallet(account, issuer_id, development, (config.get("GOOGLE_WALLET_API_URL") or WALLET_API_URL),
                        config.get("GOOGLE_OAUTH_TOKEN_URL") or None)


def write_dev_key(path: Path) -> Path:
    """A throwaway service-account key in Google's JSON format, private to this user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(make_dev_service_account())
    return path


def ensure_dev_key(path: Path) -> Path:
    if not path.exists():
        write_dev_key(path)
        log.info("Made a development Google service-account key in %s", path)
    return path


def can_reach_google() -> bool:
    """False with the development key pointed at Google's real API: Google would refuse it (and this machine may
    not reach Google at all), so the publisher does not try. A stand-in API (GOOGLE_WALLET_API_URL) is tried."""
    wallet = get_google_wallet()
    return not (wallet.development and wallet.api_url == WALLET_API_URL)


def public_base_url() -> str:
    """Where customers reach this server: PUBLIC_BASE_URL, else the request's host, else the development address."""
    configured: str = current_app.config["PUBLIC_BASE_URL"]
    if configured:
        return configured
    if has_request_context():
        return request.host_url.rstrip("/")
    server_name = current_app.config.get("SERVER_NAME")
    if server_name:
        return f"{current_app.config.get('PREFERRED_URL_SCHEME', 'http')}://{server_name}"
    return "http://127.0.0.1:5000"


def google_config() -> GoogleWalletConfig:
    configured = current_app.config.get("GOOGLE_WALLET_ORIGINS") or ""
    origins = tuple(origin.strip() for origin in configured.split(",") if origin.strip()) or (public_base_url(),)
    wallet = get_google_wallet()
    return GoogleWalletConfig(wallet.issuer_id, origins, development=wallet.development)


def _logo_url(base: str, program: Program) -> str:
    # The revision in the query makes Google fetch a changed logo again rather than keep its cached copy.
    return f"{base}/p/{program.slug}/logo.png?v={program.pass_revision}"


def card_description(session: Session, card: Card) -> LoyaltyCard:
    """The card's loyalty object as it should look now."""
    base = public_base_url()
    program = card.program
    described = loyalty_program(program, google_config(), logo_url=_logo_url(base, program),
                                homepage_url=f"{base}/join/{program.slug}")
    secret = slot0_secret(session, card).secret if program.rotating_codes else None
    return loyalty_card(card, card_code(session, card, get_keys()), described,
                        card_page_url=f"{base}/c/{card.page_token}", rotating_secret=secret,
                        offers=pass_offers(session, card, utcnow()))


def save_link_for(session: Session, card: Card, now: dt.datetime) -> str:
    """The card's "Save to Google Wallet" link, inserting the class and object over REST first when needed.

    A rotating card's object carries its TOTP secret, which never travels inside a JWT, and a very long object
    would make the link too long for some browsers: in both cases the object is inserted first and the link
    refers to it. The caller commits.
    """
    wallet = get_google_wallet()
    description = card_description(session, card)
    klass = class_row(session, card.program, description.program.class_id)
    row = object_row(session, card, description.object_id, now)
    if klass.inserted_at is None and not wallet.development:
        # The class is the program's, made once; inserted, it keeps every member's link short.
        try:
            _insert_class(wallet, klass, description, card.program, now)
        except GoogleWalletUnavailable as error:
            log.warning("The loyalty class travels inside the save link this time: %s", error)
    # With a development key Google is out of reach anyway: the whole class and object go in the link, however
    # long, so links are made offline.
    max_length = None if wallet.development else MAX_SAVE_URL_LENGTH
    try:
        link = save_link(wallet.account, google_config().origins, description,
                         class_inserted=klass.inserted_at is not None, object_inserted=row.inserted_at is not None,
                         max_length=max_length)
    except NeedsInsert as needed:
        if not can_reach_google():
            raise GoogleWalletUnavailable(
                "this card's object must be stored at Google first (live codes keep their secret out of links), "
                "and a development key cannot do that (set GOOGLE_SERVICE_ACCOUNT_FILE, or GOOGLE_WALLET_API_URL "
                "for a stand-in)",
                for_member="Google Wallet cards with live codes need the server's Google Wallet account, which is "
                           "not set up yet. Show this page at the till instead.",
            ) from None
        _insert_class(wallet, klass, description, card.program, now)
        _insert_object(wallet, row, needed.object_body, now)
        link = save_link(wallet.account, google_config().origins, description, class_inserted=True,
                         object_inserted=True)
    mark_shown(row, shown_values(card), now)
    return link


def _insert_class(wallet: GoogleWallet, klass: GoogleWalletClass, description: LoyaltyCard, program: Program,
                  now: dt.datetime) -> None:
    if klass.inserted_at is not None:
        return
    result = wallet.client().insert_class(loyalty_class(description.program))
    if not (result.ok or result.conflict):
        raise GoogleWalletUnavailable(f"inserting the loyalty class: {result.status} {result.reason}")
    klass.inserted_at = now
    klass.shown_program_revision = program.pass_revision


def _insert_object(wallet: GoogleWallet, row: GoogleWalletObject, body: dict[str, Any], now: dt.datetime) -> None:
    if row.inserted_at is not None:
        return
    result = wallet.client().insert_object(body)
    if result.conflict:  # inserted before (by another server, or a lost answer): make it current
        result = wallet.client().patch_object(row.object_id, body)
    if not result.ok:
        raise GoogleWalletUnavailable(f"inserting the loyalty object: {result.status} {result.reason}")
    row.inserted_at = now


# --- the publisher's Google round (called by app.wallet.PassUpdateWorker) -----------------------------------------


@dataclass
class GoogleReport:
    owed: int = 0
    patched: int = 0
    absent: int = 0
    retrying: int = 0
    failed: int = 0
    classes_patched: int = 0


def note_stale_objects(session: Session, now: dt.datetime, noted: tuple[set[int], set[int]] | None) -> int:
    """Owe a patch to each object that no longer shows its card (the noted cards, or all on a sweep).

    The session must be reading (see app.db.begin_reading); the write happens only when something is stale.
    """
    card_ids, program_ids = noted if noted is not None else (None, None)
    stale = stale_object_card_ids(session, card_ids=card_ids, program_ids=program_ids)
    if not stale:
        session.rollback()
        return 0
    start_writing(session)
    owed = owe_patches(session, stale, now)
    session.commit()
    return owed


def send_due_patches(session: Session, report: GoogleReport, now: dt.datetime) -> dt.datetime | None:
    """Patch every object that is owed one and due; answer when the next retry falls due.

    No transaction is open while Google is asked: each body is built and the transaction ended first, so on
    SQLite the tills never wait for the network.
    """
    while True:
        begin_reading(session)
        due = next_patch_due(session)
        session.rollback()
        if due is None or due > now:
            return due
        start_writing(session)
        card_ids = claim_due_patches(session, now)
        session.commit()  # the claim is ours before any network time
        for card_id in card_ids:
            _patch_one(session, card_id, report, now)


def _patch_one(session: Session, card_id: int, report: GoogleReport, now: dt.datetime) -> None:
    wallet = get_google_wallet()
    begin_reading(session)
    card = session.get(Card, card_id)
    row = session.get(GoogleWalletObject, card_id)
    if card is None or row is None:
        session.rollback()
        return
    object_id, retired = row.object_id, retired_object_id(row, card)
    shown = shown_values(card)
    if card.program.rotating_codes and not retired:
        start_writing(session)
    # A rotating card's body carries its slot-0 secret, made here if rotation was turned on after the save.
    body = {"state": "INACTIVE"} if retired else loyalty_object(card_description(session, card))
    session.commit()
    result = wallet.client().patch_object(object_id, body)
    if retired and (result.ok or result.not_found):
        # The card was reissued: its old object no longer offers the old code, and is forgotten.
        start_writing(session)
        gone = session.get(GoogleWalletObject, card_id)
        if gone is not None and gone.object_id == object_id:
            session.delete(gone)
        session.commit()
        report.patched += 1
        return
    start_writing(session)
    status = record_patch_result(session, card_id, shown, result, now)
    session.commit()
    if status == "ok":
        report.patched += 1
    elif status == "absent":
        report.absent += 1
    elif status == "failed":
        report.failed += 1
        log.warning("Google Wallet patch of %s failed for good: %s %s", object_id, result.status, result.reason)
    else:
        report.retrying += 1


def patch_stale_classes(session: Session, report: GoogleReport, now: dt.datetime) -> None:
    """Bring every inserted class up to its program's current revision (name, colours, logo, rules)."""
    begin_reading(session)
    program_ids = stale_class_program_ids(session)
    session.rollback()
    wallet = get_google_wallet()
    base = public_base_url()
    for program_id in program_ids:
        program = session.get(Program, program_id)
        klass = session.get(GoogleWalletClass, program_id)
        if program is None or klass is None:
            continue
        described = loyalty_program(program, google_config(), logo_url=_logo_url(base, program),
                                    homepage_url=f"{base}/join/{program.slug}")
        result = wallet.client().patch_class(klass.class_id, loyalty_class(described))
        if result.ok:
            klass.shown_program_revision = program.pass_revision
            session.commit()
            report.classes_patched += 1
        else:
            session.rollback()
            log.warning("Google Wallet class %s not patched: %s %s", klass.class_id, result.status, result.reason)
