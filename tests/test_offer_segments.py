"""Offers aimed at a member segment, over HTTP: the manager chooses "Everyone" or a segment, the card page, the
Apple pass and the till's scan list an offer only to members of its segment, and a member outside it who asks
for it at the till is refused with the reason (422 offer_refused) with nothing committed."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import uuid
import zipfile
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.models import Card, Customer, Offer, Purchase
from app.views import apple_wallet as apple_wallet_views
from app.views import customer as customer_views
from app.views import till as till_views
from tests.conftest import TEST_RULES, ProgramKit
from tests.test_settings_mechanics import csrf, field_error, manager_of

__all__ = ["manager_of"]  # the fixture, used by name below

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock of the till, the card page and the Apple pass, pinned to NOW: segments are judged in days from it."""
    for module in (till_views, customer_views, apple_wallet_views):
        monkeypatch.setattr(module, "utcnow", lambda: NOW)


# --- the manager's form ------------------------------------------------------------------------------------------


def _offer_form(**fields: str) -> dict[str, str]:
    return {"title": "Welcome back", "detail": "", "discount_type": "percent", "discount": "20", "min_basket": "",
            "starts": "", "ends": "2099-12-31", **fields}


def _post_offer(client: FlaskClient, **fields: str) -> Any:
    return client.post("/manager/offers", data={"csrf_token": csrf(client, "/manager/offers"), **_offer_form(**fields)})


def test_the_manager_aims_an_offer_at_a_segment(make_program, manager_of, db_session: Session) -> None:
    kit = make_program()
    client = manager_of(kit)
    page = client.get("/manager/offers").text
    assert '<option value="" selected>Everyone</option>' in page
    assert '<option value="vip">VIP members: Gold</option>' in page
    assert '<option value="lapsed">Lapsed members: no purchase for 90 days or more</option>' in page
    assert '<option value="new">New members: joined in the last 30 days</option>' in page

    assert _post_offer(client, title="Welcome back", segment="lapsed").status_code == 303
    assert _post_offer(client, title="For all", segment="").status_code == 303
    offers = db_session.execute(select(Offer.title, Offer.segment).where(Offer.program_id == kit.program.id)
                                .order_by(Offer.id)).all()
    assert offers == [("Welcome back", "lapsed"), ("For all", None)]
    listing = client.get("/manager/offers").text
    assert "20% off, until 31 Dec 2099 (UTC), only for members who have not bought for a while" in listing


@pytest.mark.parametrize(("segment", "message"), [
    ("sleepy", "Choose who gets the offer: everyone, or one group of members from the list."),
    ("VIP", "Choose who gets the offer: everyone, or one group of members from the list."),
])
def test_an_unknown_segment_is_refused_and_nothing_saved(make_program, manager_of, db_session: Session,
                                                         segment: str, message: str) -> None:
    kit = make_program()
    client = manager_of(kit)
    response = _post_offer(client, segment=segment)
    assert response.status_code == 422
    assert field_error(response.text, "segment") == message
    assert db_session.scalar(select(func.count()).select_from(Offer).where(Offer.program_id == kit.program.id)) == 0


def test_a_program_without_tiers_offers_no_vip_segment(make_program, manager_of, db_session: Session) -> None:
    kit = make_program(rules={"earn": {"points_per_unit": "1", "rounding": "down"}, "welcome_bonus": 0})
    client = manager_of(kit)
    assert 'value="vip"' not in client.get("/manager/offers").text
    response = _post_offer(client, segment="vip")
    assert response.status_code == 422
    assert "no tiers, so it has no VIP members" in field_error(response.text, "segment")
    assert db_session.scalar(select(func.count()).select_from(Offer).where(Offer.program_id == kit.program.id)) == 0


# --- members, the card page, the pass and the till ----------------------------------------------------------------


