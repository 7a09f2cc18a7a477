"""``postgate state``: list, show and reset rate-limit counters.

Asks the running daemon over its control socket (``[control] socket``)
when it has one (its counters are the live ones, and only it can reset
them); otherwise reads the state file (``[state] directory``) for ``list``
and ``show``. With ``[state] backend = "redis"`` it reads and resets Redis
directly (`postgate.commands.redis_state`). ``--json``
prints the answer as one JSON document for scripts. Exit statuses: 0 done,
1 nothing matched, 2 usage, 69 no daemon to reset with or a daemon that did
not answer, 78 a refused config.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from postgate.commands.control_client import ControlError, request
from postgate.commands.redis_state import redis_state
from postgate.commands.replay import EX_CONFIG
from postgate.config.load import DEFAULT_PATH, Config, load_config
from postgate.config.problems import ConfigError
from postgate.rules.greylist import Greylist
from postgate.rules.limits import LimitCheck
from postgate.rules.model import Rule
from postgate.rules.program import walk
from postgate.state import greylist_report
from postgate.state.report import StateError, handle, read_file

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    Ask = Callable[[Config, dict[str, Any]], dict[str, Any] | None]

EX_UNAVAILABLE: Final = 69


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="postgate state", description=__doc__.split("\n")[0])
    parser.add_argument("action", nargs="?", default="list", choices=("list", "show", "reset"))
    parser.add_argument("-c", "--config", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--rule", default="", help="only this rule id")
    parser.add_argument("--key", default="", help="only this key (sasl_username, 192.0.2.0/24...)")
    parser.add_argument("--prefix", default="", help="only keys starting with this")
    parser.add_argument("--all", action="store_true", help="reset: every counter")
    parser.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    parser.add_argument("--file", type=Path, help="read this state file, not the daemon")
    parser.add_argument(
        "--greylist", action="store_true", help="greylist triplets and auto-allowlisted clients"
    )
    return parser


class DaemonError(Exception):
    """The control socket is there but the daemon did not answer the command."""


def ask_daemon(config: Config, args: dict[str, Any]) -> dict[str, Any] | None:
    """The running daemon's answer over ``[control] socket``; None when there is none."""
    socket = config.control.socket
    if socket is None or not socket.exists():
        return None  # no daemon to ask: the file is read instead
    try:
        answer = request(socket, "state", args)
    except ControlError as exc:
        raise DaemonError(str(exc)) from None
    if not isinstance(answer, dict):
        raise DaemonError(f"unexpected answer {answer!r}")
    return answer


def main(argv: Sequence[str], out: TextIO, err: TextIO, ask: Ask = ask_daemon) -> int:
    opts = _parser().parse_args(argv)
    try:
        config = load_config(opts.config)
    except ConfigError as exc:
        err.writelines(f"{p}\n" for p in exc.errors)
        return EX_CONFIG
    args = {k: getattr(opts, k) for k in ("action", "rule", "key", "prefix", "all")}
    if opts.greylist:
        return greylist_state(config, opts, args, (out, err), ask)
    try:
        redis = config.state.redis if config.state.backend == "redis" else None
        answer: dict[str, Any] | None = None
        if redis is not None and not opts.file:  # the shared counters, not one daemon's
            answer = redis_state(redis, args, time.time())
        elif not opts.file:
            answer = ask(config, args)
        if answer is None and opts.action == "reset":
            err.write("postgate state reset: no running daemon answered; reset needs one\n")
            return EX_UNAVAILABLE
        if answer is None:
            store = read_file(opts.file or config.state.file, time.time())
            answer = handle(store, args, time.time())
    except StateError as exc:
        err.write(f"postgate state: {exc}\n")
        return 1
    except DaemonError as exc:
        err.write(f"postgate state: {exc}\n")
        return EX_UNAVAILABLE
    if opts.json:
        out.write(json.dumps(answer, indent=1, sort_keys=True) + "\n")
    else:
        out.writelines(f"{line}\n" for line in text(answer, _windows(config)))
    return 0 if answer.get("total", answer.get("reset", 1)) else 1


