"""A minimal zip writer for pass packages, fast because an image's zip entry is made once, not once per pass.

zipfile would re-CRC and re-frame every PNG for every pass; here an entry (local header + data) is bytes made
once, and an archive is a join of byte strings plus the central directory. Every file is stored, not deflated:
the PNGs are compressed already, and deflating a 2 KB pass.json costs more time (zlib's window set-up) than the
bytes it saves. Entries carry a fixed date (1 Jan 2001), so a package's bytes depend only on its files.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

_DOS_TIME, _DOS_DATE = 0, (2001 - 1980) << 9 | 1 << 5 | 1
_STORED = 0
_UTF8_NAMES = 0x800
_VERSION = 20  # 2.0, what unzip expects of a plain archive (no zip64: a pass is far below 4 GiB)
_REGULAR_FILE = 0o100644 << 16  # external attributes: unzip on Unix makes a rw-r--r-- file


@dataclass(frozen=True)
class ZipEntry:
    """One stored file, framed: its local header and data, and what the central directory repeats."""

    name: bytes
    local: bytes
    crc32: int
    size: int


def zip_entry(name: str, data: bytes, crc32: int | None = None) -> ZipEntry:
    """Frame `data` as the stored file `name`; pass `crc32` when it is known already."""
    encoded = name.encode("utf-8")
    crc = zlib.crc32(data) if crc32 is None else crc32
    header = struct.pack("<IHHHHHIIIHH", 0x04034B50, _VERSION, _UTF8_NAMES, _STORED, _DOS_TIME, _DOS_DATE, crc,
                         len(data), len(data), len(encoded), 0)
    return ZipEntry(encoded, header + encoded + data, crc, len(data))


@lru_cache(maxsize=1024)
def cached_zip_entry(name: str, data: bytes, crc32: int) -> ZipEntry:
    """`zip_entry`, kept: for files that recur in every package, such as a program's PNGs."""
    return zip_entry(name, data, crc32)


def write_zip(entries: list[ZipEntry]) -> bytes:
    """The zip archive holding `entries` in order."""
    local_parts: list[bytes] = []
    directory: list[bytes] = []
    offset = 0
    for entry in entries:
        directory.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, _VERSION, _VERSION, _UTF8_NAMES, _STORED,
                                     _DOS_TIME, _DOS_DATE, entry.crc32, entry.size, entry.size, len(entry.name),
                                     0, 0, 0, 0, _REGULAR_FILE, offset) + entry.name)
        local_parts.append(entry.local)
        offset += len(entry.local)
    central = b"".join(directory)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), offset, 0)
    return b"".join(local_parts) + central + end
