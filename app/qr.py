"""QR images of card codes: inline SVG for the card page, PNG for download. Cached per code (~8 ms each)."""

from __future__ import annotations

import io
from functools import lru_cache

import qrcode
import qrcode.constants
from qrcode.image.svg import SvgPathImage

# Error correction M keeps a 120-character code at QR version 5 (37x37 modules).
ERROR_CORRECTION = qrcode.constants.ERROR_CORRECT_M


def _qr(code: str) -> qrcode.QRCode:
    qr = qrcode.QRCode(error_correction=ERROR_CORRECTION, border=4)
    qr.add_data(code, optimize=0)
    qr.make(fit=True)
    return qr


@lru_cache(maxsize=4096)
def qr_svg(code: str) -> str:
    """An <svg> element for inline use; scales with CSS."""
    image = _qr(code).make_image(image_factory=SvgPathImage)
    svg: str = image.to_string(encoding="unicode")
    return svg.split("?>", 1)[-1].strip()


@lru_cache(maxsize=512)
def qr_png(code: str, box_size: int = 10) -> bytes:
    image = _qr(code)
    image.box_size = box_size
    buffer = io.BytesIO()
    image.make_image().save(buffer, format="PNG")
    return buffer.getvalue()


def qr_version(code: str) -> int:
    version: int = _qr(code).version
    return version
