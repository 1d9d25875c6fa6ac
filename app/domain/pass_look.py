"""How a program's wallet cards look (colours, logo) and whether their code rotates: the manager's Wallet form.

`read_pass_look` is the form's parser, pure like app/domain/settings.py: the submitted fields and the uploaded
logo's bytes in, a `PassLook` out, or a ValidationError whose `extra["errors"]` holds a message for every bad
field at once (keyed by the form field's name). The logo is checked with Pillow: a real PNG or JPEG, at most
MAX_LOGO_BYTES and MAX_LOGO_SIDE pixels a side, never decoded when its header promises a decompression bomb;
it is re-encoded as a PNG, so what is stored is always a clean PNG whatever was uploaded.

`save_pass_look` applies a PassLook to the program and, when anything the passes show changed, republishes
every pass of it (a new pass revision, noted for the publisher).
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image, ImageOps
from sqlalchemy.orm import Session

from app.domain.errors import ValidationError
from app.domain.pass_changes import note_program_changed
from app.domain.rotating_codes import MAX_PERIOD_SECONDS, MIN_PERIOD_SECONDS, set_rotating_codes
from app.models import Program

MAX_LOGO_BYTES = 512 * 1024
MAX_LOGO_SIDE = 4096
# What is kept of a bigger logo: the largest image a wallet draws is 528 px (Google's square logo) or 480 px wide
# (Apple's logo at 3x), so more pixels only make every pass heavier.
STORED_LOGO_SIDE = 1024
ACCEPTED_FORMATS = ("PNG", "JPEG")
LOGO_TOO_LARGE = (f"The logo file is larger than {MAX_LOGO_BYTES // 1024} KB. Upload a smaller PNG or JPEG: a few "
                  "hundred pixels across is plenty for a wallet card.")
# The form's colour fields, by the Program attribute each one sets, with how the form names them.
COLOUR_FIELDS = {"pass_background": "The background colour", "pass_foreground": "The text colour",
                 "pass_label": "The label colour"}
# WCAG's minimum contrast for normal text; below it the form suggests another pair (it does not refuse it).
READABLE_CONTRAST = 4.5

_HEX = re.compile(r"#?([0-9a-fA-F]{6})")
_WHOLE = re.compile(r"[0-9]{1,6}")
_CHECKED = frozenset({"on", "1", "true", "yes"})


@dataclass(frozen=True)
class PassLook:
    """What the manager asked for: colours as "#rrggbb" (lower case), the logo change, and the code's rotation."""

    pass_background: str
    pass_foreground: str
    pass_label: str
    new_logo_png: bytes | None  # a new logo, already re-encoded as PNG; None: no new logo
    remove_logo: bool  # back to the monogram
    rotating_codes: bool
    code_period_seconds: int | None  # None: keep the stored period


def pass_look_form_values(program: Program) -> dict[str, str]:
    """The form's fields filled in from the program as it is."""
    return {
        "pass_background": program.pass_background,
        "pass_foreground": program.pass_foreground,
        "pass_label": program.pass_label,
        "rotating_codes": "on" if program.rotating_codes else "",
        "code_period_seconds": str(program.code_period_seconds),
        "remove_logo": "",
    }


def read_pass_look(form: Mapping[str, str], logo: bytes | None) -> PassLook:
    """Read the submitted form and uploaded logo (None or b"" when no file was chosen), or raise ValidationError
    listing every bad field. `extra["too_large"]` is True when the logo was over MAX_LOGO_BYTES."""
    errors: dict[str, str] = {}

    def field(name: str) -> str:
        return (form.get(name) or "").strip()

    colours = {name: _colour(field(name), name, label, errors) for name, label in COLOUR_FIELDS.items()}

    remove_logo = field("remove_logo").lower() in _CHECKED
    new_logo = None
    if logo:
        if remove_logo:
            errors["logo"] = "You chose a new logo and ticked “Remove logo”: do one or the other."
        else:
            new_logo = _logo_png(logo, errors)

    rotating = field("rotating_codes").lower() in _CHECKED
    period_text = field("code_period_seconds").removesuffix("s").strip()
    period = None
    if period_text or rotating:
        period = _period(period_text, errors)

    if errors:
        count = len(errors)
        raise ValidationError(
            f"Nothing was saved: {count} field{'s' if count > 1 else ''} need{'' if count > 1 else 's'} fixing.",
            field=next(iter(errors)),
            errors=errors,
            too_large=len(logo or b"") > MAX_LOGO_BYTES,
        )
    return PassLook(
        pass_background=colours["pass_background"] or "",
        pass_foreground=colours["pass_foreground"] or "",
        pass_label=colours["pass_label"] or "",
        new_logo_png=new_logo,
        remove_logo=remove_logo,
        rotating_codes=rotating,
        code_period_seconds=period,
    )


