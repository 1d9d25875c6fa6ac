"""The manager's pages over HTTP: the dashboard's figures and charts against the database, the rules form, staff.

Each test signs a manager in the way a person does (the sign-in form, with its CSRF token) and reads what the
page shows: the figures carry their raw values in `data-value`, the chart's bars carry `data-day`,
`data-channel` / `data-location` and `data-count`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.charts import label_step, nice_scale, stacked_bar_chart
from app.domain.analytics import bucket_start
from app.domain.dashboard import OTHER_LOCATIONS, StackedSeries, display_money, fold_small_series
from app.domain.enrollment import EnrollmentRequest, enroll_customer
from app.domain.errors import ValidationError
from app.domain.programs import create_location
from app.domain.rules import ProgramRules, Tier, rules_from_json
from app.domain.settings import rules_form_values, rules_from_form
from app.domain.stats import period_start
from app.models import Card, Customer, Program, Purchase, Staff, utcnow
from tests.conftest import PASSWORD

# --- signing in ------------------------------------------------------------------------------------------------

def _csrf(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, f"{path} carries a CSRF token"
    return match.group(1)


def _sign_in(client: FlaskClient, email: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    return client.post("/login", data={"csrf_token": _csrf(client), "email": email, "password": password})


def _post_form(client: FlaskClient, path: str, data: dict[str, str], form_page: str | None = None):  # type: ignore[no-untyped-def]
    return client.post(path, data={"csrf_token": _csrf(client, form_page or path), **data})


# --- reading the pages ---------------------------------------------------------------------------------------

GLANCE = {"members", "active_members", "purchases_in_window", "purchases", "revenue_in_window", "revenue",
          "points_issued", "points_redeemed", "points_outstanding"}


def _kpis(html: str, names: set[str] = GLANCE) -> dict[str, int]:
    """The figures shown, by name (the "At a glance" ones unless `names` says otherwise)."""
    found = {name: int(value) for name, value in re.findall(r'data-kpi="(\w+)" data-value="(-?\d+)"', html)}
    return {name: value for name, value in found.items() if name in names}


def _bars(html: str, chart_id: str, dimension: str) -> Counter[tuple[str, str]]:
    figure = re.search(rf'<figure class="chart" id="{chart_id}">.*?</figure>', html, re.S)
    assert figure, f"the page has the chart {chart_id}"
    bars: Counter[tuple[str, str]] = Counter()
    for day, name, count in re.findall(
        rf'<rect [^>]*data-day="([\d-]+)" data-{dimension}="([^"]*)" data-count="(\d+)"', figure.group(0)
    ):
        assert (day, name) not in bars, "one bar segment per day and series"
        bars[day, name] = int(count)
    return bars


def _field_error(html: str, field: str) -> str:
    match = re.search(rf'data-error-for="{field}">([^<]*)<', html)
    assert match, f"an error is shown next to {field}"
    return match.group(1)


def _reload(db_session: Session, program: Program) -> Program:
    db_session.expire_all()
    found = db_session.get(Program, program.id)
    assert found is not None
    return found


# --- the dashboard -------------------------------------------------------------------------------------------

def test_empty_dashboard_says_what_to_do_next(make_program, manager_client) -> None:
    kit = make_program()
    page = manager_client(kit).get("/manager")
    assert page.status_code == 200
    join_url = f"http://loyalty.test/join/{kit.program.slug}"
    assert f'No enrollments yet — share your enrollment link: <a href="{join_url}">{join_url}</a>' in page.text
    assert 'data-empty="purchases"' in page.text
    assert "Nobody has enrolled yet" in page.text
    assert '<figure class="chart"' not in page.text  # no empty chart before the first member
    assert set(_kpis(page.text).values()) == {0}
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")


def _purchase(client: FlaskClient, kit, member: dict[str, Any], amount: str, **extra: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/purchases", json={"code": member["code"], "amount": amount, **extra},
                           headers=kit.purchase_headers())
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def test_figures_match_a_hand_computation(client: FlaskClient, make_program, enroll, manager_client,
                                          db_session: Session) -> None:
    # TEST_RULES: 1 point per EUR rounded down, 50 welcome points, Silver from 100.00 EUR with 5% off,
    # a point redeems for 0.01 EUR.
    kit = make_program()
    amina, bruno, chloe = (enroll(kit, name=n) for n in ("Amina Karimi", "Bruno Diaz", "Chloe Martin"))
    first = _purchase(client, kit, amina, "120.00")  # 120 points; Amina reaches Silver
    second = _purchase(client, kit, bruno, "30.00")  # 30 points
    third = _purchase(client, kit, amina, "20.00", redeem_points=10)  # 5% off -> 19.00, minus 0.10 -> 18.90
    voided = _purchase(client, kit, chloe, "10.00")  # 10 points, then voided
    assert client.post(f"/api/v1/purchases/{voided['id']}/void", headers=kit.headers).status_code == 200
    assert (first["amount_due"], second["amount_due"], third["amount_due"]) == ("120.00", "30.00", "18.90")
    assert third["points_earned"] == 18

    # Bruno's purchase was 40 days ago: it counts all time but not in the last 30 days.
    db_session.execute(update(Purchase).where(Purchase.id == second["id"])
                       .values(created_at=utcnow() - dt.timedelta(days=40)))
    db_session.commit()

    page = manager_client(kit).get("/manager")
    assert page.status_code == 200
    assert _kpis(page.text) == {
        "members": 3,
        "active_members": 1,  # only Amina bought in the last 30 days; Chloe's purchase was voided
        "purchases_in_window": 2,
        "purchases": 3,
        "revenue_in_window": 120_00 + 18_90,
        "revenue": 120_00 + 30_00 + 18_90,
        "points_issued": 3 * 50 + 120 + 30 + 18,  # the voided purchase's 10 points were never really issued
        "points_redeemed": 10,
        "points_outstanding": (50 + 120 - 10 + 18) + (50 + 30) + 50,
    }
    assert "138.90 EUR" in page.text and "168.90 EUR" in page.text
    balances = db_session.scalars(select(Card.points).where(Card.program_id == kit.program.id)).all()
    assert sum(balances) == _kpis(page.text)["points_outstanding"]
    assert 'data-empty="purchases"' not in page.text and 'data-empty="enrollments"' not in page.text


def test_latest_enrollments_show_masked_names_newest_first(client: FlaskClient, make_program, enroll,
                                                          manager_client) -> None:
    kit = make_program()
    enroll(kit, name="Amina Karimi")
    enroll(kit, name="Zoltan Berger")
    page = manager_client(kit).get("/manager").text
    table = re.search(r'<table class="data-table latest-enrollments">.*?</table>', page, re.S)
    assert table
    assert re.findall(r"<td>(\w+ \w\.)</td>", table.group(0)) == ["Zoltan B.", "Amina K."]
    assert "Karimi" not in page and "Berger" not in page
    assert table.group(0).count("High Street") == 2 and table.group(0).count('data-channel="api"') == 2


def test_charts_show_the_counts_the_database_holds(client: FlaskClient, make_program, enroll, manager_client,
                                                   db_session: Session) -> None:
    kit = make_program()
    station = create_location(db_session, kit.program, "Station <Kiosk>")  # markup in a name stays text
    db_session.commit()
    api_members = [enroll(kit) for _ in range(4)]
    for channel, location_id in (("till", station.id), ("till", station.id), ("referral", None)):
        enroll_customer(db_session, kit.program,
                        EnrollmentRequest(f"Till Member {channel}", f"{channel}-{location_id}-{utcnow().timestamp()}"
                                          "@example.com", None, False, None),
                        channel=channel, location_id=location_id)
    db_session.commit()
    web = _post_form(client, f"/join/{kit.program.slug}", {"name": "Web Member", "email": "web@example.com"})
    assert web.status_code == 303
    # Spread the enrollments over the windows: 3 days ago, 20 days ago, 60 days ago, 200 days ago.
    for member, days_ago in zip(api_members, (3, 20, 60, 200), strict=True):
        db_session.execute(update(Customer).where(Customer.id == select(Card.customer_id)
                                                  .where(Card.serial == member["serial"]).scalar_subquery())
                           .values(created_at=utcnow() - dt.timedelta(days=days_ago)))
    db_session.commit()

    rows = db_session.execute(
        select(Customer.created_at, Customer.channel, Customer.location_id).where(Customer.program_id == kit.program.id)
    ).all()
    names = {kit.location.id: "High Street", station.id: "Station <Kiosk>", None: "Online"}
    today = utcnow().date()
    manager = manager_client(kit)
    totals = {}
    # 30 days are drawn per day, 90 per week (from Monday), a year per month.
    for days, bucket in ((30, "day"), (90, "week"), (365, "month")):
        first_day = today - dt.timedelta(days=days - 1)
        page = manager.get(f"/manager?from={first_day.isoformat()}&to={today.isoformat()}").text
        in_window = [r for r in rows if r.created_at.date() >= first_day]
        by_channel = Counter((bucket_start(r.created_at.date(), bucket).isoformat(), r.channel) for r in in_window)
        by_location = Counter((bucket_start(r.created_at.date(), bucket).isoformat(), names[r.location_id])
                              for r in in_window)
        assert _bars(page, "enrollments-channel", "channel") == by_channel
        shown = _bars(page, "enrollments-location", "location")
        assert Counter({(day, name.replace("&lt;", "<").replace("&gt;", ">")): n
                        for (day, name), n in shown.items()}) == by_location
        totals[days] = sum(by_channel.values())
        assert "Station &lt;Kiosk&gt;" in page and "Station <Kiosk>" not in page
        assert re.search(r'<svg class="chart-svg"[^>]*role="img" aria-labelledby="enrollments-channel-title', page)
    assert totals == {30: 6, 90: 7, 365: 8}


@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_the_stats_api_counts_what_the_database_holds(client: FlaskClient, make_program, enroll,
                                                     db_session: Session, period: str) -> None:
    # The API shares the dashboard's per-day GROUP BY and folds days into weeks and months.
    kit = make_program()
    for days_ago in (0, 1, 8, 35, 400):
        member = enroll(kit)
        db_session.execute(update(Customer).where(Customer.id == select(Card.customer_id)
                                                  .where(Card.serial == member["serial"]).scalar_subquery())
                           .values(created_at=utcnow() - dt.timedelta(days=days_ago)))
    db_session.commit()
    assert _post_form(client, f"/join/{kit.program.slug}", {"name": "Web Member", "email": "w@example.com"}
                      ).status_code == 303
    rows = db_session.execute(select(Customer.created_at, Customer.channel, Customer.location_id)
                              .where(Customer.program_id == kit.program.id)).all()
    expected: dict[str, Counter[str]] = {}
    for created_at, channel, location_id in rows:
        start = period_start(created_at, period).isoformat()
        counts = expected.setdefault(start, Counter())
        counts["count"] += 1
        counts[f"channel:{channel}"] += 1
        counts[f"location:{'High Street' if location_id else 'online'}"] += 1

    stats = client.get(f"/api/v1/stats/enrollments?period={period}", headers=kit.headers).json
    assert stats["total"] == 6
    assert [s["start"] for s in stats["series"]] == sorted(expected)
    for series in stats["series"]:
        shown = Counter({"count": series["count"]})
        shown.update({f"channel:{c}": n for c, n in series["by_channel"].items()})
        shown.update({f"location:{loc}": n for loc, n in series["by_location"].items()})
        assert shown == expected[series["start"]]


# --- the rules form ------------------------------------------------------------------------------------------

def _settings_form(client: FlaskClient) -> dict[str, str]:
    """The settings form's current values, as the browser would send them back."""
    page = client.get("/manager/settings").text
    values = dict(re.findall(r'<input id="([\w]+)" name="\1" type="text" value="([^"]*)"', page))
    values.update(re.findall(r'<input name="(tier_\w+)" id="\1" value="([^"]*)"', page))
    selected = re.search(r'<option value="(\w+)" selected>', page)
    assert selected
    values["rounding"] = selected.group(1)
    return values


