"""Reading a job's zip of pictures that is already on disk, one picture at a time, refusing what is hostile.

An archive is a list of claims (names, sizes, flags) that an attacker writes, so nothing is trusted:
names are normalised and checked before use (they are never extracted to disk anyway), declared sizes
are checked against the limits before anything is decompressed, and every read goes through a bounded
decompressor that stops one byte past the declared size, so a header that lies about its size (a zip
bomb) costs at most the limit. A bad archive raises `ArchiveError` (the job is refused with a message
saying what to fix); a bad entry becomes a `Skipped` with its reason and the job goes on. Only the first
bytes of each entry are looked at here (content sniffing, not extensions); the picture checks that
`/predict` makes (pixels, decode, EXIF) happen later, per picture.
"""

from __future__ import annotations

import bz2
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

MIB = 1024 * 1024
GIB = 1024 * MIB
SNIFF_BYTES = 512
CHUNK = 256 * 1024
FORMATS = "JPEG, PNG, WebP, BMP, GIF or TIFF"
# Names that operating systems add to folders they zip; they are dropped without a word.
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})
MACOS_FOLDER = "__MACOSX"

# Skip reasons (stable strings: they reach users in the job's `skipped` list, and tests compare them).
PARENT_PATH = "its path goes up out of the archive ('..'): zip the pictures without parent folders"
ABSOLUTE_PATH = "its path is absolute: zip the pictures with relative paths"
CONTROL_CHARACTERS = "its name has control characters: rename it"
SYMLINK = "a symbolic link, not a file: zip the picture itself"
SPECIAL_FILE = "not a regular file"
ENCRYPTED = "encrypted: zip the picture without a password"
DUPLICATE = "same path as an earlier entry: only the first one is used"
NESTED_ARCHIVE = "an archive inside the archive: unpack it and zip its pictures instead"
NOT_A_PICTURE = f"not a picture (its content is not {FORMATS})"
EMPTY = "an empty file"
LARGER_THAN_DECLARED = "decompresses to more than the size its header declares (a zip bomb?)"
CORRUPT = "corrupt data (CRC mismatch or truncated): re-create the archive"
UNSUPPORTED_METHOD = "compressed with a method other than deflate, bzip2 or none: re-zip it with deflate"

_STORED, _DEFLATED, _BZIP2 = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2
_METHODS = frozenset({_STORED, _DEFLATED, _BZIP2})
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature ... file name length, extra field length
_END_RECORD = struct.Struct("<4s4H2LH")  # end of central directory
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_END_RECORD = struct.Struct("<4sQ2H2L4Q")
_ARCHIVE_MAGIC: tuple[bytes, ...] = (
    b"PK\x03\x04",  # zip (also docx, jar, ...)
    b"PK\x05\x06",  # empty zip
    b"\x1f\x8b",  # gzip
    b"BZh",  # bzip2
    b"\xfd7zXZ\x00",  # xz
    b"7z\xbc\xaf\x27\x1c",  # 7-Zip
    b"Rar!\x1a\x07",  # RAR
    b"\x28\xb5\x2f\xfd",  # zstd
)


@dataclass(frozen=True)
class ArchiveLimits:
    """What one job's archive may hold. The per-entry limit plays the part of /predict's upload limit."""

    max_total_bytes: int = 4 * GIB  # declared uncompressed size of all its pictures together
    max_entry_bytes: int = 16 * MIB  # one picture, uncompressed
    max_pictures: int = 10_000
    # Deflate cannot exceed 1032:1, so a higher declared ratio is a lying header or a bzip2 bomb;
    # a flat-colour BMP really does reach about 1000:1.
    max_ratio: float = 1100.0

    def __post_init__(self) -> None:
        if min(self.max_total_bytes, self.max_entry_bytes, self.max_pictures) < 1 or self.max_ratio < 1:
            raise ValueError(f"archive limits must be positive: {self}")


class ArchiveError(Exception):
    """The archive as a whole cannot be used; the message says what to fix. `status` is the HTTP status."""

    status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ArchiveTooLarge(ArchiveError):
    """Over a limit of the whole archive (picture count, total size): split it."""

    status = 413


