"""A package before it is trusted (host/plugins/package_archive.py): its sha256 and signature
checked before anything is unpacked, and every hostile entry (``..``, absolute paths, links,
devices, bombs, too many files) refused with nothing written outside the staging directory."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest
from support.packages import new_key, plugin_tar, sha256, tar_gz, zip_of

from host.plugins.package_archive import (
    Package,
    PackageRefused,
    PackagesConfig,
    parse_sha256,
    parse_signature,
    unpack,
    verify,
)

pytestmark = pytest.mark.timeout(30)
DATA = plugin_tar("hello", "1.0.0")


def test_a_matching_sha256_verifies_and_a_tampered_archive_is_refused():
    assert verify(Package("hello.tar.gz", DATA, sha256=sha256(DATA)), PackagesConfig()).verified_by == "sha256"
    tampered = DATA[:-1] + bytes([DATA[-1] ^ 1])
    with pytest.raises(PackageRefused, match="sha256 mismatch"):
        verify(Package("hello.tar.gz", tampered, sha256=sha256(DATA)), PackagesConfig())


def test_no_checksum_is_refused_naming_the_setting_that_allows_it():
    with pytest.raises(PackageRefused, match=r"\[packages\] allow_unverified = true"):
        verify(Package("hello.tar.gz", DATA), PackagesConfig())
    assert verify(Package("hello.tar.gz", DATA), PackagesConfig(allow_unverified=True)).verified_by == "unverified"


def test_a_trusted_signature_verifies_and_a_bad_one_is_refused():
    key, public = new_key()
    other, _ = new_key()
    cfg = PackagesConfig(trusted_keys=[public], require_signature=True)
    good = verify(Package("hello.tar.gz", DATA, signature=key.sign(DATA)), cfg)
    assert good.verified_by == "signature" and good.signer
    with pytest.raises(PackageRefused, match="bad signature") as refused:
        verify(Package("hello.tar.gz", DATA, sha256=sha256(DATA), signature=other.sign(DATA)), cfg)
    assert refused.value.status == 403
    with pytest.raises(PackageRefused, match="require_signature"):
        verify(Package("hello.tar.gz", DATA, sha256=sha256(DATA)), cfg)


def test_published_checksums_and_signatures_are_parsed_strictly():
    digest = sha256(DATA)
    assert parse_sha256(f"{digest}  hello.tar.gz\n", "hello.tar.gz", "x") == digest
    assert parse_sha256(f"{digest.upper()} *hello.tar.gz", "hello.tar.gz", "x") == digest
    with pytest.raises(PackageRefused, match=r"not 'hello\.tar\.gz'"):
        parse_sha256(f"{digest}  other.tar.gz", "hello.tar.gz", "x")
    with pytest.raises(PackageRefused, match="64 hex digits"):
        parse_sha256("abc", "hello.tar.gz", "x")
    with pytest.raises(PackageRefused, match="Ed25519 signature"):
        parse_signature(b"not a signature", "hello.tar.gz.sig")


@pytest.mark.parametrize(("archive", "why"), [
    (tar_gz({"../evil.js": "x"}), "'..' is not allowed"),
    (tar_gz({"hello/../../evil.js": "x"}), "'..' is not allowed"),
    (tar_gz({"/etc/evil.js": "x"}), "absolute path"),
    (tar_gz({"hello/mod.js": "x"}, links={"hello/key": "/etc/passwd"}), "is a symlink"),
    (tar_gz({"hello/mod.js": "x"}, hardlinks={"hello/key": "/etc/passwd"}), "is a hardlink"),
    (tar_gz({"hello/mod.js": "x"}, fifo="hello/pipe"), "device or fifo"),
    (tar_gz({"hello\\..\\evil.js": "x"}), "backslash"),
    (tar_gz({"hello/mod.js\n[plugin:other] approved": "x"}), "control character"),
    (tar_gz({"hello/\x1b[2Jmod.js": "x"}), "control character"),
    (tar_gz({"hello/mod\u202esj.txt": "x"}), "bidi override"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "fifo", "backslash", "newline", "escape",
        "bidi"])
def test_hostile_tar_entries_are_refused_and_nothing_leaves_the_stage(tmp_path, archive, why):
    stage = tmp_path / "stage" / "unpacked"
    stage.mkdir(parents=True)
    with pytest.raises(PackageRefused, match=why):
        unpack(Package("bad.tar.gz", archive), stage, PackagesConfig())
    assert not (tmp_path / "evil.js").exists() and not (tmp_path / "stage" / "evil.js").exists()
    assert not any(p.is_symlink() for p in stage.rglob("*"))


@pytest.mark.parametrize(("archive", "why"), [
    (zip_of({"../evil.js": "x"}), "'..' is not allowed"),
    (zip_of({"/abs.js": "x"}), "absolute path"),
    (zip_of({"hello/a\rb.js": "x"}), "control character"),
    (zip_of({"hello/mod.js": "x"}, symlink=("hello/key", "/etc/passwd")), "symlink"),
], ids=["dotdot", "absolute", "carriage-return", "symlink"])
def test_hostile_zip_entries_are_refused_before_anything_is_written(tmp_path, archive, why):
    with pytest.raises(PackageRefused, match=why):
        unpack(Package("bad.zip", archive), tmp_path, PackagesConfig())
    assert list(tmp_path.iterdir()) == []


def test_a_gzip_bomb_stops_at_the_unpacked_cap(tmp_path):
    # 64 MiB of zeros in one file weighs about 64 KiB compressed
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("hello/zeros.bin")
        info.size = 64 * 1024 * 1024
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    bomb = buf.getvalue()
    assert len(bomb) < 200_000
    with pytest.raises(PackageRefused, match="zip bomb") as refused:
        unpack(Package("bomb.tar.gz", bomb), tmp_path, PackagesConfig(max_unpacked_bytes=1024 * 1024))
    assert refused.value.status == 413
    assert sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) <= 1024 * 1024
    # a gzip that is no tar at all is refused, whatever it unpacks to
    stream = gzip.compress(b"A" * 8 * 1024 * 1024)
    with pytest.raises(PackageRefused, match="not a readable"):
        unpack(Package("z.tar.gz", stream), tmp_path / "x", PackagesConfig(max_unpacked_bytes=1024 * 1024))


def test_a_zip_bomb_and_oversize_archives_and_file_counts_are_refused(tmp_path):
    bomb = zip_of({"hello/zeros.bin": bytes(4 * 1024 * 1024)})
    with pytest.raises(PackageRefused, match="zip bomb"):
        unpack(Package("bomb.zip", bomb), tmp_path, PackagesConfig(max_unpacked_bytes=1024 * 1024))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PackageRefused, match="max_archive_bytes") as refused:
        verify(Package("big.tar.gz", DATA, sha256=sha256(DATA)), PackagesConfig(max_archive_bytes=100))
    assert refused.value.status == 413
    many = tar_gz({f"hello/f{i}.js": "x" for i in range(20)})
    with pytest.raises(PackageRefused, match="max_files"):
        unpack(Package("many.tar.gz", many), tmp_path / "m", PackagesConfig(max_files=10))


def test_a_good_archive_unpacks_plain_files_without_exec_bits(tmp_path):
    archive = tar_gz({"hello/mod.js": "export const x = 1;", "hello/lib/util.js": "x"})
    unpack(Package("hello.tar.gz", archive), tmp_path, PackagesConfig())
    assert (tmp_path / "hello" / "mod.js").read_text() == "export const x = 1;"
    assert (tmp_path / "hello" / "lib" / "util.js").stat().st_mode & 0o7777 == 0o644