def test_settings_form_shows_the_stored_rules(make_program, manager_client) -> None:
    client = manager_client(make_program())
    assert _settings_form(client) == {
        "points_per_unit": "1", "rounding": "down", "welcome_bonus": "50", "point_value": "0.01",
        "redeem_max_percent": "50",
        "tier_name_0": "Silver", "tier_min_spend_0": "100.00", "tier_discount_0": "5",
        "tier_name_1": "Gold", "tier_min_spend_1": "500.00", "tier_discount_1": "10",
        **{f"tier_{part}_{i}": "" for i in (2, 3, 4) for part in ("name", "min_spend", "discount")},
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("points_per_unit", "abc", "Points per EUR is a number such as 1 or 0.5"),
        ("points_per_unit", "-1", "Points per EUR cannot be negative"),
        ("points_per_unit", "", "Points per EUR is a number"),
        ("tier_min_spend_0", "-5", "The minimum spend cannot be negative."),
        ("tier_min_spend_0", "ten", "The minimum spend is an amount in EUR such as 12.50."),
        ("tier_min_spend_0", "100.005", "has more decimals than EUR allows (2)"),
        ("tier_min_spend_1", "100.00", "Silver already starts at this spend"),
        ("tier_discount_0", "101", "A discount is at most 100%."),
        ("tier_discount_0", "-5", "A discount cannot be negative."),
        ("tier_discount_0", "five", "A discount is a percentage such as 5 or 2.5."),
        ("tier_name_1", "silver", "Another tier is already called Silver."),
        ("tier_name_1", "", "Give this tier a name"),
        ("welcome_bonus", "ten", "The welcome bonus is a whole number"),
        ("welcome_bonus", "-50", "The welcome bonus cannot be negative."),
        ("point_value", "0.001", "more decimals than EUR allows"),
        ("redeem_max_percent", "150", "at most 100"),
        ("rounding", "sideways", "Choose how points are rounded."),
    ],
)
def test_bad_settings_are_refused_next_to_the_field_and_nothing_changes(
    make_program, manager_client, db_session: Session, field: str, value: str, message: str
) -> None:
    kit = make_program()
    client = manager_client(kit)
    before = dict(kit.program.rules)
    form = {**_settings_form(client), "points_per_unit": "3", field: value}  # a good change alongside
    response = _post_form(client, "/manager/settings", form)
    assert response.status_code == 422
    assert message in _field_error(response.text, field)
    assert "Nothing was saved" in response.text
    if field != "rounding" and value:
        assert re.search(rf'name="{field}"[^>]*value="{re.escape(value)}"', response.text)  # what was typed stays
    assert _reload(db_session, kit.program).rules == before


