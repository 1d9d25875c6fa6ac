"""`python -m bench passes`: how fast passes/ builds signed Apple Wallet passes, and against what.

Three figures from one machine, each builder on one thread:

    bare PKCS#7  cryptography signing a manifest.json as large as the real pass's, and nothing else: the
                 ceiling, since every pass costs at least one signature
    python       passes.build_pkpass for one program (its images are cached, as they are in the app) and a
                 different member on every pass: serial, holder, points, barcode and web service token
    node         the npm package passkit-generator (pinned in passkit_node/package-lock.json) building the
                 same pass from the same certificates, with the same per-member changes: the Python builder's
                 pass unpacked into a .pass model, read once, then PKPass.from(model, overrides) per member

Bare PKCS#7 and python take turns in a few rounds, so that another job on the machine slows both alike; node
runs after them, in its own process (passkit_node/build.mjs), which reports its own timing.

The issue's targets: python at least 30 times node, and at least 0.6 of the bare signing rate. Missing a target
is reported, not an error; the exit status is 1 only when something failed to build or to verify. Before any
builder's figure counts, one of its passes is checked with `openssl smime -verify` against the throwaway root CA,
and its manifest against the files in the zip, so the benchmark never times broken output.

The Node builder is installed with `npm ci` into passkit_node/node_modules on first use, and skipped with a
printed line when node or npm is not on PATH (or with --no-node).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import __version__ as cryptography_version
from cryptography.hazmat.backends.openssl import backend as openssl_backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from bench.load import busy_fraction
from passes import CardPass, Offer, PassCertificates, build_pkpass, make_dev_certificates, pass_json

TARGET_NODE_RATIO = 30.0
TARGET_SIGNING_RATIO = 0.6
IDLE_CHECK_SECONDS = 1.0
BUSY_WARNING = 0.10
PYTHON_WARMUP = 5
ROUNDS = 5
NODE_WARMUP = 5
NODE_BUILDER = Path(__file__).resolve().parent / "passkit_node"
NODE_TIMEOUT_SECONDS = 600.0
NPM_CI_TIMEOUT_SECONDS = 300.0

PASS_TYPE_IDENTIFIER = "pass.com.example.loyalty"
TEAM_IDENTIFIER = "ABCDE12345"
ORGANIZATION = "Example Coffee"
# What changes from one member's pass to the next; build.mjs sets these on each pass, the rest is the model.
# webServiceURL is the same for all, but passkit-generator refuses a pass.json that has it without a token.
PER_PASS_KEYS = ("serialNumber", "authenticationToken", "webServiceURL", "barcodes", "barcode")
# pass.json keys the Python builder writes that passkit-generator 3 cannot: its schema drops unknown keys.
NODE_CANNOT_WRITE = {"barcode": "the singular barcode key, which only iOS 8 and earlier read"}
OVERRIDABLE_KEYS = ("serialNumber", "authenticationToken", "webServiceURL")
PASS_STYLES = ("boardingPass", "coupon", "eventTicket", "generic", "storeCard")
SIGNATURE_FILES = ("manifest.json", "signature")


class BenchFailed(Exception):
    """A builder's output did not build or did not verify: its figure would mean nothing."""