def greylist_state(
    config: Config,
    opts: argparse.Namespace,
    args: dict[str, Any],
    streams: tuple[TextIO, TextIO],
    ask: Ask,
) -> int:
    """``--greylist``: the same actions on greylisting's records (docs/rules.md, Greylisting)."""
    out, err = streams
    found = [c.settings for n in walk(config.ruleset.nodes) if isinstance(n, Rule)
             for c in n.checks if isinstance(c, Greylist)]  # fmt: skip
    after = min((s.allowlist_after for s in found if s.allowlist_after), default=5)
    lifetime = max((s.lifetime for s in found), default=35 * 86400.0)
    try:
        if config.state.backend == "redis" and not opts.file:
            prefix = config.state.redis.prefix if config.state.redis else "postgate:"
            raise StateError(  # noqa: TRY301 - reported below like the others
                "greylisting's records are in Redis: "
                f"redis-cli --scan --pattern '{prefix}grey:*' lists them"
            )
        asked = args | {"kind": "greylist", "allowlist_after": after}
        answer = None if opts.file else ask(config, asked)
        if answer is None and opts.action == "reset":
            err.write("postgate state reset: no running daemon answered; reset needs one\n")
            return EX_UNAVAILABLE
        if answer is None:
            store = greylist_report.read_file(opts.file or config.state.file, time.time(), lifetime)
            answer = greylist_report.handle(store, args, time.time(), after)
    except StateError as exc:
        err.write(f"postgate state: {exc}\n")
        return 1
    except DaemonError as exc:
        err.write(f"postgate state: {exc}\n")
        return EX_UNAVAILABLE
    if opts.json:
        out.write(json.dumps(answer, indent=1, sort_keys=True) + "\n")
    else:
        out.writelines(f"{line}\n" for line in greylist_report.text(answer))
    return 0 if answer.get("total", answer.get("reset", 1)) else 1


def _windows(config: Config) -> dict[tuple[str, str], str]:
    """(rule, seconds) -> "per hour" texts and limits, to show counts against limits."""
    found = {}
    for node in walk(config.ruleset.nodes):
        for check in node.checks if isinstance(node, Rule) else ():
            if isinstance(check, LimitCheck):
                for window in check.windows:
                    found[node.id, str(window.seconds)] = window.text
    return found


def show_lines(config: Config, now: float) -> list[str]:
    """For ``postgate show``: each limit rule's counters in the state file, the fullest first."""
    limits = _windows(config)
    rules = sorted({rule for rule, _ in limits})
    if not rules:
        return []
    try:
        store = read_file(config.state.file, now)
    except StateError as exc:
        return [f"state: {exc}"]
    lines = [f"state ({config.state.file}):"]
    for rule in rules:
        entries = handle(store, {"rule": rule}, now)["entries"]
        fullest = max(entries, key=lambda e: sum(e["counts"].values()), default=None)
        top = "" if fullest is None else f"; fullest: {fullest['key']}, {_counts(fullest, limits)}"
        lines.append(f"    {rule}: {len(entries)} keys counted{top}")
    return lines


def _counts(entry: dict[str, Any], limits: dict[tuple[str, str], str]) -> str:
    return ", ".join(
        f"{n} of {limits.get((entry['rule'], s), f'? per {s} s')}"
        for s, n in sorted(entry["counts"].items(), key=lambda i: int(i[0]))
    )


def text(answer: dict[str, Any], limits: dict[tuple[str, str], str]) -> list[str]:
    if "reset" in answer:
        return [f"reset {answer['reset']} counters"]
    lines = []
    for entry in answer["entries"]:
        counts = _counts(entry, limits)
        reserved = f", {entry['reserved']} reserved" if entry.get("reserved") else ""
        lines.append(f"{entry['rule']}  {entry['key']}  {counts}{reserved}")
    more = f" (first {len(answer['entries'])} shown)" if answer.get("truncated") else ""
    lines.append(f"{answer['total']} counters{more}")
    return lines


__all__ = ["main"]
