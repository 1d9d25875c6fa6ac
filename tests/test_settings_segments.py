"""The Rules page's "Segments and NPS" section: who counts as new, lapsed or VIP, the typical basket for RFM, and
how often members are asked the NPS question. Read as a manager types them, every bad field refused next to itself
with nothing saved, a good save read back by the domain's own readers."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.domain.nps import nps_settings
from app.domain.segments import SegmentSettings, segment_settings
from tests.test_settings_mechanics import field_error, manager_of, post_settings, reload, settings_form

__all__ = ["manager_of"]  # the fixture, used by name below


def test_the_section_shows_the_defaults_and_the_tiers_to_choose_from(make_program, manager_of) -> None:
    client = manager_of(make_program())
    form = settings_form(client)
    assert {key: form[key] for key in ("segments_new_days", "segments_lapsed_days", "segments_vip_tier",
                                       "segments_typical_basket", "nps_interval_days")} == {
        "segments_new_days": "30", "segments_lapsed_days": "90", "segments_vip_tier": "",
        "segments_typical_basket": "", "nps_interval_days": "90",
    }
    page = client.get("/manager/settings").text
    assert "<legend>Segments and NPS</legend>" in page
    assert '<option value="" selected>The highest tier (Gold)</option>' in page
    assert '<option value="Silver">Silver and higher</option>' in page


def test_a_good_section_is_saved_and_read_back(make_program, manager_of, db_session: Session) -> None:
    kit = make_program()
    client = manager_of(kit)
    before = dict(kit.program.rules)
    form = settings_form(client) | {"segments_new_days": "14", "segments_lapsed_days": "60",
                                    "segments_vip_tier": "Silver", "segments_typical_basket": "25.50",
                                    "nps_interval_days": "30"}
    saved = post_settings(client, form)
    assert saved.status_code == 303, saved.text
    rules = reload(db_session, kit.program).rules
    assert rules["segments"] == {"new_days": 14, "lapsed_days": 60, "vip_tier": "Silver", "typical_basket": 2550}
    assert rules["nps"] == {"interval_days": 30}
    assert rules["tiers"] == before["tiers"] and rules["earn"] == before["earn"]
    assert segment_settings(rules) == SegmentSettings(14, 60, "Silver", ("Silver", "Gold"), 2550)
    assert nps_settings(rules).interval_days == 30
    shown = settings_form(client)
    assert (shown["segments_new_days"], shown["segments_vip_tier"], shown["segments_typical_basket"],
            shown["nps_interval_days"]) == ("14", "Silver", "25.50", "30")

    # Blank fields go back to the defaults (and the highest tier; the average basket).
    cleared = post_settings(client, shown | {"segments_new_days": "", "segments_lapsed_days": "",
                                             "segments_vip_tier": "", "segments_typical_basket": "",
                                             "nps_interval_days": ""})
    assert cleared.status_code == 303, cleared.text
    rules = reload(db_session, kit.program).rules
    assert rules["segments"] == {"new_days": 30, "lapsed_days": 90}
    assert rules["nps"] == {"interval_days": 90}


BAD_FIELDS = [
    ({"segments_new_days": "0"}, "segments_new_days",
     "The days a member counts as new is a whole number from 1 to 3650."),
    ({"segments_new_days": "two"}, "segments_new_days", "The days a member counts as new is a whole number such as"),
    ({"segments_new_days": "-3"}, "segments_new_days", "cannot be negative"),
    ({"segments_new_days": "90"}, "segments_new_days", "make this less than 90"),
    ({"segments_new_days": "40", "segments_lapsed_days": "30"}, "segments_new_days", "make this less than 30"),
    ({"segments_lapsed_days": "3651"}, "segments_lapsed_days", "from 1 to 3650"),
    ({"segments_vip_tier": "Platinum"}, "segments_vip_tier", "Platinum is not one of the tiers above"),
    ({"segments_typical_basket": "0"}, "segments_typical_basket", "The typical basket is more than zero"),
    ({"segments_typical_basket": "-5"}, "segments_typical_basket", "cannot be negative"),
    ({"segments_typical_basket": "12.345"}, "segments_typical_basket", "more decimals than EUR allows (2)"),
    ({"segments_typical_basket": "a lot"}, "segments_typical_basket", "is an amount in EUR"),
    ({"nps_interval_days": "0"}, "nps_interval_days",
     "The days between NPS questions is a whole number from 1 to 3650."),
    ({"nps_interval_days": "3651"}, "nps_interval_days", "from 1 to 3650"),
    ({"nps_interval_days": "1.5"}, "nps_interval_days", "is a whole number such as"),
    # Choosing a VIP tier while clearing that tier's row.
    ({"segments_vip_tier": "Gold", "tier_name_1": "", "tier_min_spend_1": "", "tier_discount_1": ""},
     "segments_vip_tier", "Gold is not one of the tiers above"),
]


@pytest.mark.parametrize(("changes", "field", "message"), BAD_FIELDS)
def test_a_bad_field_is_refused_next_to_itself_and_nothing_is_saved(
    make_program, manager_of, db_session: Session, changes: dict[str, str], field: str, message: str
) -> None:
    kit = make_program()
    client = manager_of(kit)
    before = dict(kit.program.rules)
    response = post_settings(client, settings_form(client) | changes)
    assert response.status_code == 422
    assert message in field_error(response.text, field)
    assert "Nothing was saved" in response.text
    assert reload(db_session, kit.program).rules == before


def test_a_bad_mechanic_and_a_bad_segment_field_are_reported_together(make_program, manager_of,
                                                                        db_session: Session) -> None:
    kit = make_program()
    client = manager_of(kit)
    response = post_settings(client, settings_form(client) | {"second_visit_percent": "abc", "second_visit_days": "7",
                                                               "nps_interval_days": "0"})
    assert response.status_code == 422
    assert "2 fields need fixing" in response.text
    assert "is a percentage" in field_error(response.text, "second_visit_percent")
    assert "from 1 to 3650" in field_error(response.text, "nps_interval_days")


def test_a_program_without_tiers_has_no_vip_to_choose(make_program, manager_of, db_session: Session) -> None:
    kit = make_program(rules={"earn": {"points_per_unit": "1", "rounding": "down"}, "welcome_bonus": 0})
    client = manager_of(kit)
    page = client.get("/manager/settings").text
    assert '<option value="" selected>No tiers: nobody is VIP</option>' in page
    response = post_settings(client, settings_form(client) | {"segments_vip_tier": "Gold"})
    assert response.status_code == 422
    assert "no tiers, so there is no VIP tier" in field_error(response.text, "segments_vip_tier")


def test_a_form_without_the_section_keeps_the_stored_settings(make_program, manager_of,
                                                               db_session: Session) -> None:
    kit = make_program()
    stored: dict[str, Any] = {"new_days": 10, "lapsed_days": 40, "vip_tier": "Silver"}
    kit.program.rules = {**kit.program.rules, "segments": stored, "nps": {"interval_days": 15}}
    db_session.commit()
    client = manager_of(kit)
    form = {key: value for key, value in settings_form(client).items()
            if not key.startswith(("segments_", "nps_"))}
    assert post_settings(client, form).status_code == 303
    rules = reload(db_session, kit.program).rules
    assert rules["segments"] == stored and rules["nps"] == {"interval_days": 15}
    # But it cannot take away the tier the segments name as VIP.
    without_silver = form | {"tier_name_0": "", "tier_min_spend_0": "", "tier_discount_0": ""}
    refused = post_settings(client, without_silver)
    assert refused.status_code == 422
    assert "Silver is the VIP tier of the member segments" in refused.text
    assert [tier["name"] for tier in reload(db_session, kit.program).rules["tiers"]] == ["Silver", "Gold"]