@dataclass(frozen=True)
class Figure:
    """One builder's measured window."""

    builder: str
    passes: int
    seconds: float
    cpu_seconds: float
    average_bytes: float

    @property
    def rate(self) -> float:
        return self.passes / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class NodeRun:
    """What build.mjs reported, plus the pass it wrote for checking."""

    figure: Figure
    node_version: str
    package_version: str
    warnings: list[str]
    sample: bytes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench passes",
        description="Signed .pkpass files per second from passes.build_pkpass, next to bare PKCS#7 signing and "
        "the npm package passkit-generator, on this machine. See bench/passes.py.",
    )
    parser.add_argument("--count", type=int, default=5_000,
                        help="at most this many passes for python and signatures for bare PKCS#7 "
                        "(default %(default)s)")
    parser.add_argument("--node-count", type=int, default=200,
                        help="at most this many passes for node (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="stop any one builder's window after this many seconds (default %(default)s)")
    parser.add_argument("--no-node", action="store_true", help="skip the passkit-generator comparison")
    args = parser.parse_args(argv)
    for name in ("count", "node_count", "seconds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be more than zero")
    return args


def progress(message: str) -> None:
    print(message, flush=True)


def member_card(number: int) -> CardPass:
    """Member `number` of the one benchmark program: every per-member value differs from the next member's."""
    digest = hashlib.shake_256(f"bench member {number}".encode()).digest(91)
    return CardPass(
        pass_type_identifier=PASS_TYPE_IDENTIFIER,
        team_identifier=TEAM_IDENTIFIER,
        serial_number=f"bench-{number:07d}",
        organization_name=ORGANIZATION,
        program_name="Coffee Club",
        holder_name=f"Member {number}",
        points=1_000 + (number * 37) % 9_000,
        barcode_message=base64.b32encode(digest[:75]).decode(),  # 120 characters, like a real card code
        barcode_alt_text=base64.b32encode(digest[75:80]).decode()[:4] + "-" + f"{number:04d}"[-4:],
        card_page_url=f"https://example.com/c/{digest[80:88].hex()}",
        tier="Silver",
        offers=(Offer("Free pastry", "with any coffee"),),
        terms="Points expire 12 months after the purchase that earned them. One card per person.",
        web_service_url="https://example.com/wallet/apple",
        authentication_token=digest[75:91].hex(),
    )


def time_interleaved(builders: dict[str, Callable[[int], bytes]], count: int, seconds: float,
                     rounds: int) -> list[Figure]:
    """Time each builder on `count` items (build(0), build(1), ...) within `seconds`, in `rounds` turns.

    The builders take turns, a slice each, so that another job on the machine slows them alike and their ratio
    holds even when the absolute figures do not.
    """
    done = dict.fromkeys(builders, 0)
    total_bytes = dict.fromkeys(builders, 0)
    elapsed = dict.fromkeys(builders, 0.0)
    cpu = dict.fromkeys(builders, 0.0)
    for turn in range(rounds):
        for name, build in builders.items():
            quota = count * (turn + 1) // rounds
            deadline = seconds * (turn + 1) / rounds
            cpu_start = time.process_time()
            start = time.perf_counter()
            while done[name] < quota and elapsed[name] + time.perf_counter() - start < deadline:
                total_bytes[name] += len(build(done[name]))
                done[name] += 1
            elapsed[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - cpu_start
    return [Figure(name, done[name], elapsed[name], cpu[name], total_bytes[name] / done[name] if done[name] else 0.0)
            for name in builders]


def bare_signature(manifest: bytes, certificates: PassCertificates) -> bytes:
    """The detached PKCS#7 signature every pass carries, over `manifest`, and nothing else."""
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(manifest)
        .add_signer(certificates.signer_cert, certificates.signer_key, hashes.SHA256())
        .add_certificate(certificates.wwdr_cert)
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])
    )


def verify_pkpass(pkpass: bytes, ca_pem: Path, workdir: Path) -> str:
    """Check a .pkpass as a stranger would; return a one-line summary, or raise BenchFailed saying what is wrong.

    The zip must hold pass.json, manifest.json and signature; the manifest must list every other file with its
    right SHA-1 or SHA-256; and `openssl smime -verify` must accept the signature over the manifest, with a chain
    to `ca_pem`.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(pkpass))
        files = {name: archive.read(name) for name in archive.namelist() if not name.endswith("/")}
    except (zipfile.BadZipFile, OSError) as error:
        raise BenchFailed(f"not a readable zip: {error}") from error
    missing = [name for name in ("pass.json", *SIGNATURE_FILES) if name not in files]
    if missing:
        raise BenchFailed(f"the zip lacks {', '.join(missing)} (it holds {', '.join(sorted(files))})")
    try:
        manifest = json.loads(files["manifest.json"])
        json.loads(files["pass.json"])
    except ValueError as error:
        raise BenchFailed(f"manifest.json or pass.json is not JSON: {error}") from error
    content = {name: data for name, data in files.items() if name not in SIGNATURE_FILES}
    if set(manifest) != set(content):
        raise BenchFailed(f"manifest.json lists {sorted(manifest)} but the zip holds {sorted(content)}")
    algorithms = set()
    for name, data in content.items():
        algorithm = {40: "sha1", 64: "sha256"}.get(len(manifest[name]), "unknown")
        if algorithm == "unknown" or hashlib.new(algorithm, data).hexdigest() != manifest[name]:
            raise BenchFailed(f"manifest.json has the wrong hash for {name}")
        algorithms.add(algorithm.upper().replace("SHA", "SHA-"))

    (workdir / "manifest.json").write_bytes(files["manifest.json"])
    (workdir / "signature").write_bytes(files["signature"])
    check = subprocess.run(
        ["openssl", "smime", "-verify", "-inform", "DER", "-binary", "-in", str(workdir / "signature"),
         "-content", str(workdir / "manifest.json"), "-purpose", "any", "-CAfile", str(ca_pem),
         "-out", os.devnull],
        capture_output=True, text=True, check=False,
    )
    if check.returncode != 0:
        raise BenchFailed(f"openssl smime -verify refused the signature: {check.stderr.strip()}")
    return (f"openssl smime -verify: {check.stderr.strip() or 'OK'}; manifest: {len(content)} files, "
            f"{'/'.join(sorted(algorithms))}; {len(pkpass):,} bytes")


def as_dict(document: dict[str, Any] | bytes | str) -> dict[str, Any]:
    """pass.json as a dict, whether pass_json gave it as a dict or as its serialised bytes."""
    if isinstance(document, dict):
        return document
    parsed: dict[str, Any] = json.loads(document)
    return parsed


def pass_style(document: dict[str, Any]) -> str:
    styles = [style for style in PASS_STYLES if style in document]
    if len(styles) != 1:
        raise BenchFailed(f"pass.json should have exactly one pass style, found {styles or 'none'}")
    return styles[0]


def node_model(document: dict[str, Any]) -> dict[str, Any]:
    """The model's pass.json: everything that stays the same from one member to the next."""
    return {key: value for key, value in document.items() if key not in PER_PASS_KEYS}


