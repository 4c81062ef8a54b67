"""Examples under every subcommand's ``--help`` (argparse epilogs, set here in one table so
that cli.py stays a list of options), and the walk over the command tree that shell
completion (cli_completion.py) and the tests share."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

# Command path -> real invocations, without the program name (added as invoked).
EXAMPLES: dict[str, list[str]] = {
    "serve": ["serve --plugins plugins --port 8787", "serve --dev --plugins plugins",
              "serve --inspect-brk calc --inspect-port 9229"],
    "balances": ["balances", "balances --refresh --json"],
    "balances stations": ["balances stations --json"],
    "balances add": ["balances add work --plugin newapi baseUrl=https://relay.example.com --from-env apiKey=RELAY_KEY",
                     "balances add mine --script usage.js --title 'My relay'"],
    "balances set": ["balances set work baseUrl=https://relay2.example.com"],
    "balances rm": ["balances rm work"],
    "balances test": ["balances test work", "balances test work --json"],
    "import-cc-switch": ["import-cc-switch --dry-run", "import-cc-switch --db ~/.cc-switch/cc-switch.db"],
    "call": ["call calc add 1 2", "call calc echo '{\"a\": [1, \"x\"]}'", "call deepseek queryBalance --with-config"],
    "execute": ["execute job.js --input '{\"n\": 21}'", "execute - --input 21 < job.js"],
    "approve": ["approve deepseek"],
    "config": ["config get deepseek", "config set deepseek --from-env apiKey=DEEPSEEK_KEY"],
    "config get": ["config get deepseek", "config get deepseek baseUrl"],
    "config set": ["config set deepseek --from-env apiKey=DEEPSEEK_KEY", "config set vault region=us retries=3",
                   "config set vault --file vault.toml --replace"],
    "config export": ["config export --out configs.json", "config export --plugin deepseek --passphrase-env PASS"],
    "config import": ["config import configs.json", "config import configs.json --passphrase-env PASS --replace"],
    "config reset": ["config reset deepseek"],
    "list": ["list", "list --json --state running", "list --capability balance"],
    "info": ["info calc", "info calc@1.2.3"],
    "status": ["status", "status --json"],
    "enable": ["enable calc"],
    "disable": ["disable calc"],
    "grants": ["grants deepseek", "grants deepseek --narrow net=api.deepseek.com --narrow env=false",
               "grants deepseek --reset"],
    "validate": ["validate plugins/myplug", "validate plugins/calc.js --json"],
    "new": ["new myplug", "new mybalance --template balance"],
    "test": ["test myplug", "test", "test myplug -- --allow-net=api.example.com"],
    "doctor": ["doctor", "doctor --json"],
    "install": ["install myplug-1.0.0.tar.gz", "install myplug-1.0.0.tar.gz --sha256 HEX"],
    "update": ["update myplug myplug-1.1.0.tar.gz"],
    "uninstall": ["uninstall myplug", "uninstall myplug --purge"],
    "completion": ["completion bash > ~/.local/share/bash-completion/completions/plugin-host",
                   "completion zsh >> ~/.zshrc", "completion fish > ~/.config/fish/completions/plugin-host.fish"],
}


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every subcommand under ``parser``, depth first: (its path of names, its parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from commands(sub, (*path, name))


def add_examples(parser: argparse.ArgumentParser, prog: str) -> None:
    """An ``examples:`` epilog under each subcommand that has some in EXAMPLES."""
    for path, sub in commands(parser):
        examples = EXAMPLES.get(" ".join(path))
        if examples:
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
            sub.epilog = "examples:\n" + "\n".join(f"  {prog} {e}" for e in examples)


__all__ = ["EXAMPLES", "add_examples", "commands"]