def test_every_bad_field_is_reported_at_once(make_program, manager_client) -> None:
    client = manager_client(make_program())
    form = {**_settings_form(client), "points_per_unit": "x", "tier_discount_0": "200", "welcome_bonus": "-1"}
    response = _post_form(client, "/manager/settings", form)
    assert response.status_code == 422
    assert "3 fields need fixing" in response.text
    for field in ("points_per_unit", "tier_discount_0", "welcome_bonus"):
        assert _field_error(response.text, field)
        assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', response.text)


def test_settings_without_a_csrf_token_are_refused(make_program, manager_client, db_session: Session) -> None:
    kit = make_program()
    client = manager_client(kit)
    form = _settings_form(client)
    response = client.post("/manager/settings", data={**form, "points_per_unit": "9"})
    assert response.status_code == 400
    assert _reload(db_session, kit.program).rules["earn"]["points_per_unit"] == "1"


def test_saved_rules_price_the_next_purchase(client: FlaskClient, make_program, enroll, manager_client,
                                            db_session: Session) -> None:
    kit = make_program()
    member = enroll(kit)
    quote = {"code": member["code"], "amount": "50.00"}
    before = client.post("/api/v1/purchases/quote", json=quote, headers=kit.headers).json
    assert (before["amount_due"], before["points_earned"]) == ("50.00", 50)

    manager = manager_client(kit)
    form = {**_settings_form(manager), "points_per_unit": "2", "rounding": "half_up", "welcome_bonus": "75",
            # Silver is removed (its row cleared), Gold kept, Bronze added from zero spend.
            "tier_name_0": "", "tier_min_spend_0": "", "tier_discount_0": "",
            "tier_name_3": "Bronze", "tier_min_spend_3": "0", "tier_discount_3": "2.5"}
    saved = _post_form(manager, "/manager/settings", form)
    assert saved.status_code == 303
    assert saved.headers["Location"] == "/manager/settings"
    assert "Rules saved." in manager.get("/manager/settings").text

    rules = rules_from_json(_reload(db_session, kit.program).rules)
    assert rules == ProgramRules(points_per_unit=Decimal(2), rounding="half_up",
                                 tiers=(Tier("Bronze", 0, 250), Tier("Gold", 50_000, 1000)),
                                 welcome_bonus=75, point_value=1, redeem_max_percent=50)
    after = client.post("/api/v1/purchases/quote", json=quote, headers=kit.headers).json
    # 2.5% of 50.00 = 1.25 off; 48.75 EUR at 2 points per EUR is 97.5 points, rounded half up to 98.
    assert after["lines"] == [{"kind": "tier_discount", "label": "Bronze member 2.5%", "amount": "1.25"}]
    assert (after["amount_due"], after["points_earned"]) == ("48.75", 98)
    # The member's card moved to the tier the new thresholds give it, so a scan says the same as the quote.
    scan = client.post("/api/v1/scans", json={"code": member["code"]}, headers=kit.headers).json
    assert scan["tier"] == "Bronze"


