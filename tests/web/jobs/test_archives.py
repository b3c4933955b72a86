"""Job archives: real zips built with zipfile, hostile ones patched byte by byte as an attacker would."""

from __future__ import annotations

import io
import json
import stat
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from web.jobs import archives
from web.jobs.archives import ArchiveError, ArchiveLimits, ArchiveTooLarge, EntryError, Skipped, open_archive

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")


def picture(fmt: str = "JPEG", size: tuple[int, int] = (32, 24), seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def make_zip(
    path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]], method: int = zipfile.ZIP_DEFLATED
) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about duplicate names: that is the test
        with zipfile.ZipFile(path, "w", compression=method) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return path


def patch_entry(path: Path, name: str, **fields: int) -> None:
    """Overwrite header fields of one entry in both its local header and its central directory record."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        offset = next(i.header_offset for i in zf.infolist() if i.filename == name)
    local = {"flag": (6, "<H"), "crc": (14, "<L"), "compress_size": (18, "<L"), "file_size": (22, "<L")}
    central = {"flag": (8, "<H"), "crc": (16, "<L"), "compress_size": (20, "<L"), "file_size": (24, "<L")}
    encoded = name.encode()
    at = data.find(b"PK\x01\x02")
    while data[at + 46 : at + 46 + len(encoded)] != encoded:
        at = data.find(b"PK\x01\x02", at + 1)
    for field, value in fields.items():
        struct.pack_into(local[field][1], data, offset + local[field][0], value)
        struct.pack_into(central[field][1], data, at + central[field][0], value)
    path.write_bytes(bytes(data))


def skipped(archive: archives.Archive) -> dict[str, str]:
    return {s.file: s.reason for s in archive.skipped}


def test_every_format_at_any_depth_sorted_and_read_back_intact(tmp_path: Path) -> None:
    entries = [(f"deep/{i}/down/p{i}.{fmt.lower()}", picture(fmt, seed=i)) for i, fmt in enumerate(FORMATS)]
    entries.append(("top.jpg", picture(seed=9)))
    path = make_zip(tmp_path / "job.zip", entries[::-1])
    archive = open_archive(path)
    assert [p.path for p in archive.pictures] == sorted(name for name, _ in entries)
    assert {p.path: p.format for p in archive.pictures}["deep/2/down/p2.webp"] == "WEBP"
    assert archive.skipped == ()
    originals = dict(entries)
    for pic, data in archive.iter_pictures():
        assert data == originals[pic.path]
        Image.open(io.BytesIO(data)).verify()
    assert archive.read(archive.picture("top.jpg")) == originals["top.jpg"]


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])
def test_every_supported_compression_reads_back(tmp_path: Path, method: int) -> None:
    data = picture("BMP", (300, 200))
    archive = open_archive(make_zip(tmp_path / "job.zip", [("a.bmp", data)], method))
    assert archive.read(archive.pictures[0]) == data


def test_hostile_names_and_entry_kinds_are_skipped_with_their_reason(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("link.jpg")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    fifo = zipfile.ZipInfo("fifo.jpg")
    fifo.create_system = 3
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("x.jpg", picture())
    good = picture()
    path = make_zip(
        tmp_path / "job.zip",
        [
            ("../evil.jpg", good),
            ("a/../../evil2.jpg", good),
            ("/etc/absolute.jpg", good),
            ("C:/windows/drive.jpg", good),
            (link, b"/etc/passwd"),
            (fifo, good),
            ("inner.zip", inner.getvalue()),
            ("photo-that-is-a-zip.jpg", inner.getvalue()),
            ("notes.jpg", b"hello, I am text"),
            ("empty.png", b""),
            ("dup.jpg", good),
            ("dup.jpg", picture(seed=3)),
            ("x/./same.jpg", good),
            ("x/same.jpg", good),
            ("caf\u00e9.jpg", good),
            ("cafe\u0301.jpg", good),  # the same name, decomposed as macOS writes it
            ("win\\sub\\pic.jpg", good),
            ("folder/", b""),
            ("__MACOSX/._dup.jpg", b"\x00\x05\x16\x07"),
            (".DS_Store", b"\x00\x00\x00\x01Bud1"),
            ("x/.hidden/p.jpg", good),
            ("x/Thumbs.db", b"junk"),
            ("bad\nname.jpg", good),
            ("ok.jpg", good),
        ],
    )
    archive = open_archive(path)
    assert [p.path for p in archive.pictures] == [
        "café.jpg",
        "dup.jpg",
        "ok.jpg",
        "win/sub/pic.jpg",
        "x/same.jpg",
    ]
    assert skipped(archive) == {
        "../evil.jpg": archives.PARENT_PATH,
        "a/../../evil2.jpg": archives.PARENT_PATH,
        "/etc/absolute.jpg": archives.ABSOLUTE_PATH,
        "C:/windows/drive.jpg": archives.ABSOLUTE_PATH,
        "link.jpg": archives.SYMLINK,
        "fifo.jpg": archives.SPECIAL_FILE,
        "inner.zip": archives.NESTED_ARCHIVE,
        "photo-that-is-a-zip.jpg": archives.NESTED_ARCHIVE,
        "notes.jpg": archives.NOT_A_PICTURE,
        "empty.png": archives.EMPTY,
        "dup.jpg": archives.DUPLICATE,
        "x/same.jpg": archives.DUPLICATE,
        "café.jpg": archives.DUPLICATE,
        "bad\ufffdname.jpg": archives.CONTROL_CHARACTERS,
    }
    assert archive.read(archive.picture("dup.jpg")) == good  # the first of the duplicates wins


def test_encrypted_entries_are_skipped(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "job.zip", [("secret.jpg", picture()), ("open.jpg", picture())])
    patch_entry(path, "secret.jpg", flag=0x1)
    archive = open_archive(path)
    assert skipped(archive) == {"secret.jpg": archives.ENCRYPTED}
    assert [p.path for p in archive.pictures] == ["open.jpg"]


def test_bomb_with_a_lying_header_passes_the_listing_and_is_skipped_when_read(tmp_path: Path) -> None:
    bomb = picture()[:600] + bytes(
        20 * 1024 * 1024
    )  # JPEG magic, then 20 MiB of zeros (about 20 KiB deflated)
    path = make_zip(tmp_path / "job.zip", [("bomb.jpg", bomb), ("ok.jpg", picture())])
    patch_entry(path, "bomb.jpg", file_size=4096)
    archive = open_archive(path)
    assert [p.path for p in archive.pictures] == ["bomb.jpg", "ok.jpg"]  # the header looks like a small JPEG
    with pytest.raises(EntryError) as caught:
        archive.read(archive.picture("bomb.jpg"))
    assert caught.value.reason == archives.LARGER_THAN_DECLARED
    produced = []
    with pytest.raises(EntryError), open(path, "rb") as fp:
        for chunk in archives._decompress(fp, archive.picture("bomb.jpg"), archive.limits.max_entry_bytes):
            produced.append(len(chunk))
    assert sum(produced) <= 4096  # what was handed out never passed the declared size
    results = dict(archive.iter_pictures())
    assert results[archive.picture("bomb.jpg")] == Skipped("bomb.jpg", archives.LARGER_THAN_DECLARED)
    assert isinstance(results[archive.picture("ok.jpg")], bytes)


def test_declared_size_and_ratio_limits_skip_before_decompressing(tmp_path: Path) -> None:
    big = picture("BMP", (200, 200))  # 120 KiB uncompressed
    flat = b"BM" + bytes(12) + struct.pack("<L", 40) + bytes(100_000)  # a BMP header, then zeros
    path = make_zip(tmp_path / "job.zip", [("big.bmp", big), ("flat.bmp", flat), ("ok.jpg", picture())])
    archive = open_archive(path, ArchiveLimits(max_entry_bytes=110_000, max_ratio=50))
    assert skipped(archive) == {
        "big.bmp": f"{len(big)} bytes uncompressed, more than the per-picture limit of 110000",
        "flat.bmp": "compressed more than 50:1 (a zip bomb?)",
    }


def test_actual_size_over_the_per_picture_limit_is_caught_while_reading(tmp_path: Path) -> None:
    data = picture("BMP", (100, 100))
    path = make_zip(tmp_path / "job.zip", [("a.bmp", data), ("b.jpg", picture())])
    archive = open_archive(path, ArchiveLimits(max_entry_bytes=len(data)))
    assert archive.read(archive.picture("a.bmp")) == data  # exactly at the limit is fine
    shrunk = archives.Archive(archive.path, ArchiveLimits(max_entry_bytes=1000), archive.pictures, ())
    with pytest.raises(EntryError) as caught:
        shrunk.read(shrunk.picture("a.bmp"))
    assert caught.value.reason == "more than the per-picture limit of 1000 bytes uncompressed"


def test_corrupt_data_is_skipped_as_corrupt(tmp_path: Path) -> None:
    data = picture("BMP", (50, 50))
    path = make_zip(tmp_path / "job.zip", [("a.bmp", data), ("b.jpg", picture())], zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())
    raw[raw.find(data) + 1000] ^= 0xFF  # one flipped byte in the middle of the stored picture
    path.write_bytes(bytes(raw))
    archive = open_archive(path)
    with pytest.raises(EntryError) as caught:
        archive.read(archive.picture("a.bmp"))
    assert caught.value.reason == archives.CORRUPT


@pytest.mark.parametrize(
    "content",
    [b"this is not a zip at all, just text" * 10, b""],
    ids=["text", "empty"],
)
def test_not_a_zip_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "job.zip"
    path.write_bytes(content)
    with pytest.raises(ArchiveError, match="not a readable zip file") as caught:
        open_archive(path)
    assert caught.value.status == 400


def test_truncated_archive_is_refused(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "job.zip", [(f"{i}.jpg", picture(seed=i)) for i in range(5)])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ArchiveError, match="re-created if it was cut short"):
        open_archive(path)


def test_archive_without_pictures_is_refused_with_the_first_reason(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "job.zip", [("a.txt", b"text"), ("__MACOSX/._a.txt", b"junk")])
    with pytest.raises(ArchiveError) as caught:
        open_archive(path)
    assert caught.value.message == (
        f"the archive holds no pictures (1 entries skipped, e.g. a.txt: {archives.NOT_A_PICTURE}): "
        "zip JPEG, PNG, WebP, BMP, GIF or TIFF files"
    )


def test_too_many_pictures_and_too_many_bytes_are_refused(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "job.zip", [(f"{i}.png", picture("PNG", seed=i)) for i in range(4)])
    assert len(open_archive(path, ArchiveLimits(max_pictures=4))) == 4
    with pytest.raises(
        ArchiveTooLarge, match="holds 4 pictures, more than the limit of 3: split it"
    ) as caught:
        open_archive(path, ArchiveLimits(max_pictures=3))
    assert caught.value.status == 413
    total = sum(p.size for p in open_archive(path).pictures)
    with pytest.raises(ArchiveTooLarge, match=f"add up to {total} bytes uncompressed, more than the limit"):
        open_archive(path, ArchiveLimits(max_total_bytes=total - 1))


def test_absurd_entry_count_is_refused_from_the_end_record(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "job.zip", [(f"{i}.txt", b"") for i in range(1004)], zipfile.ZIP_STORED)
    with pytest.raises(ArchiveTooLarge, match="has 1004 entries, more than 1003 for at most 1 pictures"):
        open_archive(path, ArchiveLimits(max_pictures=1))


def test_entry_count_past_65535_is_read_from_the_zip64_end_record(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "job.zip", [(f"{i:x}", b"") for i in range(0x10000 + 5)], zipfile.ZIP_STORED)
    assert path.read_bytes().rfind(b"PK\x06\x06") > 0  # zipfile wrote a zip64 end record
    with pytest.raises(
        ArchiveTooLarge, match="has 65541 entries, more than 31000 for at most 10000 pictures"
    ):
        open_archive(path)


def test_a_listing_kept_as_json_reads_the_same_pictures(tmp_path: Path) -> None:
    entries = [(f"{i}.png", picture("PNG", seed=i)) for i in range(3)] + [("n.jpg", b"text")]
    archive = open_archive(make_zip(tmp_path / "job.zip", entries))
    kept = json.loads(json.dumps(archive.to_json()))
    again = archives.Archive.from_json(archive.path, kept, archive.limits)
    assert again == archive
    assert again.read("1.png") == dict(entries)["1.png"]
    assert kept["skipped"] == [{"file": "n.jpg", "reason": archives.NOT_A_PICTURE}]
