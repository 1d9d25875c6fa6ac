"""The manager's Wallet page (/manager/wallet): the cards' colours and logo, and rotating codes.

Over HTTP, a manager signs in with the sign-in form and posts the Wallet form as a browser does (multipart, with
the CSRF token); the tests read what the page shows (`data-error-for` next to each bad field), the program's row
afterwards, and what the public logo route serves. A browser test at the end does the same in Chromium.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from playwright.sync_api import expect
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from app.domain.errors import ValidationError
from app.domain.pass_changes import take_changes
from app.domain.pass_look import (
    MAX_LOGO_BYTES,
    STORED_LOGO_SIDE,
    PassLook,
    contrast_ratio,
    read_pass_look,
)
from app.domain.programs import create_staff
from app.models import Program
from tests.conftest import LAPTOP, PHONE, LiveShop, ProgramKit, RequestGuard, live_db, sign_in

PASSWORD = "correct horse battery"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LOGO_SIDE = 660  # what /p/<slug>/logo.png serves: passes.square_logo_png's default side
DEFAULT_LOOK = {"pass_background": "#1f2937", "pass_foreground": "#ffffff", "pass_label": "#d1d5db"}

OpenPage = Callable[..., tuple[Any, RequestGuard]]


# --- images --------------------------------------------------------------------------------------------------

def image_bytes(size: tuple[int, int], colour: tuple[int, ...], fmt: str = "PNG", mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, fmt)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A few kilobytes whose header promises width x height grey pixels: what a decoder would allocate for."""
    rows = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + one byte per pixel
    data = b"".join(rows.compress(row) for _ in range(min(height, 64))) + rows.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def padded_to(data: bytes, size: int) -> bytes:
    """A valid PNG grown to exactly `size` bytes: readers stop at IEND, so trailing bytes change nothing else."""
    assert len(data) <= size
    return data + b"\0" * (size - len(data))


def pixel(png: bytes, xy: tuple[int, int]) -> tuple[int, ...]:
    with Image.open(io.BytesIO(png)) as image:
        return tuple(image.convert("RGB").getpixel(xy))  # type: ignore[arg-type]


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 6) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# --- signing in and posting ----------------------------------------------------------------------------------