# --- staff ---------------------------------------------------------------------------------------------------

def test_manager_adds_a_cashier_who_can_then_sign_in(app, make_program, manager_client, db_session: Session) -> None:
    kit = make_program()
    client = manager_client(kit)
    added = _post_form(client, "/manager/staff", {"email": "Till.One@Example.com", "password": "long enough pw"})
    assert added.status_code == 303
    page = client.get("/manager/staff").text
    assert "till.one@example.com can now sign in as a cashier." in page
    assert re.search(r'<tr data-staff="till.one@example.com" data-active="true">', page)
    cashier = db_session.scalar(select(Staff).where(Staff.email == "till.one@example.com"))
    assert cashier is not None and cashier.role == "cashier" and cashier.program_id == kit.program.id

    with app.test_client() as till:
        assert _sign_in(till, "till.one@example.com", "long enough pw").headers["Location"] == "/cashier"


@pytest.mark.parametrize(
    ("email", "password", "status", "field", "message"),
    [
        ("new@example.com", "tiny-pw", 422, "password", "A password needs at least 10 characters."),
        ("not an email", "long enough pw", 422, "email", "is not an email address."),
        ("MANAGER-{slug}@example.com", "long enough pw", 409, "email", "is already a member of staff."),
    ],
)
def test_adding_a_cashier_is_refused_with_a_clear_reason(
    make_program, manager_client, db_session: Session, email: str, password: str, status: int, field: str,
    message: str,
) -> None:
    kit = make_program()
    client = manager_client(kit)
    before = db_session.scalars(select(Staff.id).where(Staff.program_id == kit.program.id)).all()
    response = _post_form(client, "/manager/staff", {"email": email.format(slug=kit.program.slug),
                                                     "password": password})
    assert response.status_code == status
    assert message in _field_error(response.text, field)
    assert password not in response.text.replace("long enough pw", "")  # a refused password is not echoed
    assert db_session.scalars(select(Staff.id).where(Staff.program_id == kit.program.id)).all() == before


