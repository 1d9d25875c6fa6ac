"""The customer's and the staff sign-in pages in Debian's Chromium: what a person on a phone sees and does."""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from PIL import Image, ImageChops, ImageStat
from sqlalchemy import select

from app.models import Card, Customer
from app.wallet import DEV_FILES
from tests.conftest import PHONE, LiveShop, RequestGuard, live_db, qr_frame, sign_in, write_qr_video

OpenPage = Callable[..., tuple[Any, RequestGuard]]


def test_enrolling_on_a_phone_lands_on_the_card_with_its_qr(
    app: Flask, live_shop: Callable[..., LiveShop], open_page: OpenPage, save_screenshot: Callable[..., Path],
) -> None:
    shop = live_shop(name="Corner Coffee")
    email = f"amina-{secrets.token_hex(4)}@example.com"
    page, guard = open_page(PHONE)

    form = page.goto(f"/join/{shop.kit.program.slug}")
    assert form is not None and form.status == 200
    page.get_by_label("Your name").fill("Amina Karimi")
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_role("checkbox").check()
    with page.expect_navigation() as landed:
        page.get_by_role("button", name="Get my card").click()

    card_page = landed.value
    assert card_page.status == 200
    match = re.fullmatch(rf"{re.escape(guard.origin)}/c/([A-Za-z0-9_-]+)\?welcome=1", page.url)
    assert match, page.url
    qr = page.locator(".qr svg")
    assert qr.is_visible()
    box = qr.bounding_box()
    assert box is not None
    # Big enough for a till's camera, and whole on a 390-pixel-wide phone screen without scrolling sideways.
    assert box["width"] >= 200 and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    assert page.get_by_text("Welcome!").is_visible()
    assert page.locator(".points").inner_text() == "50"  # the welcome bonus
    assert "Amina K." in page.locator(".holder").inner_text()

    with live_db(app) as session:
        customer = session.scalar(select(Customer).where(Customer.email == email))
        assert customer is not None and customer.channel == "web" and customer.marketing_consent
        card = session.scalar(select(Card).where(Card.customer_id == customer.id))
        assert card is not None and card.page_token == match.group(1)

    guard.assert_same_origin()
    guard.assert_scripts_only_from_self()
    guard.assert_no_errors()
    save_screenshot(page, "card-phone")


def test_a_cashier_signs_in_and_lands_on_the_till(
    live_server: str, live_shop: Callable[..., LiveShop], open_page: OpenPage,
) -> None:
    shop = live_shop()
    page, guard = open_page(PHONE)

    landed = sign_in(page, live_server, shop.cashier.email, shop.cashier.password)

    assert landed.status == 200
    assert page.url == f"{live_server}/cashier"
    assert shop.cashier.email in page.locator(".staff-bar").inner_text()
    guard.assert_same_origin()
    guard.assert_scripts_only_from_self()


def test_a_wrong_password_says_so_and_keeps_the_email(
    live_server: str, live_shop: Callable[..., LiveShop], open_page: OpenPage,
) -> None:
    shop = live_shop()
    page, guard = open_page(PHONE)

    landed = sign_in(page, live_server, shop.cashier.email, "not the password")

    assert landed.status == 401
    assert page.url == f"{live_server}/login"
    assert page.get_by_role("alert").inner_text() == "Wrong email or password."
    assert page.get_by_label("Email", exact=True).input_value() == shop.cashier.email
    assert page.locator(".staff-bar").count() == 0
    guard.assert_same_origin()
    guard.assert_scripts_only_from_self()
    guard.assert_no_errors()


_GRAB_A_CAMERA_FRAME = """async () => {
  const stream = await navigator.mediaDevices.getUserMedia({video: true});
  const video = document.createElement("video");
  video.muted = true;
  video.srcObject = stream;
  await video.play();
  await new Promise((resolve) => video.requestVideoFrameCallback(resolve));
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  stream.getTracks().forEach((track) => track.stop());
  return canvas.toDataURL("image/png");
}"""


def test_the_fake_camera_shows_the_members_qr(
    live_shop: Callable[..., LiveShop], open_page: OpenPage, camera_browser: Callable[[Path], Any], tmp_path: Path,
) -> None:
    """The camera the cashier tests rely on: Chromium plays the y4m we wrote, and it is the card's QR."""
    member = live_shop().enroll()
    chromium = camera_browser(write_qr_video(member["code"], tmp_path / "card.y4m"))
    page, guard = open_page(PHONE, on=chromium)
    page.goto("/login")  # any page of ours: http://127.0.0.1 is a secure context, so the camera is allowed

    data_url = page.evaluate(_GRAB_A_CAMERA_FRAME)

    seen = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("L")
    expected = qr_frame(member["code"]).convert("L")
    assert seen.size == expected.size
    difference = ImageChops.difference(seen, expected)
    assert ImageStat.Stat(difference).mean[0] < 8, "the camera frame does not look like the card's QR"
    wrong_pixels = sum(difference.point(lambda level: 255 if level > 127 else 0).histogram()[255:])
    assert wrong_pixels < 0.005 * seen.width * seen.height
    guard.assert_same_origin()


def test_add_to_apple_wallet_downloads_a_pass_that_verifies(
    app: Flask, live_shop: Callable[..., LiveShop], open_page: OpenPage, tmp_path: Path,
) -> None:
    """The card page's button hands the phone a signed .pkpass carrying the card's own code."""
    member = live_shop(name="Corner Coffee").enroll()
    page, guard = open_page(PHONE)
    page.goto(member["card_url"])
    button = page.get_by_role("link", name="Add to Apple Wallet")
    assert button.is_visible()
    with page.expect_download() as downloading:
        button.click()
    download = downloading.value
    assert download.suggested_filename.endswith(".pkpass")
    pkpass = tmp_path / download.suggested_filename
    download.save_as(pkpass)

    folder = tmp_path / "pass"
    with zipfile.ZipFile(pkpass) as archive:
        archive.extractall(folder)
    ca = Path(app.config["APPLE_DEV_CERTS_DIR"]) / DEV_FILES["ca"]
    verified = subprocess.run(
        ["openssl", "smime", "-verify", "-inform", "DER", "-binary", "-in", str(folder / "signature"),
         "-content", str(folder / "manifest.json"), "-purpose", "any", "-CAfile", str(ca), "-out", "/dev/null"],
        capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    pass_json = json.loads((folder / "pass.json").read_text())
    assert pass_json["barcodes"][0]["message"] == member["code"]
    assert pass_json["serialNumber"] == member["serial"]
    guard.assert_same_origin()
    guard.assert_no_errors()
