"""Plugins written by tests: the plugin directory, the calculator and vault plugins, state directories."""

from __future__ import annotations

import textwrap
from pathlib import Path


class PluginDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, source: str, *, auto_metadata: bool = True) -> Path:
        """Write a file under the plugin directory. A plugin module without ``metadata`` gets
        a minimal valid one (id from its file or directory name), so tests about something
        else need not repeat it."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = textwrap.dedent(source)
        is_entry = path.suffix in (".js", ".ts") and (
            path.parent == self.root or path.stem in ("mod", "index"))
        if auto_metadata and is_entry and "export const metadata" not in text:
            pid = (path.stem if path.parent == self.root else path.parent.name).split("@")[0]
            text = (f'export const metadata = {{ id: "{pid}", name: "{pid}", version: "1.0.0", '
                    f'apiVersion: "1.0" }};\n') + text
        path.write_text(text)
        return path


CALC = """
export const metadata = { id: "calc", name: "Calculator", version: "1.2.3", apiVersion: "1.0" };
export function add(a, b) { return a + b; }
export async function addLater(a, b) { await new Promise((r) => setTimeout(r, 5)); return a + b; }
export function echo(x) { return x; }
export async function sleep(ms) { await new Promise((r) => setTimeout(r, ms)); return ms; }
export function spin() { while (true) {} }
export function pid() { return Deno.pid; }
export function say(msg) { console.log("said:", msg); console.warn("warned"); return msg; }
"""


def vault_plugin(exports: str, *, fields: str = "") -> str:
    """The "vault" test plugin: a required secret ``apiKey`` and a ``region`` (eu or us), plus
    ``fields`` (more configSchema entries) and ``exports`` (its functions)."""
    return (
        'export const metadata = {\n  id: "vault", name: "Vault", version: "1.0.0", apiVersion: "1.0",\n'
        '  configSchema: {\n    apiKey: { type: "string", required: true, secret: true },\n'
        '    region: { type: "string", enum: ["eu", "us"], default: "eu" },\n'
        f"{fields}  }},\n}};\n{textwrap.dedent(exports).strip()}\n"
    )


def fresh_state(root: Path, shared_state: Path) -> Path:
    """A state directory of its own under ``root`` (configs, approvals, storage, history) that
    shares the session's DENO_DIR, so that the worker runtime is not compiled again."""
    state = root / "state"
    if not state.exists():
        state.mkdir(parents=True)
        (shared_state / "deno").mkdir(exist_ok=True)
        (state / "deno").symlink_to(shared_state / "deno")
    return state


def alice_db(path: Path) -> Path:
    """A sqlite file at ``path`` with one table, users (id, name), holding Alice as 1: the
    database of the execute db tool's tests."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users VALUES (1, 'Alice')")
    conn.close()
    return path
