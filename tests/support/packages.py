"""Plugin packages built by tests: .tar.gz and .zip archives (hostile ones too), their published
sha256 and ed25519 signatures."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def plugin_source(pid: str, version: str, body: str = "", *, net: list[str] | None = None,
                  extra: str = "") -> str:
    perms = f", permissions: {{ net: {net!r} }}" if net else ""
    return (f'export const metadata = {{ id: "{pid}", name: "{pid}", version: "{version}", apiVersion: "1.0"'
            f"{perms}{extra} }};\nexport function version() {{ return \"{version}\"; }}\n{body}")


def tar_gz(members: dict[str, str | bytes], *, links: dict[str, str] | None = None,
           hardlinks: dict[str, str] | None = None, fifo: str | None = None) -> bytes:
    """A .tar.gz of ``members`` (name -> content) plus symlinks, hardlinks and a fifo as asked."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in members.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for kind, table in ((tarfile.SYMTYPE, links or {}), (tarfile.LNKTYPE, hardlinks or {})):
            for name, target in table.items():
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, target
                tar.addfile(info)
        if fifo:
            info = tarfile.TarInfo(fifo)
            info.type = tarfile.FIFOTYPE
            tar.addfile(info)
    return buf.getvalue()


def zip_of(members: dict[str, str | bytes], *, symlink: tuple[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
        if symlink:
            info = zipfile.ZipInfo(symlink[0])
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, symlink[1])
    return buf.getvalue()


def plugin_tar(pid: str, version: str, body: str = "", **kw) -> bytes:
    """A package of plugin ``pid``: one top directory with its mod.js."""
    return tar_gz({f"{pid}/mod.js": plugin_source(pid, version, body, **kw)})


def publish(path: Path, data: bytes, *, sha: bool = True, key: Ed25519PrivateKey | None = None) -> Path:
    """Write the archive, and beside it its sha256 (sha256sum format) and signature."""
    path.write_bytes(data)
    if sha:
        Path(f"{path}.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
    if key is not None:
        Path(f"{path}.sig").write_text(base64.b64encode(key.sign(data)).decode() + "\n")
    return path


def new_key() -> tuple[Ed25519PrivateKey, str]:
    """A signing key and its public key as host.toml's trusted_keys takes it."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key, base64.b64encode(public).decode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
