"""The package routes of the HTTP API (server.py adds them; its guard checks the admin token):

- ``POST /api/plugins/install[?force=1]`` and ``POST /api/plugins/{id}/update``: the package as
  a multipart upload (a ``file`` part, optional ``sha256`` and ``signature`` parts), as JSON
  ``{"filename", "content": base64, "sha256"?, "signature"?: base64}`` (what the CLI sends over
  the control socket), or as the raw body with ``?filename=NAME&sha256=HEX&signature=BASE64``;
- ``DELETE /api/plugins/{id}[?purge=1]``; ``GET /api/packages``: what was installed.

Bodies are read up to ``[packages] max_archive_bytes``, not the API's usual body cap."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from .config import HostConfig
from .plugins.package_archive import Package, PackageRefused, parse_sha256, parse_signature
from .plugins.packages import PackageAdmin
from .server_params import error_doc, flag_param, host_error_doc

JSON_OVERHEAD = 64 * 1024  # a JSON body's fields besides the base64 content
MULTIPART_FIELDS = ("file", "sha256", "signature")


async def _read_capped(read: Callable[[int], Awaitable[bytes]], cap: int, what: str) -> bytes:
    """Everything ``read`` gives, refused (413) past ``cap`` bytes."""
    chunks, size = [], 0
    while chunk := await read(64 * 1024):
        size += len(chunk)
        if size > cap:
            raise PackageRefused(f"{what}: over [packages] max_archive_bytes ({cap} bytes)", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _package(name: str, data: bytes, sha256: str | None, signature: bytes | None) -> Package:
    name = (name or "").rsplit("/", 1)[-1] or "package"
    digest = parse_sha256(sha256, name, "sha256") if sha256 else None
    sig = parse_signature(signature, "signature") if signature else None
    return Package(name=name, data=data, sha256=digest, sha256_from="the sha256 field", signature=sig)


async def read_package(request: web.Request, cap: int) -> Package:
    """The package a request carries, in any of the three forms above."""
    ctype = request.content_type
    if ctype == "multipart/form-data":
        fields: dict[str, bytes] = {}
        name = None
        left = cap + JSON_OVERHEAD  # for all the parts together: many small ones must not add up
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise PackageRefused("multipart upload: a nested multipart part is not a package")
                if part.name not in MULTIPART_FIELDS:
                    raise PackageRefused(f"multipart upload: unknown part {str(part.name)[:40]!r} "
                                         f"(expected {', '.join(MULTIPART_FIELDS)})")
                if part.name in fields:
                    raise PackageRefused(f"multipart upload: the `{part.name}` part is given twice")
                if part.name == "file":
                    name = part.filename or "package"
                data = await _read_capped(
                    part.read_chunk, min(left, cap if part.name == "file" else JSON_OVERHEAD), part.name)
                left -= len(data)
                fields[part.name] = data
        except (ValueError, HttpProcessingError) as exc:  # a body that is no multipart
            raise PackageRefused(f"multipart upload: unreadable ({type(exc).__name__}: {str(exc)[:200]})") from None
        if name is None:
            raise PackageRefused("multipart upload: no `file` part (the package)")
        sha = fields.get("sha256", b"").decode(errors="replace").strip() or None
        return _package(name, fields["file"], sha, fields.get("signature") or None)
    q = request.query
    if "filename" in q:  # the raw package as the body, whatever its content type says
        data = await _read_capped(request.content.read, cap, q["filename"])
        return _package(q["filename"], data, q.get("sha256"), q.get("signature", "").encode() or None)
    if ctype != "application/json":
        raise PackageRefused("give the package as a multipart upload (a `file` part), as JSON, or as the body "
                             "with ?filename=NAME (and &sha256=HEX)")
    raw = await _read_capped(request.content.read, cap * 4 // 3 + JSON_OVERHEAD, "the JSON body")
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("sha256") or "", str):
            raise ValueError("an object whose sha256 is a string")
        content = base64.b64decode(doc["content"], validate=True)
        signature = base64.b64decode(doc["signature"], validate=True) if doc.get("signature") else None
        return _package(str(doc.get("filename") or ""), content, doc.get("sha256"), signature)
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error) as exc:
        raise PackageRefused(f"body: expected {{\"filename\", \"content\": base64, \"sha256\"?, "
                             f"\"signature\"?: base64}} ({type(exc).__name__}: {str(exc)[:200]})") from None


def code_refused(config: HostConfig, via: str, guarded: bool, what: str = "installing plugins") -> web.Response | None:
    """A 403 for a request that would install code (a package, a station's usage script) over
    HTTP with no admin token, unless on the control socket, a Unix socket, or with the
    operator's ``--insecure-no-token``; None when it may."""
    srv = config.server
    if guarded or via == "cli" or srv.unix_socket is not None or srv.insecure_no_token:
        return None
    return web.json_response(error_doc("Forbidden", (
        f"{what} over HTTP needs an admin token: set one (server.admin_token, "
        "$PLUGIN_HOST_ADMIN_TOKEN or --admin-token), serve on --unix PATH, use the CLI on "
        "this machine, or pass --insecure-no-token to let anyone who reaches the port install code")), status=403)


def add_package_routes(router: web.UrlDispatcher, packages: PackageAdmin, via: str, *,
                       guarded: bool) -> dict[web.AbstractResource, int]:
    """``guarded``: the API needs an admin token to change anything. A package is code that
    runs with the grants it declares (approved as they are at its first install), so, as for
    ``/execute``, installing over HTTP with no token is refused unless on the control socket
    (``via="cli"``) or a Unix socket, or the operator said ``--insecure-no-token``."""
    cap = packages.config.packages.max_archive_bytes

    def answer(doc: dict[str, Any], status: int = 200) -> web.Response:
        return web.json_response(doc, status=status)

    def refused(exc: PackageRefused) -> web.Response:
        return answer(host_error_doc(exc), exc.status)

    def unguarded() -> web.Response | None:
        return code_refused(packages.config, via, guarded)

    async def install(request: web.Request) -> web.Response:
        if (refusal := unguarded()) is not None:
            return refusal
        force = flag_param(request, "force")
        try:
            package = await read_package(request, cap)
            return answer(await packages.install(package, by=via, replace=force), 201)
        except PackageRefused as exc:
            return refused(exc)

    async def update(request: web.Request) -> web.Response:
        if (refusal := unguarded()) is not None:
            return refusal
        try:
            package = await read_package(request, cap)
            return answer(await packages.update(request.match_info["id"], package, by=via))
        except PackageRefused as exc:
            return refused(exc)

    async def uninstall(request: web.Request) -> web.Response:
        purge = flag_param(request, "purge")
        if purge and (refusal := unguarded()) is not None:  # it deletes stored configs and storage
            return refusal
        try:
            return answer(await packages.uninstall(request.match_info["id"], by=via, purge=purge))
        except PackageRefused as exc:
            return refused(exc)

    async def listing(request: web.Request) -> web.Response:
        return answer(packages.installed())

    big = cap * 4 // 3 + JSON_OVERHEAD * 2  # a package in base64 JSON, or multipart with its parts
    caps = {router.add_post("/api/plugins/install", install).resource: big,
            router.add_post("/api/plugins/{id}/update", update).resource: big}
    router.add_delete("/api/plugins/{id}", uninstall)
    router.add_get("/api/packages", listing)
    return caps


__all__ = ["add_package_routes", "read_package"]