class Members:
    """A program with an offer for everyone, one for VIPs and one for lapsed members, and one member of each
    of the segments that matter here: VIP (Gold), active, lapsed."""

    def __init__(self, client: FlaskClient, session: Session, kit: ProgramKit,
                 enroll: Callable[..., dict[str, Any]]) -> None:
        self.client, self.session, self.kit = client, session, kit
        self.everyone = self._offer("Members' week", None)
        self.vip_offer = self._offer("Gold evening", "vip")
        self.lapsed_offer = self._offer("We miss you", "lapsed")
        self.vip = self._member(enroll, tier="Gold", joined=NOW - 400 * DAY, bought=NOW - 3 * DAY)
        self.active = self._member(enroll, tier="Silver", joined=NOW - 400 * DAY, bought=NOW - 3 * DAY)
        self.lapsed = self._member(enroll, tier="Gold", joined=NOW - 400 * DAY, bought=NOW - 90 * DAY)

    def _offer(self, title: str, segment: str | None) -> Offer:
        offer = Offer(program_id=self.kit.program.id, title=title, discount_type="percent", discount_value=1000,
                      segment=segment)
        self.session.add(offer)
        self.session.commit()
        return offer

    def _member(self, enroll: Callable[..., dict[str, Any]], *, tier: str, joined: dt.datetime,
                bought: dt.datetime) -> dict[str, Any]:
        member = enroll(self.kit)
        card_id = self.session.scalar(select(Card.id).where(Card.serial == member["serial"]))
        self.session.execute(update(Card).where(Card.id == card_id).values(
            tier=tier, last_purchase_at=bought, first_purchase_at=bought, purchase_count=1, lifetime_spend=60_000))
        self.session.execute(update(Customer).where(Customer.id == select(Card.customer_id)
                                                    .where(Card.id == card_id).scalar_subquery())
                             .values(created_at=joined))
        self.session.commit()
        return member

    def card_page(self, member: dict[str, Any]) -> str:
        response = self.client.get(urlsplit(member["card_url"]).path)
        assert response.status_code == 200
        return response.text

    def scan(self, member: dict[str, Any]) -> list[str]:
        response = self.client.post("/api/v1/scans", json={"code": member["code"]}, headers=self.kit.headers)
        assert response.status_code == 200, response.json
        return [offer["title"] for offer in response.json["offers"]]

    def buy(self, member: dict[str, Any], offer: Offer, *, quote: bool = False) -> Any:
        path = "/api/v1/purchases/quote" if quote else "/api/v1/purchases"
        return self.client.post(path, json={"code": member["code"], "amount": "50.00", "offer_ids": [offer.id]},
                                headers=self.kit.purchase_headers(str(uuid.uuid4())))

    def purchases(self) -> int:
        return int(self.session.scalar(select(func.count()).select_from(Purchase)
                                       .where(Purchase.program_id == self.kit.program.id)) or 0)


@pytest.fixture()
def members(client: FlaskClient, db_session: Session, make_program: Callable[..., ProgramKit],
            enroll: Callable[..., dict[str, Any]]) -> Members:
    return Members(client, db_session, make_program(rules=TEST_RULES), enroll)


def _offer_titles(html: str) -> list[str]:
    return re.findall(r'<span class="offer-title">([^<]+)</span>', html.replace("&#39;", "'"))


def test_the_card_page_lists_only_the_offers_for_the_members_segment(members: Members) -> None:
    assert _offer_titles(members.card_page(members.vip)) == ["Members' week", "Gold evening"]
    assert _offer_titles(members.card_page(members.active)) == ["Members' week"]
    # Lapsed comes first: a Gold member who has not bought for 90 days gets the lapsed offer, not the VIP one.
    assert _offer_titles(members.card_page(members.lapsed)) == ["Members' week", "We miss you"]


def test_the_tills_scan_lists_only_the_offers_for_the_members_segment(members: Members) -> None:
    assert members.scan(members.vip) == ["Members' week", "Gold evening"]
    assert members.scan(members.active) == ["Members' week"]
    assert members.scan(members.lapsed) == ["Members' week", "We miss you"]


def test_the_apple_pass_lists_only_the_offers_for_the_members_segment(members: Members) -> None:
    def back(member: dict[str, Any]) -> str:
        response = members.client.get(urlsplit(member["card_url"]).path + "/card.pkpass")
        assert response.status_code == 200
        with zipfile.ZipFile(io.BytesIO(response.data)) as pkpass:
            fields = json.loads(pkpass.read("pass.json"))["storeCard"]["backFields"]
        return " ".join(f"{field.get('label', '')} {field['value']}" for field in fields)

    assert "Gold evening" in back(members.vip) and "We miss you" not in back(members.vip)
    active = back(members.active)
    assert "Members' week" in active and "Gold evening" not in active and "We miss you" not in active


def test_a_member_outside_the_segment_is_refused_the_offer_at_the_till(members: Members) -> None:
    quote = members.buy(members.active, members.vip_offer, quote=True)
    assert quote.status_code == 200
    assert quote.json["lines"] == [] or all(line["kind"] != "offer" for line in quote.json["lines"])
    assert [(n["code"], n["message"]) for n in quote.json["notices"]] == [
        ("offer_not_for_segment", "Gold evening is only for VIP members, and this member is not one.")]

    refused = members.buy(members.active, members.vip_offer)
    assert refused.status_code == 422
    assert refused.json["code"] == "offer_refused"
    assert refused.json["refusals"] == [{"reason": "offer_not_for_segment",
                                         "message": "Gold evening is only for VIP members, and this member is "
                                                    "not one."}]
    assert "Nothing was committed" in refused.json["detail"]
    assert members.purchases() == 0

    lapsed = members.buy(members.active, members.lapsed_offer)
    assert lapsed.status_code == 422
    assert "only for members who have not bought for a while" in lapsed.json["detail"]
    assert members.purchases() == 0


def test_a_member_in_the_segment_gets_the_offer(members: Members) -> None:
    bought = members.buy(members.vip, members.vip_offer)
    assert bought.status_code == 201, bought.json
    assert {"kind": "offer", "label": "Gold evening", "amount": "4.50"} in bought.json["lines"]
    assert members.buy(members.lapsed, members.lapsed_offer).status_code == 201
    assert members.buy(members.active, members.everyone).status_code == 201
    assert members.purchases() == 3