def test_a_disabled_cashier_is_signed_out_and_cannot_sign_in(app, make_program, manager_client, staff_of,
                                                            db_session: Session) -> None:
    kit = make_program()
    cashier = staff_of(kit, "cashier")
    till = app.test_client()
    assert _sign_in(till, cashier.email).status_code == 303
    assert till.get("/cashier").status_code == 200

    client = manager_client(kit)
    disabled = _post_form(client, f"/manager/staff/{cashier.id}/disable", {}, form_page="/manager/staff")
    assert disabled.status_code == 303
    assert re.search(rf'<tr data-staff="{cashier.email}" data-active="false">', client.get("/manager/staff").text)

    assert till.get("/cashier").status_code == 302  # the open session ended
    refused = _sign_in(till, cashier.email)
    assert refused.status_code == 401
    assert "This account has been disabled" in refused.text

    enabled = _post_form(client, f"/manager/staff/{cashier.id}/enable", {}, form_page="/manager/staff")
    assert enabled.status_code == 303
    assert _sign_in(app.test_client(), cashier.email).status_code == 303


def test_a_manager_cannot_disable_themself(make_program, manager_client, db_session: Session) -> None:
    kit = make_program()
    client = manager_client(kit)
    me = db_session.scalar(select(Staff).where(Staff.program_id == kit.program.id, Staff.role == "manager"))
    assert me is not None
    page = client.get("/manager/staff").text
    assert f"/manager/staff/{me.id}/disable" not in page  # no button to do it
    response = _post_form(client, f"/manager/staff/{me.id}/disable", {}, form_page="/manager/staff")
    assert response.status_code == 409
    assert "You cannot disable your own account" in response.text
    db_session.expire_all()
    assert db_session.get(Staff, me.id).active  # type: ignore[union-attr]
    assert client.get("/manager").status_code == 200


