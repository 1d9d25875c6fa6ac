"""Setting a program up: the program itself, its locations, staff and the API keys of its tills."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from functools import cache
from typing import Any

from sqlalchemy import bindparam, case, null, select, update
from sqlalchemy.orm import Session, joinedload
from werkzeug.security import check_password_hash, generate_password_hash

from app.domain.errors import Conflict, NotFound, Unauthorized, ValidationError
from app.domain.mechanics import mechanics_from_json
from app.domain.money import currency_exponent
from app.domain.pass_changes import note_program_changed
from app.domain.ratelimit import Limit, check_rate, clear_hits, count_hit
from app.domain.rules import ProgramRules, rules_from_json
from app.domain.signing import KeyStore, create_signing_key
from app.models import ApiKey, Card, Location, Program, Staff, utcnow

STAFF_ROLES = ("cashier", "manager")
API_KEY_PREFIX = "lk"
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60].strip("-")
    return slug or "program"


def create_program(
    session: Session,
    keys: KeyStore,
    *,
    name: str,
    currency: str,
    slug: str | None = None,
    rules: Mapping[str, Any] | None = None,
) -> Program:
    """A new program with its first signing key. The slug is unique and never changes."""
    name = name.strip()
    if not name:
        raise ValidationError("A program needs a name.", field="name")
    currency = currency.strip().upper()
    currency_exponent(currency)
    # The core rules are checked and normalised; the mechanics' keys (second visit, stamps, referral, ...) are
    # checked by the mechanics' reader and kept as given, as update_program_rules keeps them.
    mechanics_from_json(rules or {})
    rules_json = {**(rules or {}), **rules_from_json(rules or {}).to_json()}
    if slug is None:
        base = slugify(name)
        slug, n = base, 2
        while session.scalar(select(Program.id).where(Program.slug == slug)) is not None:
            slug, n = f"{base}-{n}", n + 1
    elif not _SLUG.match(slug):
        raise ValidationError("A slug is lower-case letters, digits and dashes.", field="slug")
    elif session.scalar(select(Program.id).where(Program.slug == slug)) is not None:
        raise Conflict(f"A program with slug {slug!r} already exists.")
    program = Program(name=name, slug=slug, currency=currency, rules=rules_json)
    session.add(program)
    session.flush()
    create_signing_key(session, program, keys)
    return program


def get_program(session: Session, slug: str) -> Program:
    program = session.scalar(select(Program).where(Program.slug == slug))
    if program is None:
        raise NotFound(f"No program {slug!r}.")
    return program


def create_location(session: Session, program: Program, name: str) -> Location:
    name = name.strip()
    if not name:
        raise ValidationError("A location needs a name.", field="name")
    if session.scalar(select(Location.id).where(Location.program_id == program.id, Location.name == name)):
        raise Conflict(f"{program.slug} already has a location named {name!r}.")
    location = Location(program_id=program.id, name=name)
    session.add(location)
    session.flush()
    return location


def get_location(session: Session, program: Program, name_or_id: str) -> Location:
    query = select(Location).where(Location.program_id == program.id)
    if name_or_id.isdigit():
        location = session.scalar(query.where(Location.id == int(name_or_id)))
    else:
        location = session.scalar(query.where(Location.name == name_or_id))
    if location is None:
        raise NotFound(f"{program.slug} has no location {name_or_id!r}.")
    return location


def create_staff(session: Session, program: Program, *, email: str, role: str, password: str) -> Staff:
    """A cashier or manager; the password is stored as a scrypt hash (memory-hard)."""
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise ValidationError(f"{email!r} is not an email address.", field="email")
    if role not in STAFF_ROLES:
        raise ValidationError(f"role must be one of {', '.join(STAFF_ROLES)}.", field="role")
    if len(password) < 10:
        raise ValidationError("A password needs at least 10 characters.", field="password")
    if session.scalar(select(Staff.id).where(Staff.email == email)) is not None:
        raise Conflict(f"{email} is already a member of staff.")
    staff = Staff(program_id=program.id, email=email, role=role, password_hash=generate_password_hash(password))
    session.add(staff)
    session.flush()
    return staff



def update_program_rules(session: Session, program: Program, rules: ProgramRules) -> Program:
    """Replace the program's core rules; they price the next quote. Cards whose tier the new thresholds change
    are moved to their new tier now, so a scan shows the same tier the next purchase is priced with."""
    # Keys this version does not know (written by a newer one, or by hand) are kept, not silently dropped.
    program.rules = {**program.rules, **rules.to_json()}
    # The passes print the rules on their back, and tiers on their front.
    program.pass_revision += 1
    note_program_changed(session, program.id)
    tier = (
        case(*((Card.lifetime_spend >= t.min_spend, t.name) for t in sorted(rules.tiers, key=lambda t: -t.min_spend)),
             else_=null())
        if rules.tiers else null()
    )
    session.execute(
        update(Card)
        .where(Card.program_id == program.id, Card.tier.is_distinct_from(tier))
        .values(tier=tier, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return program


def list_staff(session: Session, program: Program) -> list[Staff]:
    """The program's staff: managers first, then cashiers, each by email."""
    return list(session.scalars(
        select(Staff).where(Staff.program_id == program.id).order_by(Staff.role.desc(), Staff.email)
    ))


