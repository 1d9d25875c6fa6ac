"""The NPS question on a phone, in Debian's Chromium: the eleven scores fit one row of a 390-pixel screen, a tap
picks one, Send records it, and the page keeps to its Content-Security-Policy."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from sqlalchemy import select

from app.models import Card, NpsResponse
from tests.conftest import PHONE, LiveShop, RequestGuard, live_db

OpenPage = Callable[..., tuple[Any, RequestGuard]]


def test_a_member_answers_the_question_on_a_phone(
    app: Flask, live_shop: Callable[..., LiveShop], open_page: OpenPage, save_screenshot: Callable[..., Path],
) -> None:
    shop = live_shop(name="Corner Coffee")
    member = shop.enroll()
    bought = app.test_client().post("/api/v1/purchases", json={"code": member["code"], "amount": "8.40"},
                                    headers=shop.kit.purchase_headers(str(uuid.uuid4())))
    assert bought.status_code == 201, bought.json
    page, guard = open_page(PHONE)
    page.goto(urlsplit(member["card_url"]).path)

    question = page.get_by_role("group", name="How likely are you to recommend Corner Coffee?")
    question.scroll_into_view_if_needed()
    assert question.is_visible()
    choices = page.locator(".nps-choice > span")
    assert choices.count() == 11
    boxes = [choices.nth(i).bounding_box() for i in range(11)]
    assert all(box is not None for box in boxes)
    # One row, all on screen, each big enough to tap.
    assert len({round(box["y"]) for box in boxes}) == 1, boxes  # type: ignore[index]
    assert boxes[0]["x"] >= 0 and boxes[10]["x"] + boxes[10]["width"] <= 390, boxes  # type: ignore[index]
    assert all(box["height"] >= 44 and box["width"] >= 24 for box in boxes), boxes  # type: ignore[index]
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    page.get_by_role("radio", name="9", exact=True).click()  # a tap on the 9 button
    assert page.locator('input[name="score"][value="9"]').is_checked()
    page.get_by_label("What is the main reason for your score?").fill("Friendly and quick")
    save_screenshot(page, "nps-phone")
    with page.expect_navigation():
        page.get_by_role("button", name="Send").click()
    assert page.get_by_text("Thank you for your answer").is_visible()
    assert page.locator('[data-testid="nps"]').count() == 0

    with live_db(app) as session:
        card_id = session.scalar(select(Card.id).where(Card.serial == member["serial"]))
        answers = session.execute(select(NpsResponse.score, NpsResponse.comment, NpsResponse.channel)
                                  .where(NpsResponse.card_id == card_id)).all()
    assert answers == [(9, "Friendly and quick", "card_page")]
    guard.assert_same_origin()
    guard.assert_scripts_only_from_self()
    guard.assert_no_errors()
