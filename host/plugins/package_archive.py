"""A plugin package before it is trusted: its integrity (a sha256 given or published beside it,
an optional ed25519 signature checked against the operator's trusted keys) and its unpacking
into a staging directory with every entry checked.

The threat model: the archive is hostile. It may name ``../x`` or ``/etc/x``, carry symlinks,
hardlinks or devices that point the plugin (or a later write) outside its directory, or unpack
to far more than it weighs (a zip bomb). Every entry name is checked before anything is
written; only regular files and directories are unpacked, files created with O_EXCL|O_NOFOLLOW
and mode 0644 (no exec or set-id bits); what is decompressed is counted as it is read, so a
lying header or a bomb stops at ``[packages] max_unpacked_bytes``, never at the disk's end."""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import hmac
import io
import os
import re
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from ..errors import InvalidConfig

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
FILE_SUFFIXES = (".js", ".ts", ".mjs")
MAX_DEPTH = 32  # path components in one entry
# C0/C1 controls (NUL, newline, ESC, ...) and the bidi/zero-width marks a name can hide behind
UNSAFE_NAME = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ufeff]")
_HEX = re.compile(r"^[0-9a-fA-F]{64}\Z")


class PackagesConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``[packages]``: what ``install``/``update`` accept (host/plugins/packages.py)."""

    # Install a package with neither a sha256 nor a trusted signature (and a plugin directory).
    allow_unverified: bool = False
    # Ed25519 public keys (base64 of the 32 raw bytes) whose signatures (ARCHIVE.sig) are trusted.
    trusted_keys: list[str] = []
    require_signature: bool = False  # refuse a package no trusted key signed
    max_archive_bytes: Annotated[int, Meta(ge=1)] = 20 * 1024 * 1024   # the archive as uploaded
    max_unpacked_bytes: Annotated[int, Meta(ge=1)] = 64 * 1024 * 1024  # all its files unpacked
    max_files: Annotated[int, Meta(ge=1)] = 2000                         # entries, directories included

    def __post_init__(self) -> None:
        if not isinstance(self.trusted_keys, list):  # HostConfig's check names what it is instead
            return
        for i, key in enumerate(self.trusted_keys):
            if not isinstance(key, str):
                raise InvalidConfig(f"packages.trusted_keys[{i}]: a base64 Ed25519 public key, a string "
                                    f"(got {type(key).__name__})")
            public_key(key, f"packages.trusted_keys[{i}]")


class PackageRefused(InvalidConfig):
    """A package the host will not install; the message names the file, the rule and the
    setting or option that would allow it. ``status``: the HTTP answer."""

    def __init__(self, message: str, *, plugin: str | None = None, status: int = 400) -> None:
        super().__init__(message, plugin=plugin)
        self.status = status


@dataclass
class Package:
    """What the operator hands over: the bytes of an archive or a single module file (``name``
    says which by its suffix), or a plugin directory; the sha256 it must have and where that
    came from; its signature, when one was published."""

    name: str
    data: bytes | None = None
    directory: Path | None = None
    sha256: str | None = None
    sha256_from: str = "--sha256"
    signature: bytes | None = None

    @property
    def kind(self) -> str:
        if self.directory is not None:
            return "directory"
        lower = self.name.lower()
        if lower.endswith(ARCHIVE_SUFFIXES):
            return "zip" if lower.endswith(".zip") else "tar.gz"
        if lower.endswith(FILE_SUFFIXES):
            return "file"
        raise PackageRefused(f"{self.name}: not a package: give a .tar.gz, .tgz or .zip archive, a "
                             f"{'/'.join(FILE_SUFFIXES)} module or a plugin directory")


def public_key(text: str, where: str) -> Any:
    """An Ed25519 public key from base64 (32 raw bytes), or InvalidConfig naming ``where``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise InvalidConfig(f"{where}: not an Ed25519 public key (base64 of its 32 raw bytes)") from None