def node_change(model: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """What build.mjs sets on the model to get `document`: overrides, barcodes and the field lists that differ."""
    style = pass_style(document)
    others = sorted(
        key for key in model.keys() | document.keys()
        if key not in PER_PASS_KEYS and key != style and model.get(key) != document.get(key)
    )
    if others:
        raise BenchFailed(f"pass.json keys {others} change per member, and build.mjs does not set them")
    return {
        "overrides": {key: document[key] for key in OVERRIDABLE_KEYS if key in document},
        "barcodes": document.get("barcodes", []),
        "fields": {section: fields for section, fields in document[style].items()
                   if fields != model[style].get(section)},
    }


def write_node_model(sample: bytes, folder: Path) -> None:
    """Unpack the Python builder's pass into a .pass model folder: the per-member keys out, the images in."""
    folder.mkdir()
    with zipfile.ZipFile(io.BytesIO(sample)) as archive:
        for name in archive.namelist():
            if name.endswith("/") or name in SIGNATURE_FILES:
                continue
            data = archive.read(name)
            if name == "pass.json":
                data = json.dumps(node_model(json.loads(data)), ensure_ascii=False).encode()
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    """pass.json without empty field lists: passkit-generator writes all five, the Python builder only those in use."""
    style = pass_style(document)
    return {**document, style: {section: fields for section, fields in document[style].items() if fields}}


def differences(python_pass: bytes, node_pass: bytes) -> list[str]:
    """Where the Node builder's pass says something other than the Python builder's, for the same member."""
    with zipfile.ZipFile(io.BytesIO(python_pass)) as first, zipfile.ZipFile(io.BytesIO(node_pass)) as second:
        python_files, node_files = set(first.namelist()), set(second.namelist())
        python_json = comparable(json.loads(first.read("pass.json")))
        node_json = comparable(json.loads(second.read("pass.json")))
        different_files = sorted(
            name for name in python_files & node_files
            if name not in ("pass.json", *SIGNATURE_FILES) and first.read(name) != second.read(name)
        )
    found = []
    if python_files != node_files:
        found.append(f"files only in python's: {sorted(python_files - node_files)}, "
                     f"only in node's: {sorted(node_files - python_files)}")
    if different_files:
        found.append(f"files with other content: {different_files}")
    keys = sorted(
        key for key in python_json.keys() | node_json.keys()
        if python_json.get(key) != node_json.get(key) and key not in NODE_CANNOT_WRITE
    )
    if keys:
        found.append(f"pass.json keys that differ: {keys}")
    return found


def node_tools() -> tuple[str, str] | None:
    node, npm = shutil.which("node"), shutil.which("npm")
    return (node, npm) if node and npm else None


def install_node_builder(npm: str) -> None:
    """`npm ci` the pinned passkit-generator into passkit_node/node_modules, unless that version is there."""
    wanted = json.loads((NODE_BUILDER / "package.json").read_text())["dependencies"]["passkit-generator"]
    installed = NODE_BUILDER / "node_modules" / "passkit-generator" / "package.json"
    if installed.exists() and json.loads(installed.read_text()).get("version") == wanted:
        return
    progress(f"node: installing passkit-generator {wanted} with npm ci into {NODE_BUILDER / 'node_modules'}")
    try:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(NODE_BUILDER)],
            capture_output=True, text=True, check=False, timeout=NPM_CI_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired as error:
        raise BenchFailed(f"npm ci did not finish within {NPM_CI_TIMEOUT_SECONDS:.0f} s") from error
    if result.returncode != 0:
        raise BenchFailed(f"npm ci failed (exit status {result.returncode}): {result.stderr.strip()}")


