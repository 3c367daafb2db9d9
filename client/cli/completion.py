"""``flowctl completion bash|zsh``: shell completion scripts made from the parser.

Every command, option and choice comes from the argparse tree, so the scripts
never drift from the command table in ``cli.py``.
"""

from __future__ import annotations

import argparse
import sys

from .context import Ctx


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flags(p: argparse.ArgumentParser, valued: bool | None = None) -> list[str]:
    """Option strings of ``p`` (only those taking a value, or only switches, if asked)."""
    return [o for a in p._actions for o in a.option_strings
            if valued is None or (a.nargs != 0) == valued]


def _words(p: argparse.ArgumentParser) -> str:
    choices = [c for a in p._actions if not a.option_strings and a.choices for c in a.choices]
    return " ".join(_flags(p) + choices)


def bash_completion(parser: argparse.ArgumentParser) -> str:
    cmds = _commands(parser)
    valued = sorted({o for p in [parser, *cmds.values()] for o in _flags(p, True)})
    cases = "\n".join(f"        {n}) words=\"{_words(p)}\" ;;" for n, p in cmds.items())
    return f"""# bash completion for flowctl (from `flowctl completion bash`)
_flowctl() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local cmd="" words i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            {"|".join(_flags(parser, True))}) ((i++)) ;;
            -*) ;;
            *) cmd="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    case "$prev" in
        --data-dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
        {"|".join(valued)}) return ;;
    esac
    case "$cmd" in
        "") words="{" ".join(_flags(parser) + list(cmds))}" ;;
{cases}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    case "$cmd" in export|import|migrate) COMPREPLY+=($(compgen -f -- "$cur")) ;; esac
}}
complete -F _flowctl flowctl
"""


def _zsh_spec(a: argparse.Action) -> str:
    """One ``_arguments`` spec: '--opt[help]:value:' or ':positional:completer'."""
    if not a.option_strings:
        what = f"({' '.join(a.choices)})" if a.choices else (
            "_files" if a.dest in ("file", "src", "dst") else " ")
        return f"'{':' if a.nargs == '?' else ''}:{a.dest}:{what}'"
    text = (a.help or "").translate(str.maketrans("[]", "()", "'"))
    value = f":{a.dest}:" + ("_files -/" if a.dest == "data_dir" else "") if a.nargs != 0 else ""
    return " ".join(f"'{o}[{text}]{value}'" for o in a.option_strings)


def zsh_completion(parser: argparse.ArgumentParser) -> str:
    cmds = _commands(parser)
    described = "\n".join(f"    '{n}:{(p.description or '').replace(chr(39), '')}'"
                           for n, p in cmds.items())
    specs = {n: " ".join(_zsh_spec(a) for a in p._actions
                         if a.dest != "help" and not isinstance(a, argparse._SubParsersAction))
             for n, p in [("", parser), *cmds.items()]}
    cases = "\n".join(f"        {n}) _arguments {specs[n]} ;;" for n in cmds)
    return f"""#compdef flowctl
# zsh completion for flowctl (from `flowctl completion zsh`)
_flowctl() {{
  local -a cmds
  cmds=(
{described}
  )
  local state
  _arguments -C {specs['']} '1:command:->cmd' '*::arg:->args' && return
  case $state in
    cmd) _describe 'command' cmds ;;
    args)
      case $words[1] in
{cases}
      esac ;;
  esac
}}
compdef _flowctl flowctl
"""


def cmd_completion(ctx: Ctx) -> int:
    make = bash_completion if ctx.args.shell == "bash" else zsh_completion
    sys.stdout.write(make(ctx.parser))
    return 0
