"""The images of a store card pass (icon, logo, strip at 1x/2x/3x), rendered with Pillow and cached.

The images depend only on the program's art (its logo, colours and initials), never on the member, so they are
rendered, PNG-encoded and hashed once per program and reused for every pass: `pass_images` is an LRU cache
keyed on a small frozen `PassArt`.
"""

from __future__ import annotations

import hashlib
import io
import warnings
import zlib
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

# Apple's documented point sizes for a store card; each image also ships at @2x and @3x.
ICON_SIZE = (29, 29)
LOGO_BOX = (160, 50)
STRIP_SIZE = (375, 123)
SCALES = (1, 2, 3)

# A logo larger than this on either side is refused: it would only be scaled down to 480x150 anyway.
MAX_LOGO_SIDE = 8192
# The monogram is drawn this many times larger and scaled down: Pillow's ellipse has no antialiasing.
_SUPERSAMPLE = 4

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class PassArt:
    """Everything the images depend on: a cache key, so keep it small and exact."""

    logo_png: bytes | None
    background: RGB
    foreground: RGB
    initials: str  # used only when there is no logo


@dataclass(frozen=True)
class PassImage:
    """One file of the pass package, ready for the manifest and the zip."""

    name: str
    data: bytes
    sha1: str
    crc32: int


def parse_hex_colour(text: str) -> RGB:
    """'#1f2937' -> (31, 41, 55). The caller has checked the shape."""
    return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)


def initials_of(name: str) -> str:
    """Up to two letters for a monogram: the first letter or digit of the first two words, ASCII only because
    Pillow's built-in font has no other glyphs."""
    letters = [next((c for c in word if c.isascii() and c.isalnum()), "") for word in name.split()]
    return "".join(letters)[:2].upper()


@lru_cache(maxsize=64)
def logo_problem(logo_png: bytes) -> str | None:
    """Why these bytes cannot serve as a logo, or None when Pillow decodes them as a sane image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(logo_png)) as image:
                if max(image.size) > MAX_LOGO_SIDE:
                    return f"the logo is {image.size[0]}x{image.size[1]} pixels; at most {MAX_LOGO_SIDE} a side"
                image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        return f"the logo is not an image Pillow can decode ({type(exc).__name__}: {exc})"
    return None


@lru_cache(maxsize=64)
def pass_images(art: PassArt) -> tuple[PassImage, ...]:
    """icon, logo and strip PNGs at every scale, with their SHA-1 and CRC-32, rendered once per art."""
    logo = _open_logo(art.logo_png) if art.logo_png is not None else None
    images: list[PassImage] = []
    for scale in SCALES:
        suffix = "" if scale == 1 else f"@{scale}x"
        images.append(_png(f"icon{suffix}.png", _icon(art, logo, scale)))
        images.append(_png(f"logo{suffix}.png", _logo(art, logo, scale)))
        images.append(_png(f"strip{suffix}.png", _strip(art, scale)))
    return tuple(sorted(images, key=lambda image: image.name))


def _open_logo(logo_png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(logo_png)) as image:
        return image.convert("RGBA")


def _png(name: str, image: Image.Image) -> PassImage:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    data = buffer.getvalue()
    return PassImage(name=name, data=data, sha1=hashlib.sha1(data).hexdigest(), crc32=zlib.crc32(data))


def _fit(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The largest size with `size`'s aspect ratio inside `box`."""
    ratio = min(box[0] / size[0], box[1] / size[1])
    return max(1, min(box[0], round(size[0] * ratio))), max(1, min(box[1], round(size[1] * ratio)))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):  # a Pillow built without FreeType has only the small bitmap font
        return ImageFont.load_default()


def _monogram(initials: str, side: int, disc: RGB, letters: RGB) -> Image.Image:
    """A disc of colour `disc` with the initials cut in colour `letters`, antialiased by supersampling."""
    big = side * _SUPERSAMPLE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((0, 0, big - 1, big - 1), fill=(*disc, 255))
    if initials:
        font = _font(int(big * (0.46 if len(initials) > 1 else 0.56)))
        draw.text((big / 2, big / 2), initials, font=font, fill=(*letters, 255), anchor="mm")
    return image.resize((side, side), Image.Resampling.LANCZOS)


def _icon(art: PassArt, logo: Image.Image | None, scale: int) -> Image.Image:
    """The notification and Mail icon: the logo (or the monogram) centred on the background colour."""
    side = ICON_SIZE[0] * scale
    image = Image.new("RGBA", (side, side), (*art.background, 255))
    if logo is not None:
        inner = max(1, round(side * 0.8))
        mark = logo.resize(_fit(logo.size, (inner, inner)), Image.Resampling.LANCZOS)
    else:
        mark = _monogram(art.initials, max(1, round(side * 0.86)), art.foreground, art.background)
    image.alpha_composite(mark, ((side - mark.width) // 2, (side - mark.height) // 2))
    return image


def _logo(art: PassArt, logo: Image.Image | None, scale: int) -> Image.Image:
    """The logo at the top left, scaled (up or down) to fit Apple's 160x50 box, keeping its aspect ratio; with no
    logo, a monogram disc in the foreground colour on transparent, beside which Wallet prints logoText."""
    box = (LOGO_BOX[0] * scale, LOGO_BOX[1] * scale)
    if logo is not None:
        return logo.resize(_fit(logo.size, box), Image.Resampling.LANCZOS)
    return _monogram(art.initials, box[1], art.foreground, art.background)


def _strip(art: PassArt, scale: int) -> Image.Image:
    """A band of the background colour, a little lighter at the top and darker at the bottom, behind the
    primary field. Built as one column and stretched, and every row is one colour, so it encodes small."""
    width, height = STRIP_SIZE[0] * scale, STRIP_SIZE[1] * scale
    column = bytearray()
    for row in range(height):
        shade = 0.10 - 0.22 * row / max(1, height - 1)  # +10% at the top to -12% at the bottom
        column += bytes(_shade(channel, shade) for channel in art.background)
    return Image.frombytes("RGB", (1, height), bytes(column)).resize((width, height), Image.Resampling.NEAREST)


def _shade(channel: int, amount: float) -> int:
    """Move a channel towards white (amount > 0) or black (amount < 0) by `amount` of the way."""
    target = 255 if amount > 0 else 0
    return round(channel + (target - channel) * abs(amount))


@lru_cache(maxsize=64)
def square_logo_png(program_name: str, background_color: str, foreground_color: str, logo_png: bytes | None = None,
                    side: int = 660) -> bytes:
    """A square program logo for wallets that want one (Google Wallet's programLogo, 660x660 recommended): the
    merchant's logo centred on the background colour, or the monogram the Apple pass uses."""
    art = PassArt(logo_png, parse_hex_colour(background_color), parse_hex_colour(foreground_color),
                  initials_of(program_name))
    image = Image.new("RGBA", (side, side), (*art.background, 255))
    if logo_png is not None:
        logo = _open_logo(logo_png)
        inner = max(1, round(side * 0.8))
        mark = logo.resize(_fit(logo.size, (inner, inner)), Image.Resampling.LANCZOS)
    else:
        mark = _monogram(art.initials, max(1, round(side * 0.86)), art.foreground, art.background)
    image.alpha_composite(mark, ((side - mark.width) // 2, (side - mark.height) // 2))
    return _png("logo.png", image).data