class EntryError(Exception):
    """One entry cannot be used; `reason` is what goes into the job's `skipped` list."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Skipped:
    """An entry left out of the job, and why (the job JSON's `skipped` item)."""

    file: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"file": self.file, "reason": self.reason}


@dataclass(frozen=True)
class Picture:
    """One picture entry: `path` is its normalised path in the zip (the `file` of its results)."""

    path: str
    format: str  # as sniffed: JPEG, PNG, WEBP, BMP, GIF or TIFF (Pillow's names)
    size: int  # declared uncompressed size (bytes)
    compress_size: int
    method: int
    crc: int
    header_offset: int

    def to_json(self) -> dict[str, str | int]:
        return {field: getattr(self, field) for field in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Picture:
        return cls(**{field: data[field] for field in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Archive:
    """The pictures of an archive (sorted by path) and the entries skipped while listing them.

    It holds no open file: each `read` opens the zip on its own, so threads and processes can read
    different pictures of the same archive at once.
    """

    path: Path
    limits: ArchiveLimits
    pictures: tuple[Picture, ...]
    skipped: tuple[Skipped, ...]

    def __len__(self) -> int:
        return len(self.pictures)

    @cached_property
    def _by_path(self) -> dict[str, Picture]:
        return {picture.path: picture for picture in self.pictures}

    def picture(self, path: str) -> Picture:
        """The picture at `path` (as listed), for a worker that was handed only the path."""
        return self._by_path[path]

    def read(self, picture: Picture | str) -> bytes:
        """The picture's bytes, decompressed with a bound; `EntryError` if the entry lies or is corrupt."""
        if isinstance(picture, str):
            picture = self.picture(picture)
        with open(self.path, "rb") as fp:
            return b"".join(_decompress(fp, picture, self.limits.max_entry_bytes))

    def iter_pictures(self) -> Iterator[tuple[Picture, bytes | Skipped]]:
        """Each picture with its bytes, or with the `Skipped` that says why it could not be read."""
        for picture in self.pictures:
            try:
                yield picture, self.read(picture)
            except EntryError as error:
                yield picture, Skipped(picture.path, error.reason)

    def to_json(self) -> dict[str, Any]:
        """The listing for the job's state: workers rebuild it with `from_json`, without sniffing again."""
        return {
            "pictures": [picture.to_json() for picture in self.pictures],
            "skipped": [skipped.to_json() for skipped in self.skipped],
        }

    @classmethod
    def from_json(
        cls, path: str | Path, data: dict[str, Any], limits: ArchiveLimits | None = None
    ) -> Archive:
        """The archive listed by `to_json` (trusted: it is the job's own state, not the upload)."""
        return cls(
            Path(path),
            limits or ArchiveLimits(),
            tuple(Picture.from_json(p) for p in data["pictures"]),
            tuple(Skipped(s["file"], s["reason"]) for s in data["skipped"]),
        )


def open_archive(path: str | Path, limits: ArchiveLimits | None = None) -> Archive:
    """List the pictures of the zip at `path`: every check that needs no full decompression happens here."""
    path = Path(path)
    limits = limits or ArchiveLimits()
    # Refuse an absurd entry count before zipfile builds a ZipInfo per entry (hundreds of bytes each).
    declared = _declared_entry_count(path)
    max_entries = 3 * limits.max_pictures + 1000  # macOS adds a __MACOSX twin per file, plus folders
    if declared is not None and declared > max_entries:
        raise ArchiveTooLarge(
            f"the archive has {declared} entries, more than {max_entries} for at most "
            f"{limits.max_pictures} pictures: split it into smaller archives"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, struct.error) as error:
        raise ArchiveError(
            f"not a readable zip file ({error}): upload a .zip of pictures, re-created if it was cut short"
        ) from None

    skipped: list[Skipped] = []
    seen: set[str] = set()
    candidates: list[tuple[str, zipfile.ZipInfo]] = []
    for info in infos:
        name = info.filename
        normalised, reason = _normalise(name)
        if normalised is None:
            if reason:
                skipped.append(Skipped(_printable(name), reason))
            continue
        reason = _entry_problem(info, limits)
        if reason is None and normalised in seen:
            reason = DUPLICATE
        seen.add(normalised)
        if reason:
            skipped.append(Skipped(normalised, reason))
        else:
            candidates.append((normalised, info))

    pictures: list[Picture] = []
    with open(path, "rb") as fp:
        for normalised, info in candidates:
            picture = Picture(
                normalised,
                "",
                info.file_size,
                info.compress_size,
                info.compress_type,
                info.CRC,
                info.header_offset,
            )
            try:
                head = b"".join(_decompress(fp, picture, limits.max_entry_bytes, stop_after=SNIFF_BYTES))
            except EntryError as error:
                skipped.append(Skipped(normalised, error.reason))
                continue
            fmt = sniff_picture(head)
            if fmt is None:
                reason = EMPTY if not head else NESTED_ARCHIVE if _is_archive(head) else NOT_A_PICTURE
                skipped.append(Skipped(normalised, reason))
                continue
            pictures.append(replace(picture, format=fmt))

    if not pictures:
        detail = (
            f" ({len(skipped)} entries skipped, e.g. {skipped[0].file}: {skipped[0].reason})"
            if skipped
            else ""
        )
        raise ArchiveError(f"the archive holds no pictures{detail}: zip {FORMATS} files")
    if len(pictures) > limits.max_pictures:
        raise ArchiveTooLarge(
            f"the archive holds {len(pictures)} pictures, more than the limit of {limits.max_pictures}: "
            "split it into smaller archives"
        )
    total = sum(p.size for p in pictures)
    if total > limits.max_total_bytes:
        raise ArchiveTooLarge(
            f"the archive's pictures add up to {total} bytes uncompressed, more than the limit of "
            f"{limits.max_total_bytes}: split it into smaller archives"
        )
    pictures.sort(key=lambda p: p.path)
    skipped.sort(key=lambda s: s.file)
    return Archive(path, limits, tuple(pictures), tuple(skipped))


def sniff_picture(head: bytes) -> str | None:
    """The picture format from the first bytes (Pillow's name), or None: extensions are not trusted."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    # "BM" alone is too weak: also ask for a known DIB header size (core, info, v2-v5).
    if (
        head[:2] == b"BM"
        and len(head) >= 18
        and struct.unpack_from("<L", head, 14)[0] in (12, 40, 52, 56, 64, 108, 124)
    ):
        return "BMP"
    return None


def _is_archive(head: bytes) -> bool:
    return head.startswith(_ARCHIVE_MAGIC) or head[257:262] == b"ustar"


def _normalise(name: str) -> tuple[str | None, str | None]:
    """(normalised path, None), or (None, reason) for a refused name, or (None, None) for one ignored quietly.

    Backslashes count as separators (zips made on Windows), "." and empty parts go, Unicode is NFC
    (macOS stores decomposed names), so two spellings of one path are seen as duplicates.
    """
    text = unicodedata.normalize("NFC", name.replace("\\", "/"))
    if any(unicodedata.category(char) == "Cc" for char in text):
        return None, CONTROL_CHARACTERS  # they would break the CSV, XML and logs the path goes into
    if text.startswith("/") or (len(text) > 1 and text[1] == ":" and text[0].isalpha()):
        return None, ABSOLUTE_PATH
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        return None, PARENT_PATH
    if not parts or text.endswith("/"):
        return None, None  # a folder
    if parts[0] == MACOS_FOLDER or any(part.startswith(".") for part in parts):
        return None, None
    if parts[-1].lower() in SYSTEM_FILES:
        return None, None
    return str(PurePosixPath(*parts)), None


def _printable(name: str) -> str:
    return "".join("\ufffd" if unicodedata.category(char) == "Cc" else char for char in name)


def _entry_problem(info: zipfile.ZipInfo, limits: ArchiveLimits) -> str | None:
    """Why the central directory alone already rules this entry out, or None."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return SYMLINK
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return SPECIAL_FILE
    if info.flag_bits & 0x41:  # traditional or strong encryption
        return ENCRYPTED
    if info.compress_type not in _METHODS:
        return UNSUPPORTED_METHOD
    if info.file_size > limits.max_entry_bytes:
        limit = limits.max_entry_bytes
        return f"{info.file_size} bytes uncompressed, more than the per-picture limit of {limit}"
    if info.file_size > limits.max_ratio * max(info.compress_size, 1):
        return f"compressed more than {limits.max_ratio:g}:1 (a zip bomb?)"
    return None


def _decompress(fp, picture: Picture, limit: int, stop_after: int | None = None) -> Iterator[bytes]:
    """The entry's bytes in chunks, never more than its declared size (or `limit`) plus one byte.

    zipfile would cut the output at the declared size and then report a CRC error; reading the raw
    stream here tells "decompresses to more than declared" apart from plain corruption.
    """
    fp.seek(picture.header_offset)
    header = fp.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise EntryError(CORRUPT)
    fields = _LOCAL_HEADER.unpack(header)
    fp.seek(fields[-2] + fields[-1], 1)  # file name and extra field
    allowed = min(picture.size, limit)
    left = picture.compress_size  # compressed bytes still to read
    produced = 0
    crc = 0
    if picture.method == _STORED:
        decompressor = None
    elif picture.method == _DEFLATED:
        decompressor = zlib.decompressobj(-15)
    else:
        decompressor = bz2.BZ2Decompressor()
    pending = b""
    while True:
        # One byte past what is allowed tells a lie; a sniff wants only the first bytes.
        budget = allowed + 1 - produced if stop_after is None else min(allowed + 1, stop_after) - produced
        if decompressor is None:
            chunk = fp.read(min(CHUNK, left, budget))
            left -= len(chunk)
            out = chunk
            if not chunk and left:
                raise EntryError(CORRUPT)  # the file ends inside the entry
            finished = left == 0
        else:
            if not pending and left:
                pending = fp.read(min(CHUNK, left))
                left -= len(pending)
                if not pending:
                    raise EntryError(CORRUPT)
            try:
                if isinstance(decompressor, bz2.BZ2Decompressor):
                    out = decompressor.decompress(pending, budget)
                    pending = b""
                    finished = decompressor.eof
                    stalled = not out and decompressor.needs_input and not left
                else:
                    out = decompressor.decompress(pending, budget)
                    pending = decompressor.unconsumed_tail
                    finished = decompressor.eof
                    stalled = not out and not pending and not left
            except (zlib.error, OSError, EOFError, ValueError):
                raise EntryError(CORRUPT) from None
            if stalled and not finished:
                raise EntryError(CORRUPT)  # the compressed data ends before the stream does
        produced += len(out)
        if produced > allowed:
            raise EntryError(LARGER_THAN_DECLARED if produced > picture.size else _over_limit(limit))
        crc = zlib.crc32(out, crc)
        if out:
            yield out
        if stop_after is not None and produced >= stop_after:
            return
        if finished:
            break
    if produced != picture.size or crc != picture.crc:
        raise EntryError(CORRUPT)


def _over_limit(limit: int) -> str:
    return f"more than the per-picture limit of {limit} bytes uncompressed"


def _declared_entry_count(path: Path) -> int | None:
    """The entry count the end-of-central-directory record declares (zip64 too), or None if unreadable."""
    try:
        with open(path, "rb") as fp:
            fp.seek(0, 2)
            size = fp.tell()
            tail_start = max(0, size - (_END_RECORD.size + 65535))
            fp.seek(tail_start)
            tail = fp.read()
            at = tail.rfind(b"PK\x05\x06")
            if at < 0 or at + _END_RECORD.size > len(tail):
                return None
            count = _END_RECORD.unpack_from(tail, at)[4]
            locator_at = at - _ZIP64_LOCATOR.size
            if count == 0xFFFF and locator_at >= 0 and tail[locator_at : locator_at + 4] == b"PK\x06\x07":
                offset = _ZIP64_LOCATOR.unpack_from(tail, locator_at)[2]
                fp.seek(offset)
                record = fp.read(_ZIP64_END_RECORD.size)
                if len(record) == _ZIP64_END_RECORD.size and record[:4] == b"PK\x06\x06":
                    count = _ZIP64_END_RECORD.unpack(record)[7]
            return count
    except (OSError, struct.error):
        return None