def key_id(text: str) -> str:
    """A short name of a trusted key for the audit log: the first 16 hex digits of its sha256."""
    return hashlib.sha256(base64.b64decode(text.strip())).hexdigest()[:16]


def parse_sha256(text: str, name: str, where: str) -> str:
    """The digest of a ``--sha256`` value or a sha256sum line (``HEX  FILE`` / ``HEX *FILE``);
    a line naming another file than ``name`` is refused."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    digest, _, file = line.partition(" ")
    file = file.strip().lstrip("*")
    if not _HEX.match(digest):
        raise PackageRefused(f"{where}: not a sha256 (64 hex digits, as sha256sum prints it)")
    if file and os.path.basename(file) != os.path.basename(name):
        raise PackageRefused(f"{where}: the checksum is for {file!r}, not {os.path.basename(name)!r}")
    return digest.lower()


def parse_signature(raw: bytes, where: str) -> bytes:
    """64 raw bytes, or their base64 text."""
    if len(raw) == 64:
        return raw
    try:
        sig = base64.b64decode(raw.strip(), validate=True)
    except binascii.Error:
        sig = b""
    if len(sig) != 64:
        raise PackageRefused(f"{where}: not an Ed25519 signature (64 raw bytes, or their base64)")
    return sig


@dataclass
class Verdict:
    """How a package was verified: its sha256, ``verified_by`` (sha256, signature or
    unverified) and the id of the key that signed it."""

    sha256: str | None
    verified_by: str
    signer: str | None = None


def verify(package: Package, cfg: PackagesConfig) -> Verdict:
    """Check the package's bytes against its sha256 and signature before anything is unpacked.
    A mismatch or a bad signature is refused; with neither a sha256 nor a trusted signature only
    ``[packages] allow_unverified`` lets it in."""
    kind = package.kind  # (refuses what is no package at all before anything else)
    data = package.data
    if data is not None and len(data) > cfg.max_archive_bytes:
        raise PackageRefused(f"{package.name}: {len(data)} bytes, over [packages] max_archive_bytes "
                             f"({cfg.max_archive_bytes})", status=413)
    actual = hashlib.sha256(data).hexdigest() if data is not None else None
    if package.sha256 is not None and actual is not None and not hmac.compare_digest(actual, package.sha256):
        raise PackageRefused(f"{package.name}: sha256 mismatch: the file's is {actual}, {package.sha256_from} "
                             f"says {package.sha256}; nothing was installed")
    signer = None
    if package.signature is not None:
        signer = _check_signature(package, cfg)
    elif cfg.require_signature:
        raise PackageRefused(f"{package.name}: not signed, and [packages] require_signature = true: publish "
                             f"{package.name}.sig signed by a key in [packages] trusted_keys")
    if signer not in (None, "unchecked"):
        return Verdict(actual, "signature", signer)
    if package.sha256 is not None and actual is not None:
        return Verdict(actual, "sha256", signer)
    if cfg.allow_unverified:
        return Verdict(actual, "unverified", signer)
    what = ("a plugin directory has no checksum: pack it (tar czf) and publish its .sha256"
            if kind == "directory" else
            f"no sha256 for {package.name}: pass --sha256 HEX (or the sha256 field) or publish "
            f"{os.path.basename(package.name)}.sha256 beside it")
    raise PackageRefused(f"{what}; or set [packages] allow_unverified = true in host.toml to install "
                         "unverified packages")


def _check_signature(package: Package, cfg: PackagesConfig) -> str:
    """The id of the trusted key that signed the bytes; "unchecked" with no trusted keys (and no
    requirement); a signature no trusted key verifies is refused."""
    from cryptography.exceptions import InvalidSignature

    if package.data is None:
        raise PackageRefused(f"{package.name}: a signature covers an archive or a file, not a directory")
    if not cfg.trusted_keys:
        if cfg.require_signature:
            raise PackageRefused("[packages] require_signature = true but [packages] trusted_keys is empty")
        return "unchecked"
    assert package.signature is not None
    for i, key in enumerate(cfg.trusted_keys):
        try:
            public_key(key, f"packages.trusted_keys[{i}]").verify(package.signature, package.data)
        except InvalidSignature:
            continue
        return key_id(key)
    raise PackageRefused(f"{package.name}: bad signature: no key in [packages] trusted_keys verifies it; "
                         "nothing was installed", status=403)


# ------------------------------------------------------------------------ unpacking


class _Budget:
    """Counts what is unpacked against the caps; refuses past them."""

    def __init__(self, name: str, cfg: PackagesConfig) -> None:
        self.name, self.cfg = name, cfg
        self.bytes = self.files = self.streamed = 0

    def entry(self) -> None:
        self.files += 1
        if self.files > self.cfg.max_files:
            raise PackageRefused(f"{self.name}: more than {self.cfg.max_files} entries ([packages] max_files)",
                                 status=413)

    def take(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.cfg.max_unpacked_bytes:
            self._bomb()

    def stream(self, n: int) -> None:
        """Decompressed bytes of an archive stream (headers and padding too): at most twice the cap."""
        self.streamed += n
        if self.streamed > 2 * self.cfg.max_unpacked_bytes + 1024 * 1024:
            self._bomb()

    def _bomb(self) -> None:
        raise PackageRefused(f"{self.name}: unpacks to more than {self.cfg.max_unpacked_bytes} bytes "
                             "([packages] max_unpacked_bytes): refused as a possible zip bomb", status=413)


class _Counted(io.RawIOBase):
    """A decompressed stream that stops at the budget (a gzip bomb, a huge tar header)."""

    def __init__(self, inner: Any, budget: _Budget) -> None:
        self._inner, self._budget = inner, budget

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._inner.read(len(b))
        self._budget.stream(len(data))
        b[: len(data)] = data
        return len(data)


def safe_name(name: str, archive: str) -> str:
    """An entry's relative path, or PackageRefused for an absolute path, ``..``, a backslash
    or drive letter, a control or bidi character (a name that shows as another in a listing,
    a log or a terminal) or an over-deep path."""
    where = f"{archive}: entry {name[:200]!r}"
    if "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise PackageRefused(f"{where}: a backslash or drive letter is not allowed in a path")
    if UNSAFE_NAME.search(name):
        raise PackageRefused(f"{where}: a control character (NUL, newline, escape, ...) or a bidi "
                             "override is not allowed in a path")
    if name.startswith("/"):
        raise PackageRefused(f"{where}: an absolute path is not allowed")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PackageRefused(f"{where}: '..' is not allowed in a path (it would leave the plugin directory)")
    if not parts or len(parts) > MAX_DEPTH:
        raise PackageRefused(f"{where}: an empty path, or one deeper than {MAX_DEPTH}")
    return "/".join(parts)


class UnpackFailed(PackageRefused):
    """Writing what was unpacked failed (a full disk): the package is not at fault, the place
    it goes is. The message is the OS's; the installer names the directory (503)."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(exc.strerror or str(exc), status=503)
        self.errno = exc.errno


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise UnpackFailed(exc) from None