# --- who sees what -------------------------------------------------------------------------------------------

MANAGER_PAGES = ["/manager", "/manager/settings", "/manager/staff"]


@pytest.mark.parametrize("path", MANAGER_PAGES)
def test_a_cashier_gets_403_on_manager_pages(app, make_program, staff_of, path: str) -> None:
    kit = make_program()
    cashier = staff_of(kit, "cashier")
    client = app.test_client()
    _sign_in(client, cashier.email)
    assert client.get(path).status_code == 403


def test_a_cashier_cannot_post_to_manager_forms(app, make_program, staff_of, db_session: Session) -> None:
    kit = make_program()
    cashier = staff_of(kit, "cashier")
    other = staff_of(kit, "cashier", email="other-till@example.com")
    client = app.test_client()
    _sign_in(client, cashier.email)
    token = _csrf(client, "/cashier")
    assert client.post("/manager/settings", data={"csrf_token": token, "points_per_unit": "9"}).status_code == 403
    assert client.post(f"/manager/staff/{other.id}/disable", data={"csrf_token": token}).status_code == 403
    assert client.post("/manager/staff", data={"csrf_token": token, "email": "x@example.com",
                                               "password": "long enough pw"}).status_code == 403
    db_session.expire_all()
    assert db_session.get(Staff, other.id).active  # type: ignore[union-attr]
    assert _reload(db_session, kit.program).rules["earn"]["points_per_unit"] == "1"


@pytest.mark.parametrize("path", MANAGER_PAGES)
def test_anonymous_visitors_are_sent_to_sign_in(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_a_manager_sees_only_their_own_program(client: FlaskClient, make_program, enroll, staff_of,
                                               db_session: Session) -> None:
    ours, theirs = make_program(name="Ours"), make_program(name="Theirs")
    member = enroll(ours, name="Amina Karimi")
    _purchase(client, ours, member, "80.00")
    ours_cashier = staff_of(ours, "cashier")
    _sign_in(client, staff_of(theirs).email)

    page = client.get("/manager").text
    assert set(_kpis(page).values()) == {0}
    assert "Amina K." not in page and 'data-empty="enrollments"' in page
    staff_page = client.get("/manager/staff").text
    assert ours_cashier.email not in staff_page
    # Another program's cashier cannot be disabled from here, even by id.
    attempt = _post_form(client, f"/manager/staff/{ours_cashier.id}/disable", {}, form_page="/manager/staff")
    assert attempt.status_code == 404
    db_session.expire_all()
    assert db_session.get(Staff, ours_cashier.id).active  # type: ignore[union-attr]
    # Saving rules changes their program only.
    form = {**_settings_form(client), "points_per_unit": "7"}
    assert _post_form(client, "/manager/settings", form).status_code == 303
    assert _reload(db_session, theirs.program).rules["earn"]["points_per_unit"] == "7"
    assert _reload(db_session, ours.program).rules["earn"]["points_per_unit"] == "1"


# --- the pure parts: tables, no fixtures ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("largest", "top", "step"),
    [(0, 4, 1), (1, 1, 1), (5, 5, 1), (6, 6, 2), (7, 8, 2), (10, 10, 2), (11, 15, 5), (26, 30, 10),
     (49, 50, 10), (51, 60, 20), (260, 300, 100), (999, 1000, 200)],
)
def test_nice_scale(largest: int, top: int, step: int) -> None:
    assert nice_scale(largest) == (top, step)


