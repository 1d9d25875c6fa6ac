"""Who may open what: every route of the app against anonymous, a customer with their card link, a cashier,
a manager of another program, and the program's own manager. A new route fails the coverage check until it
has a row here."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.consent import unsubscribe_token
from app.domain.coupons import create_batch, create_coupon, create_offer, create_reward
from app.domain.programs import create_staff
from app.models import Card, utcnow
from app.unsubscribe_links import current_unsubscribe_key
from app.wallet import DEV_PASS_TYPE_ID

PASSWORD = "correct horse battery"
ROLES = ("anonymous", "customer", "cashier", "other_manager", "manager")


@dataclass
class World:
    slug: str
    card_token: str
    code: str
    serial: str
    target_staff_id: int
    new_purchase: Callable[[], int]
    coupon_id: int = 0
    batch_id: int = 0
    offer_id: int = 0
    reward_id: int = 0
    referral_code: str = ""
    unsubscribe_token: str = ""


@dataclass(frozen=True)
class Route:
    endpoint: str
    method: str
    path: Callable[[World], str]
    expected: dict[str, int]
    body: Callable[[World], dict[str, Any]] | None = None
    form: bool = False  # a form post rather than JSON


def same(status: int) -> dict[str, int]:
    return dict.fromkeys(ROLES, status)


def staff_only(anonymous: int, cashier: int, other_manager: int, manager: int) -> dict[str, int]:
    return {"anonymous": anonymous, "customer": anonymous, "cashier": cashier, "other_manager": other_manager,
            "manager": manager}


PASSKIT = "/wallet/apple/v1"
PASS_TYPE = DEV_PASS_TYPE_ID
MANAGER_PAGE = staff_only(302, 403, 200, 200)
TILL_JSON = staff_only(401, 200, 422, 200)  # another program's manager scans a card that is not theirs

ROUTES = [
    Route("public.index", "GET", lambda w: "/", same(200)),
    Route("public.jwks_document", "GET", lambda w: "/.well-known/jwks.json", same(200)),
    Route("public.health", "GET", lambda w: "/healthz", same(200)),
    Route("static", "GET", lambda w: "/static/css/app.css", same(200)),
    Route("customer.join", "GET", lambda w: f"/join/{w.slug}", same(200)),
    Route("customer.referral_link", "GET", lambda w: f"/r/{w.referral_code}", same(200)),
    Route("customer.join", "POST", lambda w: f"/join/{w.slug}", same(422), lambda w: {"name": ""}, form=True),
    Route("customer.resend_link", "POST", lambda w: f"/join/{w.slug}/resend", same(200),
          lambda w: {"email": "nobody@example.com"}, form=True),
    # The card page is reached by its secret link: whoever has it sees the card, nobody else does.
    Route("customer.card_page", "GET", lambda w: f"/c/{w.card_token}",
          {"anonymous": 404, "customer": 200, "cashier": 200, "other_manager": 200, "manager": 200}),
    Route("customer.card_qr_png", "GET", lambda w: f"/c/{w.card_token}/qr.png",
          {"anonymous": 404, "customer": 200, "cashier": 200, "other_manager": 200, "manager": 200}),
    # The NPS answer: only the card's secret link opens it; before a purchase there is nothing to answer (409).
    Route("customer.card_nps_answer", "POST", lambda w: f"/c/{w.card_token}/nps",
          {"anonymous": 404, "customer": 409, "cashier": 409, "other_manager": 409, "manager": 409},
          lambda w: {"score": "9", "action": "send"}, form=True),
    # The unsubscribe link is its own credential: whoever has it may stop that member's emails, nobody else can.
    Route("customer.unsubscribe", "GET", lambda w: f"/u/{w.unsubscribe_token}",
          {"anonymous": 404, "customer": 200, "cashier": 200, "other_manager": 200, "manager": 200}),
    Route("customer.unsubscribe", "POST", lambda w: f"/u/{w.unsubscribe_token}",
          {"anonymous": 404, "customer": 200, "cashier": 200, "other_manager": 200, "manager": 200},
          lambda w: {}, form=True),
    # A live-code secret for one more browser: the link opens it, and this program has no live codes (409).
    Route("customer.device_secret", "POST", lambda w: f"/c/{w.card_token}/device",
          {"anonymous": 404, "customer": 409, "cashier": 409, "other_manager": 409, "manager": 409}),
    Route("customer.apple_pass", "GET", lambda w: f"/c/{w.card_token}/card.pkpass",
          {"anonymous": 404, "customer": 200, "cashier": 200, "other_manager": 200, "manager": 200}),
    Route("google_wallet.save_to_google_wallet", "GET", lambda w: f"/c/{w.card_token}/google-wallet",
          {"anonymous": 404, "customer": 303, "cashier": 303, "other_manager": 303, "manager": 303}),
    Route("public.program_logo", "GET", lambda w: f"/p/{w.slug}/logo.png", same(200)),
    # Apple's web service knows only the pass's own token (none is sent here); cookies open nothing.
    Route("apple_wallet.register", "POST", lambda w: f"{PASSKIT}/devices/d1/registrations/{PASS_TYPE}/{w.serial}",
          same(401), lambda w: {"pushToken": "ab12"}),
    Route("apple_wallet.unregister", "DELETE",
          lambda w: f"{PASSKIT}/devices/d1/registrations/{PASS_TYPE}/{w.serial}", same(401)),
    Route("apple_wallet.changed_serials", "GET", lambda w: f"{PASSKIT}/devices/d1/registrations/{PASS_TYPE}",
          same(204)),
    Route("apple_wallet.latest_pass", "GET", lambda w: f"{PASSKIT}/passes/{PASS_TYPE}/{w.serial}", same(401)),
    Route("apple_wallet.device_log", "POST", lambda w: f"{PASSKIT}/log", same(200), lambda w: {"logs": ["x"]}),
    # The JSON API takes API keys only; a staff session is not one.
    Route("api.openapi", "GET", lambda w: "/api/v1/openapi.json", same(200)),
    Route("api.scan", "POST", lambda w: "/api/v1/scans", same(401), lambda w: {"code": w.code}),
    Route("api.quote", "POST", lambda w: "/api/v1/purchases/quote", same(401), lambda w: {"code": w.code}),
    Route("api.create_purchase", "POST", lambda w: "/api/v1/purchases", same(401), lambda w: {"code": w.code}),
    Route("api.void", "POST", lambda w: f"/api/v1/purchases/{w.new_purchase()}/void", same(401)),
    Route("api.create_enrollment", "POST", lambda w: "/api/v1/enrollments", same(401), lambda w: {}),
    Route("api.card_detail", "GET", lambda w: f"/api/v1/cards/{w.serial}", same(401)),
    Route("api.enrollment_stats", "GET", lambda w: "/api/v1/stats/enrollments", same(401)),
    Route("api.summary_stats", "GET", lambda w: "/api/v1/stats/summary", same(401)),
    Route("auth.sign_in_page", "GET", lambda w: "/login", staff_only(200, 302, 302, 302)),
    Route("auth.sign_in_page", "POST", lambda w: "/login", same(401),
          lambda w: {"email": "nobody@example.com", "password": "wrong"}, form=True),
    Route("cashier.scan_page", "GET", lambda w: "/cashier", staff_only(302, 200, 200, 200)),
    Route("cashier_api.scan", "POST", lambda w: "/cashier/api/scans", TILL_JSON, lambda w: {"code": w.code}),
    Route("cashier_api.quote", "POST", lambda w: "/cashier/api/quotes", TILL_JSON,
          lambda w: {"code": w.code, "amount": "10.00"}),
    Route("cashier_api.create_purchase", "POST", lambda w: "/cashier/api/purchases", staff_only(401, 201, 422, 201),
          lambda w: {"code": w.code, "amount": "10.00"}),
    Route("cashier_api.recent", "GET", lambda w: "/cashier/api/purchases", staff_only(401, 200, 200, 200)),
    Route("cashier_api.void", "POST", lambda w: f"/cashier/api/purchases/{w.new_purchase()}/void",
          staff_only(401, 200, 404, 200)),
    Route("manager.dashboard", "GET", lambda w: "/manager", MANAGER_PAGE),
    Route("manager.analytics_csv", "GET", lambda w: "/manager/analytics/summary.csv", MANAGER_PAGE),
    Route("manager_exports.export_page", "GET", lambda w: "/manager/export", MANAGER_PAGE),
    Route("manager_exports.download", "GET", lambda w: "/manager/export/members.csv", MANAGER_PAGE),
    Route("manager_exports.download", "GET", lambda w: "/manager/export/purchases.csv?from=2026-02-30",
          staff_only(302, 403, 422, 422)),
    Route("manager.settings", "GET", lambda w: "/manager/settings", MANAGER_PAGE),
    Route("manager.settings", "POST", lambda w: "/manager/settings", staff_only(302, 403, 422, 422),
          lambda w: {"earn_points_per_unit": "not a number"}, form=True),
    Route("manager.wallet", "GET", lambda w: "/manager/wallet", MANAGER_PAGE),
    Route("manager.wallet", "POST", lambda w: "/manager/wallet", staff_only(302, 403, 422, 422),
          lambda w: {"pass_background": "not a colour"}, form=True),
    Route("manager_offers.coupons", "GET", lambda w: "/manager/coupons", MANAGER_PAGE),
    Route("manager_offers.create_promo_code", "POST", lambda w: "/manager/coupons", staff_only(302, 403, 422, 422),
          lambda w: {"code": "not a code!"}, form=True),
    Route("manager_offers.create_code_batch", "POST", lambda w: "/manager/coupons/batches",
          staff_only(302, 403, 422, 422), lambda w: {"batch_count": "0"}, form=True),
    Route("manager_offers.export_batch", "GET", lambda w: f"/manager/coupons/batches/{w.batch_id}.csv",
          staff_only(302, 403, 404, 200)),
    Route("manager_offers.deactivate_coupon", "POST", lambda w: f"/manager/coupons/{w.coupon_id}/deactivate",
          staff_only(302, 403, 404, 303), lambda w: {}, form=True),
    Route("manager_offers.reactivate_coupon", "POST", lambda w: f"/manager/coupons/{w.coupon_id}/reactivate",
          staff_only(302, 403, 404, 303), lambda w: {}, form=True),
    Route("manager_offers.deactivate_batch", "POST", lambda w: f"/manager/coupons/batches/{w.batch_id}/deactivate",
          staff_only(302, 403, 404, 303), lambda w: {}, form=True),
    Route("manager_offers.reactivate_batch", "POST", lambda w: f"/manager/coupons/batches/{w.batch_id}/reactivate",
          staff_only(302, 403, 404, 303), lambda w: {}, form=True),
    Route("manager_offers.offers", "GET", lambda w: "/manager/offers", MANAGER_PAGE),
    Route("manager_offers.create_member_offer", "POST", lambda w: "/manager/offers", staff_only(302, 403, 422, 422),
          lambda w: {"title": ""}, form=True),
    Route("manager_offers.end_member_offer", "POST", lambda w: f"/manager/offers/{w.offer_id}/end",
          staff_only(302, 403, 404, 303), lambda w: {}, form=True),
    Route("manager_offers.rewards", "GET", lambda w: "/manager/rewards", MANAGER_PAGE),
    Route("manager_offers.create_catalogue_reward", "POST", lambda w: "/manager/rewards",
          staff_only(302, 403, 422, 422), lambda w: {"name": ""}, form=True),
    Route("manager_offers.deactivate_reward", "POST", lambda w: f"/manager/rewards/{w.reward_id}/deactivate",
          staff_only(302, 403, 404, 303), lambda w: {}, form=True),
    Route("manager_offers.reactivate_reward", "POST", lambda w: f"/manager/rewards/{w.reward_id}/reactivate",
          staff_only(302, 403, 404, 303), lambda w: {}, form=True),
    Route("manager.staff", "GET", lambda w: "/manager/staff", MANAGER_PAGE),
    Route("manager.add_cashier", "POST", lambda w: "/manager/staff", staff_only(302, 403, 422, 422),
          lambda w: {"email": "not-an-email", "password": "short"}, form=True),
    Route("manager.disable_staff", "POST", lambda w: f"/manager/staff/{w.target_staff_id}/disable",
          staff_only(302, 403, 404, 303), lambda w: {}, form=True),
    Route("manager.enable_staff", "POST", lambda w: f"/manager/staff/{w.target_staff_id}/enable",
          staff_only(302, 403, 404, 303), lambda w: {}, form=True),
    Route("auth.sign_out_page", "POST", lambda w: "/logout", same(303), lambda w: {}, form=True),
]


def _csrf(client: FlaskClient, slug: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(f"/join/{slug}").text)
    assert match
    return match.group(1)


def _client_for(app: Flask, role: str, emails: dict[str, str], slug: str) -> FlaskClient:
    client = app.test_client()
    if role in emails:
        token = _csrf(client, slug)
        signed_in = client.post("/login", data={"csrf_token": token, "email": emails[role], "password": PASSWORD})
        assert signed_in.status_code == 303, signed_in.text
    return client


def test_every_route_is_in_the_matrix(app: Flask) -> None:
    in_app = {(rule.endpoint, method) for rule in app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}
              if not rule.endpoint.startswith("bench_reference.")}
    assert in_app == {(route.endpoint, route.method) for route in ROUTES}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.endpoint}")
def test_authorization_matrix(app: Flask, client: FlaskClient, make_program, enroll, db_session: Session,
                              route: Route) -> None:
    kit, other = make_program(), make_program()
    emails = {"cashier": f"cashier-{kit.program.slug}@example.com",
              "manager": f"manager-{kit.program.slug}@example.com",
              "other_manager": f"manager-{other.program.slug}@example.com"}
    create_staff(db_session, kit.program, email=emails["cashier"], role="cashier", password=PASSWORD)
    create_staff(db_session, kit.program, email=emails["manager"], role="manager", password=PASSWORD)
    create_staff(db_session, other.program, email=emails["other_manager"], role="manager", password=PASSWORD)
    target = create_staff(db_session, kit.program, email=f"target-{kit.program.slug}@example.com",
                          role="cashier", password=PASSWORD)
    now, terms = utcnow(), {"discount_type": "percent", "discount": "10"}
    coupon = create_coupon(db_session, kit.program, {"code": "SPRING10", **terms}, now=now)
    batch = create_batch(db_session, kit.program, {"label": "Flyer", "count": "3", **terms}, now=now)
    offer = create_offer(db_session, kit.program, {"title": "Week", "ends": "2099-01-01", **terms}, now=now)
    reward = create_reward(db_session, kit.program, {"name": "Coffee", "points_cost": "150", "value": "3.20"},
                           now=now)
    db_session.commit()
    member = enroll(kit)

    def new_purchase() -> int:
        made = client.post("/api/v1/purchases", json={"code": member["code"], "amount": "5.00"},
                           headers=kit.purchase_headers())
        assert made.status_code == 201
        return int(made.json["id"])

    world = World(kit.program.slug, member["card_url"].rsplit("/", 1)[1], member["code"], member["serial"],
                  target.id, new_purchase, coupon.id, batch.id, offer.id, reward.id,
                  db_session.scalar(select(Card.referral_code).where(Card.serial == member["serial"])) or "")
    with app.app_context():
        member_token = unsubscribe_token(
            db_session.scalar(select(Card.customer_id).where(Card.serial == member["serial"])) or 0,
            current_unsubscribe_key())
    answers = {}
    for role in ROLES:
        # A forged token for the anonymous visitor, the member's own link for everyone else.
        world.unsubscribe_token = "1.AAAAAAAAAAAAAAAAAAAAAA" if role == "anonymous" else member_token
        if role == "anonymous" and route.endpoint.startswith(("customer.card", "customer.apple_pass",
                                                              "customer.device", "google_wallet.")):
            world.card_token = "not-the-link"
        else:
            world.card_token = member["card_url"].rsplit("/", 1)[1]
        browser = _client_for(app, role, emails, kit.program.slug)
        token = _csrf(browser, kit.program.slug)
        headers = {"X-CSRF-Token": token, "Idempotency-Key": str(uuid.uuid4())}
        path = route.path(world)
        if route.method == "GET":
            response = browser.get(path)
        elif route.method == "DELETE":
            response = browser.delete(path, headers=headers)
        elif route.form:
            response = browser.post(path, data={"csrf_token": token, **(route.body(world) if route.body else {})})
        else:
            response = browser.post(path, json=route.body(world) if route.body else None, headers=headers)
        answers[role] = response.status_code
        response.close()  # static files are streamed from an open file
    assert answers == route.expected