def _write(root: Path, rel: str, chunks: Any, budget: _Budget) -> None:
    target = root / rel
    _mkdir(target.parent)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise PackageRefused(f"{budget.name}: entry {rel!r} appears twice") from None
    except OSError as exc:
        raise UnpackFailed(exc) from None
    with os.fdopen(fd, "wb", buffering=0) as f:  # unbuffered: no write left for close() to fail
        for chunk in chunks:  # reading the archive raises its own errors: only the writes are ours
            budget.take(len(chunk))
            view = memoryview(chunk)
            try:
                while view:
                    view = view[f.write(view):]
            except OSError as exc:
                raise UnpackFailed(exc) from None


def _chunks(stream: Any, size: int = 64 * 1024) -> Any:
    while chunk := stream.read(size):
        yield chunk


def unpack(package: Package, into: Path, cfg: PackagesConfig) -> None:
    """Unpack the package's files into the empty directory ``into`` (checked as above)."""
    budget = _Budget(package.name, cfg)
    kind = package.kind
    if kind == "file":
        assert package.data is not None
        budget.entry()
        _write(into, safe_name(os.path.basename(package.name), package.name), [package.data], budget)
    elif kind == "directory":
        assert package.directory is not None
        _copy_directory(package.directory, into, budget)
    elif kind == "zip":
        _unzip(package, into, budget)
    else:
        _untar(package, into, budget)


