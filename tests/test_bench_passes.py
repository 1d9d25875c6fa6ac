"""`python -m bench passes` checks what it times, and prints the figures and the issue's two ratios.

The Node comparison is switched off (--no-node), so the suite never needs npm; no figure is asserted, only that
each is there.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import pytest

from bench.__main__ import main as bench_main
from bench.passes import BenchFailed, differences, member_card, verify_pkpass
from passes import DevCertificates, build_pkpass, make_dev_certificates


@pytest.fixture(scope="module")
def dev() -> DevCertificates:
    return make_dev_certificates("pass.com.example.loyalty", "ABCDE12345", "Example Coffee")


def rezip(pkpass: bytes, **replacements: bytes) -> bytes:
    """The same zip with some members' contents replaced."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(pkpass)) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            target.writestr(name, replacements.get(name, source.read(name)))
    return out.getvalue()


def test_passes_subcommand_prints_figures_and_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    status = bench_main(["passes", "--count", "5", "--seconds", "5", "--no-node"])
    out = capsys.readouterr().out

    assert status == 0
    assert "python: sample pass verified: openssl smime -verify: Verification successful" in out
    assert re.search(r"^bare PKCS#7 +5 +\d+\.\d\d", out, re.MULTILINE)
    assert re.search(r"^python +5 +\d+\.\d\d", out, re.MULTILINE)
    assert re.search(r"^python / bare PKCS#7 = \d+\.\d\d \(target ≥ 0\.6\)  (PASS|BELOW TARGET)$", out, re.MULTILINE)
    assert "node: skipped (--no-node)" in out
    assert "python / node: not measured" in out
    assert re.search(r"^  CPUs +\d+ x ", out, re.MULTILINE)


def test_verify_pkpass_refuses_a_changed_pass(dev: DevCertificates, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(dev.ca_cert_pem)
    pkpass = build_pkpass(member_card(1), dev.pass_certificates())
    assert "Verification successful" in verify_pkpass(pkpass, ca, tmp_path)

    with zipfile.ZipFile(io.BytesIO(pkpass)) as archive:
        document = json.loads(archive.read("pass.json"))
        manifest = json.loads(archive.read("manifest.json"))
    document["storeCard"]["headerFields"][0]["value"] = 999_999
    forged = json.dumps(document).encode()
    with pytest.raises(BenchFailed, match="wrong hash for pass.json"):
        verify_pkpass(rezip(pkpass, **{"pass.json": forged}), ca, tmp_path)

    # A manifest that matches the forged pass.json is no longer the one that was signed.
    manifest["pass.json"] = hashlib.new("sha1" if len(manifest["pass.json"]) == 40 else "sha256", forged).hexdigest()
    reforged = rezip(pkpass, **{"pass.json": forged, "manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(BenchFailed, match="openssl smime -verify refused"):
        verify_pkpass(reforged, ca, tmp_path)


def test_differences_sees_another_members_pass(dev: DevCertificates) -> None:
    certificates = dev.pass_certificates()
    first = build_pkpass(member_card(1), certificates)
    assert differences(first, build_pkpass(member_card(1), certificates)) == []
    found = differences(first, build_pkpass(member_card(2), certificates))
    assert len(found) == 1 and "serialNumber" in found[0] and "storeCard" in found[0]
