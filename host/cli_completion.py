"""``completion bash|zsh|fish``: a shell completion script written from the parser itself (its
subcommands, their options and the options' choices), so it never lags behind the commands.
Bash and zsh (through ``bashcompinit``) share one function; it completes ``plugin-host ...``
and, when registered for python too, ``python -m host ...``."""

from __future__ import annotations

import argparse
import shlex
import sys

from .cli_help import add_examples, commands

SHELLS = ("bash", "zsh", "fish")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted({o for a in parser._actions for o in a.option_strings if o.startswith("--")} | {"-h"})


def _choices(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for _, sub in [((), parser), *commands(parser)]:
        for a in sub._actions:
            if a.option_strings and a.choices and not isinstance(a, argparse._SubParsersAction):
                for o in a.option_strings:
                    out[o] = [str(c) for c in a.choices]
    return out


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    return [name for path, _ in commands(parser) if len(path) == 1 for name in path]


def bash_script(parser: argparse.ArgumentParser) -> str:
    """A bash function ``_plugin_host`` and its registration."""
    table = [((), parser), *commands(parser)]
    words = "\n".join(f"    {shlex.quote(' '.join(path))}) echo {shlex.quote(' '.join(_subcommands(sub) + _options(sub)))} ;;"
                      for path, sub in table)
    choices = "\n".join(f"    {shlex.quote(o)}) echo {shlex.quote(' '.join(c))} ;;" for o, c in _choices(parser).items())
    return f"""# plugin-host completion for bash (and zsh through bashcompinit)
_plugin_host_words() {{
  case "$1" in
{words}
  esac
}}
_plugin_host_choices() {{
  case "$1" in
{choices}
  esac
}}
_plugin_host() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" path="" i=1 w
  if [[ "${{COMP_WORDS[1]}}" == "-m" ]]; then  # python -m host ...
    [[ "${{COMP_WORDS[2]}}" == "host" ]] || return 0
    i=3
  fi
  for (( ; i < COMP_CWORD; i++ )); do
    w="${{COMP_WORDS[i]}}"
    [[ "$w" == -* ]] && continue
    if [[ " $(_plugin_host_words "$path") " == *" $w "* ]]; then path="${{path:+$path }}$w"; fi
  done
  local choices
  choices="$(_plugin_host_choices "$prev")"
  if [[ -n "$choices" ]]; then
    COMPREPLY=( $(compgen -W "$choices" -- "$cur") )
  elif [[ "$cur" == -* ]]; then
    COMPREPLY=( $(compgen -W "$(_plugin_host_words "$path")" -X '!-*' -- "$cur") )
  else
    COMPREPLY=( $(compgen -W "$(_plugin_host_words "$path")" -X '-*' -- "$cur") )
  fi
}}
complete -o default -F _plugin_host plugin-host
# For `python -m host ...` too (it falls back to file names for other python commands):
# complete -o default -F _plugin_host python python3
"""


def zsh_script(parser: argparse.ArgumentParser) -> str:
    return ("# plugin-host completion for zsh\nautoload -U +X compinit && compinit\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(parser))


def fish_script(parser: argparse.ArgumentParser) -> str:
    """``complete -c plugin-host`` lines: the commands, each one's subcommands, its options."""
    lines = ["# plugin-host completion for fish", "complete -c plugin-host -f"]
    groups = {path: _subcommands(sub) for path, sub in commands(parser) if len(path) == 1}
    for path, sub in commands(parser):
        if len(path) == 1:
            cond = "__fish_use_subcommand"
        else:
            cond = f"__fish_seen_subcommand_from {path[0]}; and not __fish_seen_subcommand_from {' '.join(groups[path[:1]])}"
        lines.append(f"complete -c plugin-host -n {shlex.quote(cond)} -a {shlex.quote(path[-1])}")
        for action in sub._actions:
            for o in (o for o in action.option_strings if o.startswith("--")):
                extra = f" -xa {shlex.quote(' '.join(map(str, action.choices)))}" if action.choices else ""
                lines.append(f"complete -c plugin-host -n {shlex.quote('__fish_seen_subcommand_from ' + path[-1])}"
                             f" -l {o[2:]}{extra}")
    return "\n".join(lines) + "\n"


async def completion(args: argparse.Namespace, config: object) -> int:
    write = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[args.shell]
    sys.stdout.write(write(args.root_parser))
    return 0


def finish_parser(ap: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """Add ``completion`` to the commands of ``ap`` and the examples to every one's help."""
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    s = sub.add_parser("completion", help="print a shell completion script (bash, zsh or fish)", parents=[common])
    s.add_argument("shell", choices=SHELLS)
    s.set_defaults(run=completion, root_parser=ap)
    add_examples(ap, ap.prog)


__all__ = ["bash_script", "finish_parser", "fish_script", "zsh_script"]
