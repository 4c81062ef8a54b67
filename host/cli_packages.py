"""``python -m host install|update|uninstall``: plugin packages from the shell. The CLI reads the
package and what is published beside it (``ARCHIVE.sha256``, ``ARCHIVE.sig``); with a server on
the state directory it hands them to it over the control socket (the server verifies, installs
and loads the plugin at once), else it installs into the plugin directory itself."""

from __future__ import annotations

import argparse
import base64
import io
import stat
import sys
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .cli_output import UsageError, print_json
from .config import HostConfig
from .control import control_client
from .plugins.package_archive import Package, parse_sha256, parse_signature
from .plugins.packages import PackageAdmin


def read_package(path_text: str, sha256: str | None) -> Package:
    """The package at PATH (an archive, a module file, a plugin directory) with its sha256
    (``--sha256``, else ``PATH.sha256`` beside it) and signature (``PATH.sig``)."""
    path = Path(path_text)
    if path.is_dir():
        return Package(name=path.name, directory=path.resolve(),
                       sha256=parse_sha256(sha256, path.name, "--sha256") if sha256 else None)
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO waited for ever, /dev/zero read until memory ran out
            raise UsageError(f"{path}: not a package file (a FIFO or a device): name an archive, a module "
                             "file or a plugin directory")
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the package ({exc.strerror or exc})") from None
    published, sig_path = Path(f"{path}.sha256"), Path(f"{path}.sig")
    digest, source = None, "--sha256"
    if sha256:
        digest = parse_sha256(sha256, path.name, "--sha256")
    elif published.is_file():
        digest, source = parse_sha256(published.read_text(errors="replace"), path.name, str(published)), str(published)
    signature = parse_signature(sig_path.read_bytes(), str(sig_path)) if sig_path.is_file() else None
    return Package(name=path.name, data=data, sha256=digest, sha256_from=source, signature=signature)


def _tar_directory(directory: Path) -> bytes:
    """A plugin directory as a .tar.gz to send to the server (which checks it as any archive)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(directory, arcname=directory.name)
    return buf.getvalue()


def _body(package: Package) -> dict[str, Any]:
    if package.directory is not None:
        name, data = f"{package.directory.name}.tar.gz", _tar_directory(package.directory)
    else:
        assert package.data is not None
        name, data = package.name, package.data
    body: dict[str, Any] = {"filename": name, "content": base64.b64encode(data).decode()}
    if package.sha256 is not None and package.directory is None:
        body["sha256"] = package.sha256
    if package.signature is not None:
        body["signature"] = base64.b64encode(package.signature).decode()
    return body


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:

    async def install(args: argparse.Namespace, config: HostConfig) -> int:
        package = read_package(args.path, args.sha256)
        async with control_client(config.state_path) as server:
            if server is not None:
                print_json(await server.request("POST", "/api/plugins/install" + ("?force=1" if args.force else ""),
                                                _body(package)))
                return 0
        report = await PackageAdmin(config).install(package, by="cli", replace=args.force)
        print_json(report)
        _next_start(config)
        return 0

    async def update(args: argparse.Namespace, config: HostConfig) -> int:
        package = read_package(args.path, args.sha256)
        async with control_client(config.state_path) as server:
            if server is not None:
                print_json(await server.request("POST", f"/api/plugins/{quote(args.id)}/update", _body(package)))
                return 0
        print_json(await PackageAdmin(config).update(args.id, package, by="cli"))
        _next_start(config)
        return 0

    async def uninstall(args: argparse.Namespace, config: HostConfig) -> int:
        async with control_client(config.state_path) as server:
            if server is not None:
                print_json(await server.request("DELETE", f"/api/plugins/{quote(args.id)}"
                                                + ("?purge=1" if args.purge else "")))
                return 0
        print_json(await PackageAdmin(config).uninstall(args.id, by="cli", purge=args.purge))
        return 0

    s = sub.add_parser("install", help="install a plugin package (.tar.gz/.tgz/.zip, a module file or a directory) "
                       "after checking its sha256 and signature", parents=[common])
    s.add_argument("path", metavar="PATH|ARCHIVE")
    s.add_argument("--sha256", metavar="HEX", help="the package's sha256 (default: PATH.sha256 beside it)")
    s.add_argument("--force", action="store_true", help="replace an installed package of the same id (as update)")
    s.set_defaults(run=install)
    s = sub.add_parser("update", help="replace an installed package with a new version (same checks; the old "
                       "version serves until the new one runs)", parents=[common])
    s.add_argument("id")
    s.add_argument("path", metavar="ARCHIVE|PATH")
    s.add_argument("--sha256", metavar="HEX", help="the package's sha256 (default: PATH.sha256 beside it)")
    s.set_defaults(run=update)
    s = sub.add_parser("uninstall", help="remove an installed package (its workers stop); --purge also forgets "
                       "its stored config and storage", parents=[common])
    s.add_argument("id")
    s.add_argument("--purge", action="store_true")
    s.set_defaults(run=uninstall)


def _next_start(config: HostConfig) -> None:
    print(f"(no server runs on {config.state_path}: the plugin is loaded at its next start)", file=sys.stderr)


__all__ = ["read_package", "register"]