def set_staff_active(session: Session, program: Program, staff_id: int, *, active: bool, by: Staff) -> Staff:
    """Disable or re-enable a member of the program's staff. A disabled account cannot sign in, and its open
    sessions end at their next request (app/auth.py checks `active` every time)."""
    staff = session.scalar(select(Staff).where(Staff.id == staff_id, Staff.program_id == program.id))
    if staff is None:
        raise NotFound(f"No member of staff {staff_id} in {program.name}.")
    if staff.id == by.id and not active:
        # Otherwise a program could lose its last manager with one click, and only an operator could undo it.
        raise Conflict("You cannot disable your own account; ask another manager or the operator.")
    if staff.active and not active:
        staff.session_epoch += 1
    staff.active = active
    session.flush()
    return staff


SIGN_IN_PER_DEVICE = Limit(hits=20, seconds=600, what="sign-in attempts from this device")
FAILED_SIGN_IN_PER_ACCOUNT = Limit(hits=5, seconds=900, what="failed sign-ins for this account")
@cache
def _dummy_hash() -> str:
    """Checked against when the email is unknown, so a wrong email costs the same time as a wrong password.
    Made on first need: a scrypt hash costs tens of milliseconds, too much for every start-up."""
    return generate_password_hash("not a real password")


def authenticate_staff(session: Session, email: str, password: str, *, source: str, now: dt.datetime) -> Staff:
    """The active staff member with this email and password, or Unauthorized; rate-limited per device and
    per account. Attempts are counted in `session`, so the caller commits whether or not this succeeds."""
    email = email.strip().lower()
    device_key, account_key = f"sign-in:device:{source}", f"sign-in:account:{email}"
    check_rate(session, device_key, SIGN_IN_PER_DEVICE, now)
    check_rate(session, account_key, FAILED_SIGN_IN_PER_ACCOUNT, now)
    count_hit(session, device_key, SIGN_IN_PER_DEVICE, now)
    staff = session.scalar(select(Staff).where(Staff.email == email))
    if not check_password_hash(staff.password_hash if staff else _dummy_hash(), password) or staff is None:
        count_hit(session, account_key, FAILED_SIGN_IN_PER_ACCOUNT, now)
        raise Unauthorized("Wrong email or password.")
    if not staff.active:
        raise Unauthorized("This account has been disabled; ask your manager.")
    clear_hits(session, account_key)
    return staff


def create_api_key(session: Session, location: Location, label: str = "") -> tuple[ApiKey, str]:
    """A till's API key for one program and location. The full key is returned once and never stored."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    api_key = ApiKey(
        key_id=key_id,
        secret_hash=_hash_secret(secret),
        program_id=location.program_id,
        location_id=location.id,
        label=label,
    )
    session.add(api_key)
    session.flush()
    return api_key, f"{API_KEY_PREFIX}_{key_id}_{secret}"


def revoke_api_key(session: Session, key_id: str) -> ApiKey:
    api_key = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
    if api_key is None:
        raise NotFound(f"No API key {key_id!r}.")
    if api_key.revoked_at is not None:
        raise Conflict(f"API key {key_id} is already revoked.")
    api_key.revoked_at = utcnow()
    session.flush()
    return api_key


_API_KEY_BY_ID = select(ApiKey).where(ApiKey.key_id == bindparam("key_id")).options(joinedload(ApiKey.program))


def authenticate_api_key(session: Session, presented: str | None) -> ApiKey:
    """The API key a till presented, or Unauthorized. Compared in constant time on its hash."""
    if not presented:
        raise Unauthorized("Send your API key as `Authorization: Bearer <key>`.")
    prefix, _, rest = presented.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != API_KEY_PREFIX or not key_id or not secret:
        raise Unauthorized("That is not an API key of ours; keys look like lk_<id>_<secret>.")
    api_key = session.scalar(_API_KEY_BY_ID, {"key_id": key_id})
    if api_key is None or not hmac.compare_digest(api_key.secret_hash, _hash_secret(secret)):
        raise Unauthorized("Unknown API key.")
    if api_key.revoked_at is not None:
        raise Unauthorized("This API key has been revoked; ask a manager for a new one.")
    return api_key


def _hash_secret(secret: str) -> str:
    # The secret has 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()
