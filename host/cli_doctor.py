"""``python -m host doctor``: what a host on this configuration needs, checked one by one, with
what to do about each problem. Nothing is started and nothing is changed (the state directory's
write check makes and removes one file)."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

from .cli_output import print_json, table
from .config import HostConfig
from .errors import HostError
from .logs import escape
from .plugins.discovery import left_out
from .plugins.settings import ConfigStore
from .plugins.usage_scripts import discover_sources
from .runtime import IMPORT_MAP, find_deno, find_runtime_entry
from .security.private_files import check_state_dir
from .security.secrets import SecretBox, key_file_path

Check = tuple[str, str, str]  # (what, "ok" | "warn" | "fail", detail)
DENO_MAJOR = 2
DATABASE_WAIT = 5.0  # seconds [state] database has to answer doctor's statement


def checks(config: HostConfig) -> list[Check]:
    out: list[Check] = []

    def run(what: str, probe: Callable[[], Check | None]) -> None:
        try:
            found = probe()
        except (HostError, OSError, ValueError) as exc:
            found = (what, "fail", getattr(exc, "message", None) or str(exc))
        if found is not None:
            out.append(found)

    def deno() -> Check:
        path = find_deno(config.deno_path)
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20).stdout.split()
        number = version[1] if len(version) > 1 else "?"
        ok = number.split(".")[0] == str(DENO_MAJOR)
        return ("deno", "ok" if ok else "fail", f"{path} {number}" + ("" if ok else f" (Deno {DENO_MAJOR}.x is needed)"))

    def runtime() -> Check:
        entry = find_runtime_entry(config.runtime_entry)
        mapped = (entry.parent / IMPORT_MAP).is_file()
        return ("worker runtime", "ok" if mapped else "warn",
                f"{entry}" + ("" if mapped else f"; no {IMPORT_MAP} beside it: plugins cannot import @plugin-host/kit"))

    def state() -> Check:
        path = config.state_path
        if not path.exists():
            parent = next(p for p in path.parents if p.exists())
            ok = os.access(parent, os.W_OK | os.X_OK)
            return ("state directory", "ok" if ok else "fail",
                    f"{path} does not exist yet: " + ("made at the first start" if ok else f"{parent} is not writable"))
        check_state_dir(path)
        return ("state directory", "ok", f"{path} (writable, with room)")

    def secret_key() -> Check:
        """Read as the host reads it (its permissions, its text), and every secret config.json
        holds opened with it: before, a garbage key, a key file readable by others or a key that
        does not match were all "ok", and the host then refused to start."""
        sec, box = config.security, SecretBox(config)
        box.sealed_exist = lambda: True  # a key file not found is an error here, never made
        path = key_file_path(config)
        store = config.state_path / "config.json"
        sealed = store.exists() and "enc:v1:" in store.read_text(errors="replace")
        if not os.environ.get(sec.secret_key_env) and not os.path.lexists(path):
            if sealed:
                return ("secret key", "fail", f"config.json holds sealed secrets but {path} is gone and "
                                              f"${sec.secret_key_env} is not set: restore the key, or the secrets "
                                              "cannot be opened")
            if not path.parent.is_dir() and not path.parent.is_relative_to(config.state_path):
                return ("secret key", "fail", f"security.secret_key_file: {path}'s directory {path.parent} does not "
                                              "exist: make it (or fix the path)")
            return ("secret key", "ok", f"none yet: {path} is created when the first secret is stored")
        box.seal("doctor")  # loads the key: SecretsError naming what is wrong with it
        if sealed and config.state.database is None:
            ConfigStore(config.state_path, box).verify()  # SecretsError: the key does not open them
        return ("secret key", "ok", box.source + (" (opens the stored secrets)" if sealed else ""))

    def plugins() -> Check:
        wrong = [f"{d} ({'not a directory' if os.path.lexists(d) else 'missing'})"
                 for d in config.plugin_dirs if not d.is_dir()]
        if wrong:
            return ("plugin directories", "fail", f"{', '.join(wrong)} (--plugins, plugins_dir)")
        found = discover_sources(config)
        said = f"{len(found)} plugin(s) in {', '.join(map(str, config.plugin_dirs))}"
        if skipped := left_out(config.plugin_dirs):  # a FIFO, a link to nothing, a symlink loop
            return ("plugin directories", "warn", f"{said}; left out: " + "; ".join(escape(s) for s in skipped[:5])
                    + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""))
        return ("plugin directories", "ok" if found else "warn", said)

    def storage(uri: str, name: str) -> Check | None:
        if not uri.startswith(("redis://", "rediss://")):
            return None
        import redis

        client = redis.Redis.from_url(uri, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        except redis.AuthenticationError as exc:  # it answered: no
            return (name, "fail", f"{uri.split('@')[-1]} refuses the password: {exc} (give it in the URL: "
                                  "redis://:PASSWORD@host:port)")
        except redis.RedisError as exc:
            return (name, "fail", f"{uri.split('@')[-1]} does not answer: {exc}")
        finally:
            client.close()
        return (name, "ok", f"{uri.split('@')[-1]} answers")

    def database() -> Check | None:
        """``[state] database`` answers a statement within DATABASE_WAIT (a hung server, one
        SIGSTOPped or cut off, answers nothing: before, doctor said every line "ok" while every
        config, switch, history and storage write failed)."""
        url = config.state.database
        if url is None:
            return None
        from .db_backends import PostgresBackend
        from .pg_schema import drift

        backend = PostgresBackend(url, statement_timeout=DATABASE_WAIT)
        answer: list[Check] = []

        def probe() -> None:
            try:
                conn = backend.connect(write=False, timeout=DATABASE_WAIT)
                try:
                    (row,), _ = backend.run(conn, "SELECT version() AS v", [], 1)
                    columns, _ = backend.run(conn, "SELECT table_name AS t, column_name AS c FROM "
                                                   "information_schema.columns WHERE table_schema = current_schema()",
                                             [], 100_000)
                finally:
                    conn.close()
                present: dict[str, set[str]] = {}
                for c in columns:
                    present.setdefault(c["t"], set()).add(c["c"])
                if wrong := drift(present):  # serve would fail on them: "column ... does not exist"
                    answer.append(("state.database", "fail", f"{backend.where} answers, but {'; '.join(wrong)}: made by "
                                   "another version of the host or changed by hand (restore it, or drop it for the host "
                                   "to make it again, its rows lost)"))
                    return
                answer.append(("state.database", "ok", f"{backend.where} answers ({' '.join(row['v'].split()[:2])})"))
            except HostError as exc:
                answer.append(("state.database", "fail", exc.message.removeprefix("db: ")))
            except Exception as exc:  # any failure is this check's answer, never a traceback
                answer.append(("state.database", "fail", backend.scrub(f"{type(exc).__name__}: {exc}")))

        thread = threading.Thread(target=probe, daemon=True)  # a hung server: left behind as doctor exits
        thread.start()
        thread.join(DATABASE_WAIT + 1)
        return answer[0] if answer else ("state.database", "fail", f"{backend.where} did not answer within "
                                         f"{DATABASE_WAIT:g} s (stopped, overloaded or cut off?)")

    def port() -> Check:
        srv = config.server
        if srv.unix_socket:
            return ("listen address", "ok", f"unix socket {srv.unix_socket}")
        with socket.socket() as s:
            try:
                s.bind((srv.host, srv.port))
            except OSError as exc:
                return ("listen address", "warn", f"{srv.host}:{srv.port} is taken ({exc.strerror}): a server runs "
                                                  "there already, or choose --port")
        return ("listen address", "ok", f"{srv.host}:{srv.port} is free")

    for what, probe in (("deno", deno), ("worker runtime", runtime), ("state directory", state),
                        ("secret key", secret_key), ("state.database", database), ("plugin directories", plugins),
                        ("listen address", port)):
        run(what, probe)
    for uri, name in ((config.policy.storage, "policy.storage"), (config.policy.cache_storage, "policy.cache_storage"),
                      (config.state.channel_storage, "state.channel_storage")):
        run(name, lambda uri=uri, name=name: storage(uri, name))
    return out


async def doctor(args: argparse.Namespace, config: HostConfig) -> int:
    found = checks(config)
    if args.json:
        print_json([{"check": w, "status": s, "detail": d} for w, s, d in found])
    else:
        sys.stdout.write(table([["CHECK", "STATUS", "DETAIL"], *([w, s, d] for w, s, d in found)]))
    return 1 if any(s == "fail" for _, s, _ in found) else 0


__all__ = ["checks", "doctor"]