def _untar(package: Package, into: Path, budget: _Budget) -> None:
    assert package.data is not None
    raw = _Counted(gzip.GzipFile(fileobj=io.BytesIO(package.data)), budget)
    try:
        with tarfile.open(fileobj=io.BufferedReader(raw), mode="r|") as tar:
            for member in tar:
                budget.entry()
                rel = safe_name(member.name, package.name)
                if member.isdir():
                    _mkdir(into / rel)
                elif member.isreg():
                    if member.size > budget.cfg.max_unpacked_bytes:
                        budget.take(member.size)
                    source = tar.extractfile(member)
                    assert source is not None
                    _write(into, rel, _chunks(source), budget)
                else:
                    what = ("a symlink" if member.issym() else "a hardlink" if member.islnk()
                            else "a device or fifo")
                    raise PackageRefused(f"{package.name}: entry {rel!r} is {what}: only regular files and "
                                         "directories are unpacked")
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise PackageRefused(f"{package.name}: not a readable .tar.gz ({type(exc).__name__}: {str(exc)[:200]})") from None


def _unzip(package: Package, into: Path, budget: _Budget) -> None:
    assert package.data is not None
    try:
        with zipfile.ZipFile(io.BytesIO(package.data)) as zf:
            infos = zf.infolist()
            for info in infos:  # every name and type first: nothing written for a bad archive
                budget.entry()
                safe_name(info.filename, package.name)
                kind = stat.S_IFMT(info.external_attr >> 16)  # 0: not said (a zip made elsewhere)
                if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                    raise PackageRefused(f"{package.name}: entry {info.filename[:200]!r} is a symlink or a "
                                         "special file: only regular files and directories are unpacked")
                if info.flag_bits & 0x1:
                    raise PackageRefused(f"{package.name}: entry {info.filename[:200]!r} is encrypted")
            if sum(i.file_size for i in infos) > budget.cfg.max_unpacked_bytes:
                budget.take(sum(i.file_size for i in infos))
            for info in infos:
                rel = safe_name(info.filename, package.name)
                if info.is_dir():
                    _mkdir(into / rel)
                    continue
                with zf.open(info) as source:
                    _write(into, rel, _chunks(source), budget)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError,
            zlib.error) as exc:
        raise PackageRefused(f"{package.name}: not a readable .zip ({type(exc).__name__}: {str(exc)[:200]})") from None


def _copy_directory(source: Path, into: Path, budget: _Budget) -> None:
    """A plugin directory given as a path: its regular files (hidden ones and vendored folders
    too: they are the plugin's), a symlink refused as in an archive."""
    for parent, dirs, files in os.walk(source):
        for name in sorted(dirs + files):
            path = Path(parent) / name
            rel = path.relative_to(source).as_posix()
            budget.entry()
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                _mkdir(into / rel)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    _write(into, rel, _chunks(f), budget)
            else:
                raise PackageRefused(f"{source}: {rel!r} is a symlink or a special file: only regular files "
                                     "and directories are installed")


__all__ = ["ARCHIVE_SUFFIXES", "Package", "PackageRefused", "PackagesConfig", "UnpackFailed", "Verdict",
           "parse_sha256", "parse_signature", "unpack", "verify"]