def _csrf(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, f"{path} carries a CSRF token"
    return match.group(1)


def _sign_in(client: FlaskClient, email: str) -> None:
    response = client.post("/login", data={"csrf_token": _csrf(client, "/login"), "email": email,
                                           "password": PASSWORD})
    assert response.status_code == 303, response.text


@pytest.fixture()
def sign_in_as(client: FlaskClient, db_session: Session) -> Callable[..., FlaskClient]:
    """sign_in_as(kit, role="manager") -> the test client, signed in as a new member of that program's staff."""
    def sign_in_(kit: ProgramKit, role: str = "manager") -> FlaskClient:
        staff = create_staff(db_session, kit.program, email=f"{role}-{kit.program.slug}@example.com", role=role,
                             password=PASSWORD)
        db_session.commit()
        _sign_in(client, staff.email)
        return client
    return sign_in_


def _form(client: FlaskClient) -> dict[str, str]:
    """The Wallet form's current values, as a browser would send them back (checkboxes only when ticked)."""
    page = client.get("/manager/wallet").text
    values = dict(re.findall(r'<input id="(pass_\w+)" name="\1" type="color" value="([^"]*)"', page))
    values.update(re.findall(r'<input id="(code_period_seconds)" name="\1" type="text" value="([^"]*)"', page))
    values.update((name, "on") for name in re.findall(r'<input type="checkbox" name="(\w+)" value="on"[^>]* checked>',
                                                      page))
    values["csrf_token"] = re.findall(r'name="csrf_token" value="([^"]+)"', page)[-1]
    return values


def _post(client: FlaskClient, fields: dict[str, str], logo: tuple[bytes, str] | None = None,
          csrf: bool = True) -> Any:
    data: dict[str, Any] = {**_form(client), **fields}
    if not csrf:
        data.pop("csrf_token")
    # A browser sends the file part even when no file was chosen: an empty one with an empty name.
    data["logo"] = _file(*logo) if logo else _file(b"", "")
    return _post_multipart(client, data)


def _file(data: bytes, filename: str) -> FileStorage:
    return FileStorage(io.BytesIO(data), filename=filename)


def _post_multipart(client: FlaskClient, data: dict[str, Any]) -> Any:
    # Encoded in memory: the test client's own encoding spools a large body to a temporary file it never closes.
    boundary, body = encode_multipart(data)
    return client.post("/manager/wallet", data=body, content_type=f"multipart/form-data; boundary={boundary}")


def _row(db_session: Session, program: Program) -> dict[str, Any]:
    db_session.expire_all()
    found = db_session.get(Program, program.id)
    assert found is not None
    return {name: getattr(found, name) for name in (
        "pass_background", "pass_foreground", "pass_label", "logo_png", "pass_revision", "rotating_codes",
        "code_period_seconds", "name", "rules",
    )}


def _field_error(html: str, field: str) -> str:
    match = re.search(rf'data-error-for="{field}">([^<]*)<', html)
    assert match, f"an error is shown next to {field}"
    return match.group(1)


def _noted_programs(db_session: Session) -> set[int]:
    """The programs whose passes the requests so far asked to republish (the pinned session keeps the notes)."""
    return take_changes(db_session)[1]


# --- the page ------------------------------------------------------------------------------------------------

def test_the_wallet_tab_shows_the_saved_look(make_program, sign_in_as) -> None:
    kit = make_program(name="Corner Coffee")
    client = sign_in_as(kit)
    page = client.get("/manager/wallet")
    assert page.status_code == 200
    html = page.text
    nav = re.search(r'<nav class="manager-tabs".*?</nav>', html, re.S)
    assert nav
    tabs = re.findall(r'<a href="(/manager[^"]*)"( aria-current="page")?>(\w+)</a>', nav.group(0))
    assert [(href, label) for href, _, label in tabs] == [
        ("/manager", "Dashboard"), ("/manager/settings", "Rules"), ("/manager/wallet", "Wallet"),
        ("/manager/coupons", "Coupons"), ("/manager/offers", "Offers"), ("/manager/rewards", "Rewards"),
        ("/manager/staff", "Staff"), ("/manager/export", "Export")]
    assert [label for _, current, label in tabs if current] == ["Wallet"]
    assert {k: v for k, v in _form(client).items() if k.startswith("pass_")} == DEFAULT_LOOK
    assert 'enctype="multipart/form-data"' in html and 'type="file"' in html and 'name="logo"' in html
    assert f'<img src="/p/{kit.program.slug}/logo.png?v=0"' in html
    assert re.search(r'<rect [^>]*fill="#1f2937" data-preview="background">', html)
    assert re.search(r'<text [^>]*fill="#ffffff"[^>]*data-preview="text">Corner Coffee</text>', html)
    assert 'name="remove_logo"' not in html  # nothing to remove: the cards show the monogram
    assert "screenshot" in html and "Printed QR codes stop working" in html
    assert "Apple Wallet cannot show a code that changes" in html
    assert "<script" not in html and "style=" not in html  # the CSP allows neither inline
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    # The manager's other pages link to it.
    assert 'href="/manager/wallet"' in client.get("/manager/settings").text


@pytest.mark.parametrize(("fmt", "colour"), [("PNG", (200, 30, 40)), ("JPEG", (20, 60, 220))])
def test_a_good_save_stores_the_colours_and_the_logo_as_png(make_program, sign_in_as, db_session: Session,
                                                            fmt: str, colour: tuple[int, int, int]) -> None:
    kit = make_program()
    client = sign_in_as(kit)
    before = _row(db_session, kit.program)
    _noted_programs(db_session)
    logo = image_bytes((200, 100), colour, fmt)

    saved = _post(client, {"pass_background": "#0A5C36", "pass_foreground": "#fff8e1", "pass_label": "#a5d6a7"},
                  (logo, f"logo.{fmt.lower()}"))

    assert saved.status_code == 303, saved.text
    assert saved.headers["Location"] == "/manager/wallet"
    after = _row(db_session, kit.program)
    assert after["pass_background"] == "#0a5c36"  # stored as the passes want it: lower case
    assert (after["pass_foreground"], after["pass_label"]) == ("#fff8e1", "#a5d6a7")
    assert after["pass_revision"] == before["pass_revision"] + 1
    assert _noted_programs(db_session) == {kit.program.id}  # every pass of the program is republished
    stored = after["logo_png"]
    assert stored.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(stored)) as image:
        assert (image.format, image.size) == ("PNG", (200, 100))
    assert close_to(pixel(stored, (100, 50)), colour)
    assert {k: after[k] for k in ("rotating_codes", "code_period_seconds", "name", "rules")} == \
        {k: before[k] for k in ("rotating_codes", "code_period_seconds", "name", "rules")}

    page = client.get("/manager/wallet").text
    assert "Saved." in page
    assert f'<img src="/p/{kit.program.slug}/logo.png?v={after["pass_revision"]}"' in page
    assert re.search(r'<rect [^>]*fill="#0a5c36"', page)
    assert 'name="remove_logo"' in page

    # The public logo (Google Wallet's programLogo) is the uploaded one, scaled into the square on the background:
    # 200x100 becomes 528x264 (80% of 660 wide), centred, so rows 198-461 hold the logo.
    served = client.get(f"/p/{kit.program.slug}/logo.png")
    assert served.status_code == 200 and served.mimetype == "image/png"
    with Image.open(io.BytesIO(served.data)) as image:
        assert image.size == (LOGO_SIDE, LOGO_SIDE)
    background = (0x0A, 0x5C, 0x36)
    assert pixel(served.data, (5, 5)) == background
    assert pixel(served.data, (330, 150)) == background
    assert close_to(pixel(served.data, (330, 330)), colour)
    assert close_to(pixel(served.data, (80, 250)), colour)
    assert pixel(served.data, (20, 330)) == background