def run_node_builder(node: str, job: dict[str, Any], workdir: Path) -> NodeRun:
    """Run build.mjs on `job` and read back its figures and the pass it wrote."""
    job_path = workdir / "node-job.json"
    job_path.write_text(json.dumps(job))
    try:
        result = subprocess.run(
            [node, str(NODE_BUILDER / "build.mjs"), str(job_path)],
            capture_output=True, text=True, check=False, timeout=NODE_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired as error:
        raise BenchFailed(f"build.mjs did not finish within {NODE_TIMEOUT_SECONDS:.0f} s") from error
    if result.returncode != 0:
        raise BenchFailed(f"build.mjs failed (exit status {result.returncode}): {result.stderr.strip()}")
    report = json.loads(result.stdout)
    figure = Figure("node", report["passes"], report["seconds"], report["cpuSeconds"], report["averageBytes"])
    return NodeRun(figure, report["node"], report["passkitGenerator"], report["warnings"],
                   Path(job["sample"]).read_bytes())


def compare_node(args: argparse.Namespace, tools: tuple[str, str], certificates: PassCertificates, sample: bytes,
                 certificate_files: dict[str, Path], workdir: Path) -> NodeRun:
    """Build the Python builder's pass with passkit-generator: check one, then time `--node-count` of them.

    The model is member 0's pass; Node builds members 1, 2, ..., so the pass it is checked with (member 1's)
    shows that every per-member change took, as well as that it verifies.
    """
    node, npm = tools
    install_node_builder(npm)
    model_folder = workdir / "model.pass"
    write_node_model(sample, model_folder)
    model = json.loads((model_folder / "pass.json").read_bytes())
    members = range(1, args.node_count + 1)
    job = {
        "model": str(model_folder),
        "certificates": {name: str(path) for name, path in certificate_files.items() if name != "ca"},
        "passes": [node_change(model, as_dict(pass_json(member_card(number)))) for number in members],
        "count": args.node_count,
        "seconds": args.seconds,
        "warmup": NODE_WARMUP,
        "sample": str(workdir / "node-sample.pkpass"),
    }
    progress(f"node: passkit-generator, up to {args.node_count:,} passes or {args.seconds:g} s "
             f"after {NODE_WARMUP} warm-up passes")
    run = run_node_builder(node, job, workdir)
    for warning in run.warnings:
        progress(f"node: passkit-generator warned: {warning}")
    try:
        summary = verify_pkpass(run.sample, certificate_files["ca"], workdir)
    except BenchFailed as error:
        raise BenchFailed(f"the pass passkit-generator built does not verify, so its figure is not shown: "
                          f"{error}") from error
    progress(f"node: sample pass verified: {summary}")
    for key, what in NODE_CANNOT_WRITE.items():
        progress(f"node: note: passkit-generator 3 cannot write {key!r} ({what}), so its pass lacks it")
    found = differences(build_pkpass(member_card(members[0]), certificates), run.sample)
    for difference in found:
        progress(f"Warning: node's pass is not the same as python's for the same member: {difference}")
    if not found:
        progress(f"node: same pass as python's for member {members[0]}: same files, same images, same pass.json "
                 f"(but for {', '.join(map(repr, NODE_CANNOT_WRITE))})")
    return run


def format_table(figures: Sequence[Figure]) -> str:
    lines = [f"{'builder':<13}{'passes':>9}{'seconds':>10}{'CPU s':>9}{'bytes':>9}{'passes/s':>11}"]
    for f in figures:
        lines.append(f"{f.builder:<13}{f.passes:>9,}{f.seconds:>10.2f}{f.cpu_seconds:>9.2f}"
                     f"{f.average_bytes:>9,.0f}{f.rate:>11,.1f}")
    return "\n".join(lines)


def ratio_line(label: str, ratio: float, target: float, unit: str) -> str:
    verdict = "PASS" if ratio >= target else "BELOW TARGET"
    if unit == "×":
        return f"{label} = {ratio:.1f}× (target ≥ {target:g}×)  {verdict}"
    return f"{label} = {ratio:.2f} (target ≥ {target:g})  {verdict}"


def machine_description(node: NodeRun | None) -> list[str]:
    cpu_model = "unknown"
    try:
        cpu_model = next(
            line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    openssl_cli = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=False)
    lines = [
        f"CPUs     {os.cpu_count()} x {cpu_model} (each builder runs on one thread)",
        f"system   {platform.system()} {platform.release()}",
        f"Python   {platform.python_version()}, cryptography {cryptography_version} "
        f"with {openssl_backend.openssl_version_text()}",
        f"verify   {openssl_cli.stdout.strip() or 'openssl: not found'} (the openssl command)",
    ]
    if node is not None:
        lines.append(f"Node     {node.node_version}, passkit-generator {node.package_version} (node-forge inside)")
    return lines


def run(args: argparse.Namespace, workdir: Path) -> tuple[list[Figure], NodeRun | None, list[str]]:
    """The three measurements; returns the figures, Node's run (if any) and the failures."""
    failures: list[str] = []
    progress("making throwaway certificates: root CA -> stand-in WWDR -> pass signer")
    dev = make_dev_certificates(PASS_TYPE_IDENTIFIER, TEAM_IDENTIFIER, ORGANIZATION)
    certificates = dev.pass_certificates()
    certificate_files = {"ca": workdir / "ca.pem", "wwdr": workdir / "wwdr.pem",
                         "signerCert": workdir / "signer-cert.pem", "signerKey": workdir / "signer-key.pem"}
    for name, pem in (("ca", dev.ca_cert_pem), ("wwdr", dev.wwdr_cert_pem), ("signerCert", dev.pass_cert_pem),
                      ("signerKey", dev.pass_key_pem)):
        certificate_files[name].write_bytes(pem)

    sample = build_pkpass(member_card(0), certificates)
    try:
        progress(f"python: sample pass verified: {verify_pkpass(sample, certificate_files['ca'], workdir)}")
    except BenchFailed as error:
        progress(f"python: the sample pass does not verify, so nothing is timed: {error}")
        return [], None, [f"python: {error}"]
    with zipfile.ZipFile(io.BytesIO(sample)) as archive:
        manifest = archive.read("manifest.json")

    bare_signature(manifest, certificates)
    for number in range(args.count, args.count + PYTHON_WARMUP):  # members the window will not see
        build_pkpass(member_card(number), certificates)
    cards = [member_card(number) for number in range(args.count)]
    progress(f"bare PKCS#7 and python: up to {args.count:,} each or {args.seconds:g} s, taking turns in "
             f"{ROUNDS} rounds; bare PKCS#7 signs a {len(manifest):,}-byte manifest.json, python builds a new "
             "member's pass each time")
    figures = time_interleaved(
        {"bare PKCS#7": lambda _: bare_signature(manifest, certificates),
         "python": lambda number: build_pkpass(cards[number], certificates)},
        args.count, args.seconds, ROUNDS,
    )

    node: NodeRun | None = None
    tools = node_tools()
    if args.no_node:
        progress("node: skipped (--no-node)")
    elif tools is None:
        progress("node: skipped: node and npm must both be on PATH to compare with passkit-generator")
    else:
        try:
            node = compare_node(args, tools, certificates, sample, certificate_files, workdir)
            figures.append(node.figure)
        except BenchFailed as error:
            progress(f"node: FAILED: {error}")
            failures.append(f"node: {error}")
    return figures, node, failures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    busy = busy_fraction(IDLE_CHECK_SECONDS)
    if busy is not None and busy > BUSY_WARNING:
        progress(f"Warning: the CPUs were {busy:.0%} busy before the run started; another job on this machine "
                 "will lower every figure below.")
    with tempfile.TemporaryDirectory(prefix="loyalty-bench-passes-") as folder:
        figures, node, failures = run(args, Path(folder))

    rates = {figure.builder: figure.rate for figure in figures}
    lines = ["", format_table(figures), ""] if figures else [""]
    if "python" in rates and "node" in rates and rates["node"] > 0:
        lines.append(ratio_line("python / node", rates["python"] / rates["node"], TARGET_NODE_RATIO, "×"))
    else:
        lines.append("python / node: not measured")
    if "python" in rates and rates.get("bare PKCS#7"):
        lines.append(ratio_line("python / bare PKCS#7", rates["python"] / rates["bare PKCS#7"],
                                TARGET_SIGNING_RATIO, ""))
    else:
        lines.append("python / bare PKCS#7: not measured")
    machine = machine_description(node)
    if busy is not None:
        machine.append(f"busy     {busy:.0%} of all CPUs in the second before the run")
    lines += ["", "Machine:", *(f"  {line}" for line in machine)]
    if failures:
        lines += ["", "The run is not valid:", *(f"  {failure}" for failure in failures)]
    progress("\n".join(lines))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
