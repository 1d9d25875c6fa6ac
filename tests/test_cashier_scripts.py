"""The scan page's decoder choice and its vendored files, checked in Node (no browser, no camera).

Node is already required by `make install` (npm). The browser tests exercise the polyfill path for real; this
checks the fallback order for browsers we cannot run here, and that the .wasm we serve is the very one the
polyfill's JavaScript was built for.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "static" / "vendor"


def _node(script: str) -> Any:
    node = shutil.which("node")
    assert node, "Node.js is needed (it comes with the npm that `make install` uses)"
    done = subprocess.run([node, "--input-type=module", "-e", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(("env", "order"), [
    ({"nativeFormats": ["qr_code", "ean_13"], "webAssembly": True}, ["native", "polyfill", "jsqr"]),
    ({"nativeFormats": ["ean_13"], "webAssembly": True}, ["polyfill", "jsqr"]),  # native, but no QR
    ({"nativeFormats": [], "webAssembly": True}, ["polyfill", "jsqr"]),
    ({"nativeFormats": None, "webAssembly": True}, ["polyfill", "jsqr"]),  # Linux Chromium, Firefox
    ({"nativeFormats": ["qr_code"], "webAssembly": False}, ["native", "jsqr"]),
    ({"nativeFormats": None, "webAssembly": False}, ["jsqr"]),
])
def test_decoder_fallback_order(env: dict[str, Any], order: list[str]) -> None:
    answer = _node(
        "import { decoderCandidates, pickDecoder } from './static/js/decoders.js';"
        f"const env = {json.dumps(env)};"
        "console.log(JSON.stringify({order: decoderCandidates(env), first: pickDecoder(env)}));"
    )
    assert answer == {"order": order, "first": order[0]}


def test_a_decoder_that_fails_to_start_gives_way_to_the_next() -> None:
    answer = _node(
        "import { loadDecoder } from './static/js/decoders.js';"
        "console.warn = () => {};"
        "const loaders = {"
        "  native: async () => { throw new Error('no camera formats'); },"
        "  polyfill: async () => { throw new Error('wasm offline'); },"
        "  jsqr: async () => ({ kind: 'jsqr' }),"
        "};"
        "const chosen = await loadDecoder(['native', 'polyfill', 'jsqr'], loaders);"
        "let none = null;"
        "try { await loadDecoder(['polyfill'], loaders); } catch (error) { none = error.message; }"
        "console.log(JSON.stringify({chosen: chosen.kind, none}));"
    )
    assert answer == {"chosen": "jsqr", "none": "No QR decoder could start (polyfill: wasm offline)"}


def test_the_served_wasm_is_the_one_the_polyfill_was_built_for() -> None:
    wasm = VENDOR / "zxing-wasm" / "zxing_reader.wasm"
    assert wasm.exists(), "static/vendor is made by `make install`"
    answer = _node(
        "const m = await import('./static/vendor/barcode-detector/ponyfill.js');"
        "console.log(JSON.stringify({sha256: m.ZXING_WASM_SHA256, version: m.ZXING_WASM_VERSION,"
        " prepare: typeof m.prepareZXingModule, detector: typeof m.BarcodeDetector}));"
    )
    assert answer["sha256"] == hashlib.sha256(wasm.read_bytes()).hexdigest()
    assert answer["prepare"] == answer["detector"] == "function"
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/zxing-wasm"]["version"] == answer["version"]


def test_decoders_point_at_files_make_install_copies() -> None:
    source = (ROOT / "static" / "js" / "decoders.js").read_text()
    for relative in ("barcode-detector/ponyfill.js", "zxing-wasm/zxing_reader.wasm", "jsqr/jsQR.js"):
        assert f'"{relative}"' in source
        assert (VENDOR / relative).is_file(), f"static/vendor/{relative} is missing: run `make install`"
    # The polyfill's own default for the .wasm is a CDN; ours names no other origin at all.
    assert "://" not in source


def test_front_end_packages_are_pinned_exactly() -> None:
    manifest = json.loads((ROOT / "package.json").read_text())
    lock = json.loads((ROOT / "package-lock.json").read_text())
    for name, version in manifest["dependencies"].items():
        assert version[0].isdigit(), f"{name} is pinned to a range ({version}), not a version"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    resolved = [entry["resolved"] for entry in lock["packages"].values() if "resolved" in entry]
    assert all(url.startswith("https://registry.npmjs.org/") for url in resolved), resolved