def save_pass_look(session: Session, program: Program, look: PassLook) -> bool:
    """Give the program's passes this look and code rotation; True when anything changed.

    A change republishes every pass of the program (Apple devices are pushed, Google objects patched), so a save
    that changes nothing bumps nothing.
    """
    looks_changed = False
    for name in COLOUR_FIELDS:
        value = getattr(look, name)
        if getattr(program, name) != value:
            setattr(program, name, value)
            looks_changed = True
    if look.remove_logo and program.logo_png is not None:
        program.logo_png = None
        looks_changed = True
    elif look.new_logo_png is not None and look.new_logo_png != program.logo_png:
        program.logo_png = look.new_logo_png
        looks_changed = True

    period_changed = look.code_period_seconds not in (None, program.code_period_seconds)
    if look.rotating_codes != program.rotating_codes or period_changed:
        # It bumps the revision and notes the change itself, so the passes are republished once.
        set_rotating_codes(session, program, on=look.rotating_codes, period=look.code_period_seconds)
        return True
    if looks_changed:
        program.pass_revision += 1
        note_program_changed(session, program.id)
        session.flush()
    return looks_changed


def contrast_ratio(first: str, second: str) -> float:
    """WCAG 2 contrast ratio of two "#rrggbb" colours: 1 (the same) to 21 (black on white)."""
    lighter, darker = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def _luminance(colour: str) -> float:
    def linear(channel: int) -> float:
        value = channel / 255
        return value / 12.92 if value <= 0.04045 else float(((value + 0.055) / 1.055) ** 2.4)

    red, green, blue = (int(colour[index:index + 2], 16) for index in (1, 3, 5))
    return 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)


def _colour(text: str, name: str, label: str, errors: dict[str, str]) -> str | None:
    match = _HEX.fullmatch(text)
    if match is None:
        shown = f"“{text[:20]}” is not one" if text else "it is empty"
        errors[name] = f"{label} is a colour written as # and six hex digits, such as #1f2937; {shown}."
        return None
    return "#" + match[1].lower()


def _period(text: str, errors: dict[str, str]) -> int | None:
    bounds = f"between {MIN_PERIOD_SECONDS} and {MAX_PERIOD_SECONDS} seconds"
    if not _WHOLE.fullmatch(text):
        errors["code_period_seconds"] = f"The code's period is a whole number of seconds {bounds}, such as 30."
        return None
    period = int(text)
    if not MIN_PERIOD_SECONDS <= period <= MAX_PERIOD_SECONDS:
        errors["code_period_seconds"] = (
            f"The code's period must be {bounds} (not {period}): short enough that a screenshot expires quickly, "
            "long enough for a phone whose clock is a little off."
        )
        return None
    return period


def _logo_png(data: bytes, errors: dict[str, str]) -> bytes | None:
    """The uploaded logo re-encoded as PNG (upright, at most STORED_LOGO_SIDE a side), or None and an error."""
    if len(data) > MAX_LOGO_BYTES:
        errors["logo"] = LOGO_TOO_LARGE
        return None
    refused = "The logo must be a PNG or JPEG image; this file is not one, or it is damaged. Save it again as PNG."
    try:
        # Pillow warns about (and beyond twice the limit refuses) images whose header promises more pixels than
        # MAX_IMAGE_PIXELS, before decoding any; as an error, the warning refuses them here too.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                width, height = image.size
                if max(width, height) > MAX_LOGO_SIDE:
                    errors["logo"] = (f"The logo is {width}x{height} pixels; at most {MAX_LOGO_SIDE} pixels a side. "
                                      "Scale it down and upload it again.")
                    return None
                image.load()
                converted = _upright_rgb(image)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        errors["logo"] = (f"The logo claims to be far larger than {MAX_LOGO_SIDE}x{MAX_LOGO_SIDE} pixels, so it was "
                          "not opened. Scale it down and upload it again.")
        return None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error):
        # Pillow's ways of saying "not a PNG or JPEG", "truncated" or "corrupt" (UnidentifiedImageError is an OSError).
        errors["logo"] = refused
        return None
    converted.thumbnail((STORED_LOGO_SIDE, STORED_LOGO_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    converted.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _upright_rgb(image: Image.Image) -> Image.Image:
    """The image as RGB, or RGBA when it has transparency (a palette's included), turned upright as its EXIF
    orientation says (a phone's photo of a logo is often stored sideways)."""
    upright = ImageOps.exif_transpose(image) or image
    return upright.convert("RGBA" if upright.has_transparency_data else "RGB")
