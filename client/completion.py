"""Shell completion for `ixc`, written from its command table (`client.commands`): command
names, each command's options (the `--words` of its synopsis), package names from the
daemon's overlays (`ixc search --names PREFIX`, `+`/`-` kept) where a synopsis takes PKG, and
realm names (`ixc list`) where it takes REALM; asked with `--no-retry`, so a daemon that is
down makes completion offer nothing rather than wait. `ixc completion bash` and `ixc
completion zsh` print the script; runit/install.sh installs both.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from client.context import Command

#: the options `ixc` takes before its command
GLOBAL_OPTIONS = ("--socket", "--json", "-v", "--no-retry", "--help", "--version")
_OPTION = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")


def options_of(cmd: Command) -> list[str]:
    """The options a command's synopsis and summary name (`--strict`, `--limit`, `-f`)."""
    found = [o for o in _OPTION.findall(f"{cmd.synopsis} {cmd.summary}")
             if o not in ("--k", "-PKG")]
    return list(dict.fromkeys(found))


def kinds_of(cmd: Command) -> list[str]:
    """What a command's other words are: packages, realms, or (`help`) commands."""
    if cmd.name == "help":
        return ["commands"]
    kinds = []
    if "PKG" in cmd.synopsis:
        kinds.append("packages")
    if "REALM" in cmd.synopsis:
        kinds.append("realms")
    return kinds


def _cases(commands: Mapping[str, Command], indent: str) -> str:
    lines = [f"{indent}{name}) _ixc_words '{' '.join(options_of(cmd))}' "
             f"{' '.join(kinds_of(cmd))} ;;" for name, cmd in commands.items()]
    lines.append(f"{indent}help) _ixc_words '' commands ;;")
    return "\n".join(lines)


BASH = r"""# bash completion for ixc: `ixc completion bash` wrote it from ixc's command table
_ixc_ask() {  # the daemon, never waited for
    command ixc --no-retry "${_ixc_socket[@]}" "$@" 2>/dev/null
}

_ixc_words() {
    local opts=$1 kind sign= word=$cur name
    shift
    if [[ $cur == --* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
        return
    fi
    case $word in [+-]*) sign=${word:0:1}; word=${word:1} ;; esac
    for kind in "$@"; do
        case $kind in
            packages)
                while IFS= read -r name; do
                    COMPREPLY+=("$sign$name")
                done < <(_ixc_ask search --names "$word") ;;
            realms)
                [[ -n $sign ]] && continue
                while IFS= read -r name; do
                    COMPREPLY+=("$name")
                done < <(compgen -W "$(_ixc_ask list)" -- "$cur") ;;
            commands)
                mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(compgen -W "$_ixc_commands" \
                    -- "$cur") ;;
        esac
    done
}

_ixc() {
    local cur=${COMP_WORDS[COMP_CWORD]} cmd= i
    local _ixc_commands='@COMMANDS@'
    local -a _ixc_socket=()
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --socket) _ixc_socket=(--socket "${COMP_WORDS[i+1]}"); ((i++)) ;;
            --socket=*) _ixc_socket=("${COMP_WORDS[i]}") ;;
            -*) ;;
            *) cmd=${COMP_WORDS[i]}; break ;;
        esac
    done
    if [[ -z $cmd ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$_ixc_commands @GLOBAL@" -- "$cur")
        return
    fi
    case $cmd in
@CASES@
    esac
}
complete -o nosort -F _ixc ixc
"""

ZSH = r"""#compdef ixc
# zsh completion for ixc: `ixc completion zsh` wrote it from ixc's command table
_ixc_ask() {  # the daemon, never waited for
    command ixc --no-retry $_ixc_socket "$@" 2>/dev/null
}

_ixc_words() {
    local opts=$1 kind sign= word=$cur
    shift
    if [[ $cur == --* ]]; then
        compadd -- ${=opts}
        return
    fi
    if [[ $word == [+-]* ]]; then
        sign=${word[1]}
        word=${word[2,-1]}
    fi
    for kind in "$@"; do
        case $kind in
            packages)
                compadd -P "$sign" -- ${(f)"$(_ixc_ask search --names "$word")"} ;;
            realms)
                [[ -n $sign ]] || compadd -- ${(f)"$(_ixc_ask list)"} ;;
            commands)
                compadd -- ${_ixc_commands%%:*} ;;
        esac
    done
}

_ixc() {
    local cur=${words[CURRENT]} cmd= i=2
    local -a _ixc_socket _ixc_commands
    _ixc_commands=(
@DESCRIBED@
    )
    while (( i < CURRENT )); do
        case ${words[i]} in
            --socket) _ixc_socket=(--socket ${words[i+1]}); (( i++ )) ;;
            --socket=*) _ixc_socket=(${words[i]}) ;;
            -*) ;;
            *) cmd=${words[i]}; break ;;
        esac
        (( i++ ))
    done
    if [[ -z $cmd ]]; then
        _describe -t commands 'ixc command' _ixc_commands
        compadd -- @GLOBAL@
        return
    fi
    case $cmd in
@CASES@
    esac
}

_ixc "$@"
"""


def bash(commands: Mapping[str, Command]) -> str:
    """The bash script for the command table `commands`."""
    return (BASH.replace("@COMMANDS@", " ".join(commands))
            .replace("@GLOBAL@", " ".join(GLOBAL_OPTIONS))
            .replace("@CASES@", _cases(commands, " " * 8)))


def zsh(commands: Mapping[str, Command]) -> str:
    """The zsh script for the command table `commands`."""
    described = "\n".join(
        f"        '{name}:{_quoted(cmd.summary.splitlines()[0])}'"
        for name, cmd in commands.items())
    return (ZSH.replace("@DESCRIBED@", described)
            .replace("@GLOBAL@", " ".join(GLOBAL_OPTIONS))
            .replace("@CASES@", _cases(commands, " " * 8)))


def _quoted(text: str) -> str:
    """`text` inside single quotes, for zsh (a quote ends and restarts the string)."""
    return text.replace("'", "'\\''").replace(":", "\\:")


#: the scripts by shell, each written from the command table it is given
SCRIPTS: dict[str, Callable[[Mapping[str, Command]], str]] = {"bash": bash, "zsh": zsh}