def test_a_large_logo_is_stored_smaller_and_upright(make_program, sign_in_as, db_session: Session) -> None:
    kit = make_program()
    client = sign_in_as(kit)
    # A phone's JPEG: stored sideways (3000x1000) with EXIF orientation 6, "turn 90 degrees clockwise to view".
    photo = Image.new("RGB", (3000, 1000), (240, 240, 240))
    photo.paste((10, 10, 10), (0, 0, 1500, 1000))  # the left half is dark: after turning, the top half
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", exif=exif, quality=70)
    assert len(buffer.getvalue()) < MAX_LOGO_BYTES

    assert _post(client, {}, (buffer.getvalue(), "IMG_0001.JPG")).status_code == 303

    stored = _row(db_session, kit.program)["logo_png"]
    with Image.open(io.BytesIO(stored)) as image:
        assert image.size == (STORED_LOGO_SIDE // 3, STORED_LOGO_SIDE)  # upright, and no larger than needed
    assert close_to(pixel(stored, (170, 100)), (10, 10, 10), 20)
    assert close_to(pixel(stored, (170, 900)), (240, 240, 240), 20)


def test_a_logo_of_exactly_the_size_limit_is_taken(make_program, sign_in_as, db_session: Session) -> None:
    kit = make_program()
    client = sign_in_as(kit)
    logo = padded_to(image_bytes((40, 40), (255, 0, 0)), MAX_LOGO_BYTES)
    assert _post(client, {}, (logo, "logo.png")).status_code == 303
    assert _row(db_session, kit.program)["logo_png"] is not None


def test_remove_logo_goes_back_to_the_monogram(make_program, sign_in_as, db_session: Session) -> None:
    kit = make_program(name="Corner Coffee")
    client = sign_in_as(kit)
    assert _post(client, {}, (image_bytes((64, 64), (255, 0, 0)), "logo.png")).status_code == 303
    with_logo = _row(db_session, kit.program)
    assert with_logo["logo_png"] is not None
    _noted_programs(db_session)

    removed = _post(client, {"remove_logo": "on"})

    assert removed.status_code == 303
    after = _row(db_session, kit.program)
    assert after["logo_png"] is None
    assert after["pass_revision"] == with_logo["pass_revision"] + 1
    assert _noted_programs(db_session) == {kit.program.id}
    page = client.get("/manager/wallet").text
    assert 'name="remove_logo"' not in page and "monogram" in page
    # The monogram: a disc in the text colour (white) on the background; its top is clear of the letters.
    served = client.get(f"/p/{kit.program.slug}/logo.png").data
    assert pixel(served, (5, 5)) == (0x1F, 0x29, 0x37)
    assert close_to(pixel(served, (330, 80)), (255, 255, 255))


def test_a_new_logo_and_remove_logo_together_are_refused(make_program, sign_in_as, db_session: Session) -> None:
    kit = make_program()
    client = sign_in_as(kit)
    assert _post(client, {}, (image_bytes((64, 64), (255, 0, 0)), "a.png")).status_code == 303
    before = _row(db_session, kit.program)
    response = _post(client, {"remove_logo": "on"}, (image_bytes((64, 64), (0, 0, 255)), "b.png"))
    assert response.status_code == 422
    assert "do one or the other" in _field_error(response.text, "logo")
    assert _row(db_session, kit.program) == before


def test_rotating_codes_on_with_a_period_and_off_again(client: FlaskClient, make_program, enroll, sign_in_as,
                                                        db_session: Session) -> None:
    kit = make_program()
    member = enroll(kit)
    manager = sign_in_as(kit)
    before = _row(db_session, kit.program)
    _noted_programs(db_session)

    assert _post(manager, {"rotating_codes": "on", "code_period_seconds": "45"}).status_code == 303

    after = _row(db_session, kit.program)
    assert (after["rotating_codes"], after["code_period_seconds"]) == (True, 45)
    assert after["pass_revision"] == before["pass_revision"] + 1  # once, though set_rotating_codes did the work
    assert _noted_programs(db_session) == {kit.program.id}
    assert re.search(r'<input type="checkbox" name="rotating_codes" value="on"[^>]* checked>',
                     manager.get("/manager/wallet").text)
    card_page = client.get(member["card_url"].removeprefix("http://loyalty.test")).text
    assert 'data-period="45"' in card_page  # the member's card page now draws a live code
    scan = client.post("/api/v1/scans", json={"code": member["code"]}, headers=kit.headers)
    assert scan.status_code == 422 and scan.json["code"] == "rotating_code_required"

    form = _form(manager)
    form.pop("rotating_codes")  # an unticked checkbox is not sent at all
    assert _post_multipart(manager, form).status_code == 303
    off = _row(db_session, kit.program)
    assert (off["rotating_codes"], off["code_period_seconds"]) == (False, 45)
    assert client.post("/api/v1/scans", json={"code": member["code"]}, headers=kit.headers).status_code == 200


def test_saving_what_is_already_saved_republishes_nothing(make_program, sign_in_as, db_session: Session) -> None:
    kit = make_program()
    client = sign_in_as(kit)
    before = _row(db_session, kit.program)
    _noted_programs(db_session)
    assert _post(client, {}).status_code == 303
    assert _row(db_session, kit.program) == before
    assert _noted_programs(db_session) == set()
    assert "Saved (nothing had changed)." in client.get("/manager/wallet").text


# --- bad input: every field's message next to it, nothing saved ----------------------------------------------

BAD_INPUT = [
    pytest.param({"pass_background": "#12345g"}, None, 422, "pass_background",
                 "The background colour is a colour written as # and six hex digits", id="bad-hex"),
    pytest.param({"pass_foreground": "white"}, None, 422, "pass_foreground", "“white” is not one", id="colour-name"),
    pytest.param({"pass_label": ""}, None, 422, "pass_label", "it is empty", id="no-colour"),
    pytest.param({"rotating_codes": "on", "code_period_seconds": "5"}, None, 422, "code_period_seconds",
                 "between 10 and 300 seconds (not 5)", id="period-5"),
    pytest.param({"rotating_codes": "on", "code_period_seconds": "301"}, None, 422, "code_period_seconds",
                 "between 10 and 300 seconds (not 301)", id="period-301"),
    pytest.param({"rotating_codes": "on", "code_period_seconds": "abc"}, None, 422, "code_period_seconds",
                 "is a whole number of seconds between 10 and 300", id="period-abc"),
    pytest.param({"rotating_codes": "on", "code_period_seconds": ""}, None, 422, "code_period_seconds",
                 "is a whole number of seconds", id="period-blank"),
    pytest.param({}, (b"Just some notes, not a picture.\n" * 20, "logo.png"), 422, "logo",
                 "must be a PNG or JPEG image; this file is not one", id="text-file-named-png"),
    pytest.param({}, (image_bytes((30, 30), (1, 2, 3), "GIF", "P"), "logo.gif"), 422, "logo",
                 "must be a PNG or JPEG image", id="gif"),
    pytest.param({}, (image_bytes((300, 300), (1, 2, 3))[:300], "logo.png"), 422, "logo",
                 "must be a PNG or JPEG image", id="truncated-png"),
    pytest.param({}, (image_bytes((5000, 10), (1, 2, 3)), "wide.png"), 422, "logo",
                 "The logo is 5000x10 pixels; at most 4096 pixels a side.", id="5000x10"),
    # Headers promising 100 and 400 million pixels in a few kilobytes: past Pillow's warning, and past its error.
    pytest.param({}, (bomb_png(10_000, 10_000), "bomb.png"), 422, "logo", "claims to be far larger", id="bomb"),
    pytest.param({}, (bomb_png(20_000, 20_000), "bomb.png"), 422, "logo", "claims to be far larger",
                 id="bigger-bomb"),
    # Just over the logo's limit (the form parser refuses it) and well over the request's (Werkzeug does).
    pytest.param({}, (padded_to(image_bytes((40, 40), (255, 0, 0)), MAX_LOGO_BYTES + 1), "logo.png"), 413, "logo",
                 "The logo file is larger than 512 KB.", id="513KB"),
    pytest.param({}, (padded_to(image_bytes((40, 40), (255, 0, 0)), 3 * MAX_LOGO_BYTES), "logo.png"), 413, "logo",
                 "The logo file is larger than 512 KB.", id="1.5MB"),
]


@pytest.mark.parametrize(("fields", "logo", "status", "field", "message"), BAD_INPUT)
def test_bad_input_is_refused_next_to_its_field_and_nothing_is_saved(
    make_program, sign_in_as, db_session: Session, fields: dict[str, str], logo: tuple[bytes, str] | None,
    status: int, field: str, message: str,
) -> None:
    kit = make_program()
    client = sign_in_as(kit)
    before = _row(db_session, kit.program)
    _noted_programs(db_session)
    # A good change alongside, which must not be saved either.
    response = _post(client, {"pass_background": "#aa0000", **fields}, logo)
    assert response.status_code == status
    assert message in _field_error(response.text, field)
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', response.text)
    assert "Nothing was saved" in response.text
    assert 'name="csrf_token"' in response.text  # the form is there to correct and send again
    assert _row(db_session, kit.program) == before
    assert _noted_programs(db_session) == set()
    if field == "code_period_seconds":  # what was typed stays in the field
        assert re.search(rf'name="code_period_seconds" type="text" value="{fields[field]}"', response.text)


def test_every_bad_field_is_reported_at_once(make_program, sign_in_as, db_session: Session) -> None:
    kit = make_program()
    client = sign_in_as(kit)
    before = _row(db_session, kit.program)
    response = _post(client, {"pass_background": "nope", "pass_label": "#12", "rotating_codes": "on",
                              "code_period_seconds": "9"}, (b"not an image", "logo.jpg"))
    assert response.status_code == 422
    assert "4 fields need fixing" in response.text
    for field in ("pass_background", "pass_label", "code_period_seconds", "logo"):
        assert _field_error(response.text, field)
        assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', response.text)
    # A refused colour cannot sit in a colour input: the field shows the saved colour, the message what was sent.
    assert '<input id="pass_background" name="pass_background" type="color" value="#1f2937"' in response.text
    assert _row(db_session, kit.program) == before


def test_a_good_logo_beside_a_bad_field_must_be_chosen_again(make_program, sign_in_as, db_session: Session) -> None:
    kit = make_program()
    client = sign_in_as(kit)
    response = _post(client, {"pass_foreground": "x"}, (image_bytes((64, 64), (255, 0, 0)), "logo.png"))
    assert response.status_code == 422
    assert "Your logo was fine" in response.text and "choose it again" in response.text
    assert _row(db_session, kit.program)["logo_png"] is None


# --- who may --------------------------------------------------------------------------------------------------

def test_a_post_without_the_csrf_token_is_refused(make_program, sign_in_as, db_session: Session) -> None:
    kit = make_program()
    client = sign_in_as(kit)
    before = _row(db_session, kit.program)
    response = _post(client, {"pass_background": "#aa0000"}, (image_bytes((64, 64), (255, 0, 0)), "logo.png"),
                     csrf=False)
    assert response.status_code == 400
    assert _row(db_session, kit.program) == before


def test_a_cashier_gets_403_and_changes_nothing(make_program, sign_in_as, db_session: Session) -> None:
    kit = make_program()
    client = sign_in_as(kit, "cashier")
    before = _row(db_session, kit.program)
    assert client.get("/manager/wallet").status_code == 403
    token = _csrf(client, "/cashier")
    posted = _post_multipart(client, {"csrf_token": token, **DEFAULT_LOOK, "pass_background": "#aa0000",
                                      "logo": _file(image_bytes((64, 64), (255, 0, 0)), "logo.png")})
    assert posted.status_code == 403
    # The larger upload limit is a manager's only: a cashier's big post is refused before anything reads it.
    big = _post_multipart(client, {"csrf_token": token, "logo": _file(b"\0" * (128 * 1024), "logo.png")})
    assert big.status_code == 413
    assert "Wallet" not in big.text
    assert _row(db_session, kit.program) == before


def test_anonymous_visitors_are_sent_to_sign_in(client: FlaskClient) -> None:
    response = client.get("/manager/wallet")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_a_manager_changes_their_own_program_only(make_program, sign_in_as, db_session: Session) -> None:
    ours, theirs = make_program(), make_program()
    client = sign_in_as(theirs)
    before = _row(db_session, ours.program)
    assert _post(client, {"pass_background": "#123456"}, (image_bytes((64, 64), (255, 0, 0)), "l.png")
                 ).status_code == 303
    assert _row(db_session, theirs.program)["pass_background"] == "#123456"
    assert _row(db_session, ours.program) == before


def test_the_raised_limit_is_for_the_wallet_form_only(make_program, sign_in_as) -> None:
    client = sign_in_as(make_program())
    token = _csrf(client, "/manager/settings")
    response = client.post("/manager/settings", data={"csrf_token": token, "points_per_unit": "1" * (100 * 1024)})
    assert response.status_code == 413
    assert "Nothing was saved" not in response.text and 'data-error-for="logo"' not in response.text


# --- the pure parts: tables, no fixtures ----------------------------------------------------------------------

GOOD_FORM = {"pass_background": "#1F2937", "pass_foreground": "ffffff", "pass_label": " #d1d5db "}


@pytest.mark.parametrize(
    ("extra", "rotating", "period"),
    [({}, False, None), ({"code_period_seconds": "60"}, False, 60), ({"rotating_codes": "on",
      "code_period_seconds": "10"}, True, 10), ({"rotating_codes": "on", "code_period_seconds": "300"}, True, 300),
     ({"rotating_codes": "on", "code_period_seconds": " 30 s"}, True, 30)],
)
def test_read_pass_look(extra: dict[str, str], rotating: bool, period: int | None) -> None:
    assert read_pass_look({**GOOD_FORM, **extra}, None) == PassLook(
        pass_background="#1f2937", pass_foreground="#ffffff", pass_label="#d1d5db", new_logo_png=None,
        remove_logo=False, rotating_codes=rotating, code_period_seconds=period)


def test_read_pass_look_reencodes_the_logo_and_names_every_bad_field() -> None:
    look = read_pass_look(GOOD_FORM, image_bytes((10, 10), (0, 0, 0, 0), "PNG", "RGBA"))
    assert look.new_logo_png is not None and look.new_logo_png.startswith(PNG_SIGNATURE)
    assert pixel(look.new_logo_png, (0, 0)) == (0, 0, 0)
    with Image.open(io.BytesIO(look.new_logo_png)) as image:
        assert image.mode == "RGBA"  # transparency kept
    with pytest.raises(ValidationError) as caught:
        read_pass_look({"pass_background": "#fff", "rotating_codes": "on", "code_period_seconds": "0"}, b"GIF89a")
    assert set(caught.value.extra["errors"]) == {"pass_background", "pass_foreground", "pass_label",
                                                 "code_period_seconds", "logo"}
    assert caught.value.extra["too_large"] is False


@pytest.mark.parametrize(("first", "second", "ratio"),
                         [("#000000", "#ffffff", 21.0), ("#1f2937", "#1f2937", 1.0), ("#ffffff", "#777777", 4.48)])
def test_contrast_ratio(first: str, second: str, ratio: float) -> None:
    assert contrast_ratio(first, second) == pytest.approx(ratio, abs=0.01)


# --- in Chromium ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_a_manager_sets_the_cards_colour_and_logo_in_the_browser(
    app: Flask, live_server: str, live_shop: Callable[..., LiveShop], open_page: OpenPage, tmp_path: Path,
    save_screenshot: Callable[..., Path], device: dict[str, Any],
) -> None:
    shop = live_shop(name="Corner Coffee")
    logo_file = tmp_path / "logo.png"
    logo_file.write_bytes(image_bytes((120, 120), (230, 120, 20)))
    page, guard = open_page(device)
    console_errors: list[str] = []

    def note_console(message: Any) -> None:
        # The browser asks for /favicon.ico on its own, and the app has none: not this page's doing.
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            console_errors.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", note_console)

    sign_in(page, live_server, shop.manager.email, shop.manager.password)
    page.click("nav.manager-tabs a:text-is('Wallet')")
    expect(page).to_have_url(f"{live_server}/manager/wallet")
    expect(page.locator("#logo-preview")).to_have_attribute("alt", "The monogram of Corner Coffee, as Google Wallet "
                                                                   "shows it")
    page.fill("#pass_background", "#7a1f5c")
    page.set_input_files("#logo", str(logo_file))
    with page.expect_navigation():
        page.click("form.wallet-form button[type=submit]")

    expect(page).to_have_url(f"{live_server}/manager/wallet")
    expect(page.locator("p.notice")).to_contain_text("Saved")
    expect(page.locator("#pass_background")).to_have_value("#7a1f5c")
    expect(page.locator("rect[data-preview=background]")).to_have_attribute("fill", "#7a1f5c")
    preview = page.locator("#logo-preview")
    expect(preview).to_have_attribute("alt", "Your logo, as Google Wallet shows it")
    expect(preview).to_have_attribute("src", re.compile(rf"/p/{shop.kit.program.slug}/logo\.png\?v=1$"))
    preview.scroll_into_view_if_needed()
    expect(preview).to_have_js_property("complete", True)
    assert preview.evaluate("img => img.naturalWidth") == LOGO_SIDE
    shot = preview.screenshot(animations="disabled")  # what the manager sees: the orange logo on the new background
    with Image.open(io.BytesIO(shot)) as image:
        width, height = image.size
        assert close_to(image.convert("RGB").getpixel((width // 2, height // 2)), (230, 120, 20), 12)
        assert close_to(image.convert("RGB").getpixel((width // 20, height // 2)), (0x7A, 0x1F, 0x5C), 12)

    with live_db(app) as session:
        program = session.get(Program, shop.kit.program.id)
        assert program is not None
        assert program.pass_background == "#7a1f5c" and program.pass_revision == 1
        assert program.logo_png is not None and pixel(program.logo_png, (60, 60)) == (230, 120, 20)
    assert not console_errors, console_errors
    guard.assert_same_origin()
    guard.assert_scripts_only_from_self()
    guard.assert_no_errors()
    save_screenshot(page, f"manager-wallet-{'phone' if device is PHONE else 'laptop'}")


def test_a_logo_too_large_is_explained_on_the_page_in_the_browser(
    app: Flask, live_server: str, live_shop: Callable[..., LiveShop], open_page: OpenPage, tmp_path: Path,
) -> None:
    """Over the upload limit, Werkzeug refuses the body before the form is read: the page still says why."""
    shop = live_shop()
    big = tmp_path / "poster.png"
    big.write_bytes(padded_to(image_bytes((40, 40), (255, 0, 0)), 2 * 1024 * 1024))
    page, guard = open_page(LAPTOP)

    sign_in(page, live_server, shop.manager.email, shop.manager.password)
    page.goto("/manager/wallet")
    page.fill("#pass_background", "#7a1f5c")
    page.set_input_files("#logo", str(big))
    with page.expect_navigation() as landed:
        page.click("form.wallet-form button[type=submit]")

    assert landed.value is not None and landed.value.status == 413
    expect(page.locator("[data-error-for=logo]")).to_contain_text("The logo file is larger than 512 KB.")
    expect(page.locator("p.alert[role=alert]")).to_contain_text("Nothing was saved")
    with live_db(app) as session:
        program = session.get(Program, shop.kit.program.id)
        assert program is not None
        assert (program.pass_background, program.logo_png, program.pass_revision) == ("#1f2937", None, 0)
    guard.assert_same_origin()
