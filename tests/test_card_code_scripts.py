"""The card page's live-code script in Node: its SHA-1, HMAC-SHA1 and TOTP against the published vectors and
against the server's Python, and its QR symbol read back by an independent decoder (jsQR)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.domain.rotating_codes import rotating_code_at, step_at, totp

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "static"
CODE = ("AGQ3EAAREIZUIVLGO4E2QNDJYULSARF3U775SJZCQKLDG52GNLXJX7L4PWAENTEPRG2JJGDG5NYG5Q5HJCMCT27AE4GRX2LBH6UQWLWQEPOC"
        "4G7AS7G2Y2YL")


def _node(script: str, data: Any = None) -> Any:
    """Run an ES module script with `data` as JSON on stdin (read with `input()`); answers its JSON output."""
    node = shutil.which("node")
    assert node, "Node.js is needed (it comes with the npm that `make install` uses)"
    prelude = (
        "import { readFileSync } from 'node:fs';"
        "const input = () => JSON.parse(readFileSync(0, 'utf8'));"
        "const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');"
        "const unhex = (text) => Uint8Array.from(text.match(/../g) || [], (h) => parseInt(h, 16));"
    )
    done = subprocess.run([node, "--input-type=module", "-e", prelude + script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False, input=json.dumps(data))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# FIPS 180-2 appendix A and the NIST example values.
SHA1_VECTORS = [
    ("", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
    (b"abc".hex(), "a9993e364706816aba3e25717850c26c9cd0d89d"),
    (b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".hex(), "84983e441c3bd26ebaae4aa1f95129e5e54670f1"),
    (b"a".hex() * 1_000_000, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"),
]
# Lengths at the padding's edges (55, 56, 63, 64, 65 bytes), checked against Python's hashlib.
EDGE_LENGTHS = [55, 56, 63, 64, 65, 119, 120, 128]


# RFC 2202 section 3: HMAC-SHA1 test cases 1 to 7.
HMAC_VECTORS = [
    ("0b" * 20, b"Hi There".hex(), "b617318655057264e28bc0b6fb378c8ef146be00"),
    (b"Jefe".hex(), b"what do ya want for nothing?".hex(), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    ("aa" * 20, "dd" * 50, "125d7342b9ac11cd91a39af48aa17b4f63f175d3"),
    ("0102030405060708090a0b0c0d0e0f10111213141516171819", "cd" * 50, "4c9007f4026250c6bc8414f9bf50c86c2d7235da"),
    ("0c" * 20, b"Test With Truncation".hex(), "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04"),
    ("aa" * 80, b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
     "aa4ae5e15272d00e95705637ce8a3b55ed402112"),
    ("aa" * 80, b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data".hex(),
     "e8e99d0f45237d786d6bbaa7965c7808bbff1a91"),
]


def test_sha1_matches_the_published_vectors_and_hashlib() -> None:
    edges = [secrets.token_bytes(length) for length in EDGE_LENGTHS]
    cases = SHA1_VECTORS + [(message.hex(), hashlib.sha1(message).hexdigest()) for message in edges]
    answer = _node(
        "import { sha1 } from './static/js/totp.js';"
        "console.log(JSON.stringify(input().map((m) => hex(sha1(unhex(m))))));",
        [message for message, _ in cases],
    )
    assert answer == [digest for _, digest in cases]


def test_hmac_sha1_matches_rfc_2202() -> None:
    answer = _node(
        "import { hmacSha1 } from './static/js/totp.js';"
        "console.log(JSON.stringify(input().map(([k, m]) => hex(hmacSha1(unhex(k), unhex(m))))));",
        [[key, message] for key, message, _ in HMAC_VECTORS],
    )
    assert answer == [mac for _, _, mac in HMAC_VECTORS]


def test_totp_matches_rfc_6238() -> None:
    times = [59, 1111111109, 1111111111, 1234567890, 2000000000, 20000000000]
    answer = _node(
        "import { totp, stepAt } from './static/js/totp.js';"
        "const secret = new TextEncoder().encode('12345678901234567890');"
        "console.log(JSON.stringify(input().map((t) => totp(secret, stepAt(t * 1000, 30), 8))));",
        times,
    )
    assert answer == ["94287082", "07081804", "14050471", "89005924", "69279037", "65353130"]


def test_totp_agrees_with_the_server_for_random_secrets_and_steps() -> None:
    cases = [(secrets.token_bytes(20), secrets.randbelow(2**40)) for _ in range(200)]
    cases += [(secrets.token_bytes(20), step) for step in (0, 1, 2**32 - 1, 2**32, 2**33 + 5, 2**52)]
    answer = _node(
        "import { totp, hexToBytes } from './static/js/totp.js';"
        "console.log(JSON.stringify(input().map(([s, step]) => totp(hexToBytes(s), step))));",
        [[secret.hex(), step] for secret, step in cases],
    )
    assert answer == [totp(secret, step) for secret, step in cases]


@pytest.mark.parametrize("period", [10, 30, 300])
def test_the_page_shows_what_the_server_expects(period: int) -> None:
    secret = secrets.token_bytes(20)
    moment = dt.datetime(2026, 5, 4, 12, 0, 10, 500_000, tzinfo=dt.UTC)
    answer = _node(
        "import { liveCodeAt } from './static/js/card-code.js';"
        "const { code, slot, secret, period, ms } = input();"
        "console.log(JSON.stringify(liveCodeAt(code, { slot, secret }, period, ms)));",
        {"code": CODE, "slot": 3, "secret": secret.hex(), "period": period, "ms": int(moment.timestamp() * 1000)},
    )
    assert answer == {"step": step_at(moment, period), "text": rotating_code_at(CODE, 3, secret, moment, period)}


@pytest.mark.parametrize(("period", "seconds_into_step", "left"), [
    (30, 0.0, 30), (30, 0.4, 30), (30, 1.0, 29), (30, 29.2, 1), (30, 29.999, 1), (10, 5.0, 5),
])
def test_the_countdown(period: int, seconds_into_step: float, left: int) -> None:
    ms = 1_800_000_000_000 - 1_800_000_000_000 % (period * 1000) + int(seconds_into_step * 1000)
    answer = _node(
        "import { secondsLeft } from './static/js/card-code.js';"
        "const { period, ms } = input(); console.log(JSON.stringify(secondsLeft(period, ms)));",
        {"period": period, "ms": ms},
    )
    assert answer == left


@pytest.mark.parametrize(("server_ms", "local_ms", "offset"), [
    (1_000_000, 1_000_000, 0),
    (1_000_000, 1_004_000, 0),  # the page's download time, not a wrong clock
    (1_000_000, 1_120_000, -120_000),  # a phone two minutes fast
    (1_000_000, 900_000, 100_000),
])
def test_only_a_clock_far_off_is_corrected(server_ms: int, local_ms: int, offset: int) -> None:
    answer = _node(
        "import { clockOffset } from './static/js/card-code.js';"
        "const [s, l] = input(); console.log(JSON.stringify(clockOffset(s, l)));",
        [server_ms, local_ms],
    )
    assert answer == offset


@pytest.mark.parametrize("slot", [0, 1, 42, 999_999])
def test_the_qr_symbol_is_version_6_and_reads_back(slot: int) -> None:
    """qrcode-generator's symbol, drawn to pixels and read by jsQR (another library): the very text."""
    text = f"{CODE}.{slot}.012345"
    answer = _node(
        "import { createRequire } from 'node:module';"
        "import { qrSymbol } from './static/js/card-code.js';"
        "const jsQR = createRequire(import.meta.url)('./node_modules/jsqr/dist/jsQR.js');"
        "const text = input(); const symbol = qrSymbol(text);"
        "const scale = 4, quiet = 4, side = (symbol.size + 2 * quiet) * scale;"
        "const pixels = new Uint8ClampedArray(side * side * 4).fill(255);"
        "for (let y = 0; y < side; y += 1) for (let x = 0; x < side; x += 1) {"
        "  const row = Math.floor(y / scale) - quiet, col = Math.floor(x / scale) - quiet;"
        "  if (row >= 0 && col >= 0 && row < symbol.size && col < symbol.size && symbol.isDark(row, col))"
        "    pixels.fill(0, (y * side + x) * 4, (y * side + x) * 4 + 3);"
        "}"
        "const read = jsQR(pixels, side, side);"
        "console.log(JSON.stringify({ version: symbol.version, size: symbol.size, text: read && read.data,"
        "  mode: read && read.chunks.map((c) => c.type) }));",
        text,
    )
    assert answer == {"version": 6, "size": 41, "text": text, "mode": ["alphanumeric"]}


def test_the_scripts_load_nothing_from_elsewhere() -> None:
    for name in ("card-code.js", "totp.js"):
        source = (STATIC / "js" / name).read_text()
        assert "://" not in source.replace("http://www.w3.org/2000/svg", ""), name
    source = (STATIC / "js" / "card-code.js").read_text()
    assert 'from "../vendor/qrcode-generator/qrcode.mjs"' in source
    assert (STATIC / "vendor" / "qrcode-generator" / "qrcode.mjs").is_file(), "run `make install`"
    assert "MIT license" in (STATIC / "vendor" / "qrcode-generator" / "qrcode.mjs").read_text()[:1000]