@pytest.mark.parametrize(("days", "step"), [(7, 1), (30, 7), (90, 14)])
def test_label_step(days: int, step: int) -> None:
    assert label_step(days) == step


D = dt.date(2026, 3, 10)


def test_a_stacked_series_counts_by_day_and_series() -> None:
    series = StackedSeries(days=(D - dt.timedelta(days=1), D), series=("web", "till", "api", "referral"),
                           counts={(D, "web"): 2, (D, "api"): 1})
    assert series.day_total(D) == 3 and series.series_total("till") == 0 and series.total == 3
    assert series.count(D - dt.timedelta(days=1), "web") == 0


def test_small_locations_are_folded_into_one_series() -> None:
    shops = tuple(f"Shop {i}" for i in range(9))  # largest first
    many = StackedSeries(days=(D,), series=shops, counts={(D, f"Shop {i}"): 10 - i for i in range(9)})
    folded = fold_small_series(many, shops)
    assert folded.series == ("Shop 0", "Shop 1", "Shop 2", "Shop 3", "Shop 4", "Shop 5", OTHER_LOCATIONS)
    assert folded.count(D, OTHER_LOCATIONS) == 4 + 3 + 2 and folded.total == sum(10 - i for i in range(9))
    few = StackedSeries(days=(D,), series=shops[:3], counts={(D, "Shop 0"): 1})
    assert fold_small_series(few, shops[:3]) is few


def test_chart_bars_are_proportional_and_labelled() -> None:
    data = StackedSeries(days=(D - dt.timedelta(days=1), D), series=("web", "till"),
                         counts={(D, "web"): 3, (D, "till"): 1})
    svg = str(stacked_bar_chart(data, chart_id="c", title='Enrollments "now"', dimension="channel",
                                labels={"web": "Web form"}))
    heights = {name: float(h) for h, name in re.findall(r'height="([\d.]+)" [^>]*data-channel="(\w+)"', svg)}
    assert heights["web"] == pytest.approx(3 * heights["till"])
    assert "<title id=\"c-title\">Enrollments &#34;now&#34;</title>" in svg
    assert "4 enrollments from 9 Mar to 10 Mar 2026: 3 Web form, 1 till." in svg
    assert '<g data-day="2026-03-09" data-total="0">' in svg and '<g data-day="2026-03-10" data-total="4">' in svg
    assert "<script" not in svg and "style=" not in svg  # the CSP allows neither


@pytest.mark.parametrize(
    ("minor", "currency", "shown"),
    [(0, "EUR", "0.00 EUR"), (123456789, "EUR", "1,234,567.89 EUR"), (-150, "USD", "-1.50 USD"),
     (1500000, "JPY", "1,500,000 JPY"), (1234, "KWD", "1.234 KWD")],
)
def test_display_money(minor: int, currency: str, shown: str) -> None:
    assert display_money(minor, currency) == shown


def test_rules_form_round_trips_stored_rules() -> None:
    rules = ProgramRules(points_per_unit=Decimal("0.25"), rounding="up",
                         tiers=(Tier("Base", 0, 0), Tier("VIP", 123_45, 1250)), welcome_bonus=10, point_value=5,
                         redeem_max_percent=30)
    assert rules_from_form(rules_form_values(rules, "EUR"), "EUR") == rules


def test_rules_form_names_every_bad_field() -> None:
    form = rules_form_values(ProgramRules(), "EUR") | {"points_per_unit": "1,5", "tier_name_0": "Gold",
                                                        "tier_min_spend_0": "", "tier_discount_0": "100.5"}
    with pytest.raises(ValidationError) as caught:
        rules_from_form(form, "EUR")
    assert set(caught.value.extra["errors"]) == {"points_per_unit", "tier_min_spend_0", "tier_discount_0"}
