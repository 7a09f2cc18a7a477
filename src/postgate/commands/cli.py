"""The ``postgate`` command: run the daemon, check and show configs, and tools.

The only module that touches the global reactor, and only inside ``run``.
Exit statuses follow sysexits where one fits: 78 (EX_CONFIG) for a config
that must not be used, 1 when the daemon could not start, 2 for usage.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, BinaryIO, Final, TextIO, cast

from postgate import __version__
from postgate.commands.replay import EX_CONFIG
from postgate.commands.rule_tests import config_option
from postgate.config.load import DEFAULT_PATH, Config, endpoint_problem, load_config
from postgate.config.problems import ConfigError, report_lines
from postgate.rules.program import legend

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from twisted.internet.defer import Deferred

    from postgate.daemon.service import Daemon


DESCRIPTION = """\
postgate answers Postfix's check_policy_service requests with the decisions of
the rules in its TOML configuration.

commands:
  run      run the daemon (foreground; SIGHUP reloads, SIGUSR1 toggles
           recording, SIGTERM stops)
  check    validate a configuration and print every problem
  show     print the compiled rules in the order the engine uses them
           (--python: the Python source they are compiled to)
  codes    explain SMTP reply codes and enhanced status codes
  replay   evaluate recorded requests, print decisions, check expectations
  diff     replay requests through two configs and report what changes
  test     run test_*.policy files (recorded requests with expected answers)
  ask      send one request to a running postgate and print its answer
  status   show what the running daemon is doing (its [control] socket)
  state    list, show and reset rate-limit counters
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postgate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"The default configuration file is {DEFAULT_PATH}.",
    )
    parser.add_argument("--version", action="version", version=f"postgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    config_option(run)
    run.add_argument(
        "--listen",
        action="append",
        metavar="ENDPOINT",
        help="listen here instead of the config's daemon.listen (repeatable; "
        "Twisted endpoint syntax, e.g. tcp:10040:interface=127.0.0.1, "
        "unix:/run/postgate/policy.sock:mode=660, systemd:domain=INET:index=0)",
    )
    config_option(sub.add_parser("check", help="validate a configuration"))
    show = sub.add_parser("show", help="print the compiled rules")
    config_option(show)
    show.add_argument(
        "--python",
        action="store_true",
        help="print the Python source the rules are compiled to (decide is the hot path), "
        "its line numbers as in a traceback, then what each kN name holds",
    )
    sub.add_parser("codes", help="explain SMTP reply and enhanced status codes (codes -h)")
    sub.add_parser("replay", help="evaluate recorded requests and check expectations (replay -h)")
    sub.add_parser("diff", help="show which recorded requests two configs answer differently")
    sub.add_parser("test", help="run the test_*.policy files beside a config (test -h)")
    sub.add_parser("ask", help="send one request to a running postgate (ask -h)")
    sub.add_parser("status", help="show what the running daemon is doing (status -h)")
    sub.add_parser("state", help="list, show and reset rate-limit counters (state -h)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # These tools parse their own options (-h, --named, -c twice, ...);
    # argparse would reject them before they reach the tool.
    if argv[:1] and argv[0] in _TOOLS:
        return _TOOLS[argv[0]](argv[1:])
    args = _parser().parse_args(argv)
    command = {"run": _run, "check": _check, "show": _show}[args.command]
    return command(args)


def _load(path: Path, err: TextIO) -> Config | None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        err.writelines(f"{line}\n" for line in report_lines(path, exc.errors, exc.warnings))
        return None
    err.writelines(f"{line}\n" for line in report_lines(path, (), config.warnings))
    return config


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config, sys.stderr)
    if config is None:
        return EX_CONFIG
    ruleset = config.ruleset
    print(f"{args.config}: OK, {ruleset.rule_count} rules, digest {ruleset.digest}")
    from postgate.commands.wiring import needed_lists

    for line in needed_lists(ruleset):
        print(f"  needs postgate in {line}")
    return 0


def _show(args: argparse.Namespace) -> int:
    config = _load(args.config, sys.stderr)
    if config is None:
        return EX_CONFIG
    ruleset = config.ruleset
    if args.python:
        print(ruleset.source, end="")
        print(f"# compiled as {ruleset.program.__code__.co_filename}")
        print("\n".join(legend(ruleset.program)))
        return 0
    for line in ruleset.describe():
        print(line)
    if config.dns.lists:
        print("dns lists:")
        for _, dns_list in sorted(config.dns.lists.items()):
            print(f"    {dns_list.describe()}")
    from postgate.commands.state import show_lines

    for line in show_lines(config, time.time()):
        print(line)
    return 0


def _codes(argv: list[str]) -> int:
    from postgate.commands.codes import main as codes_main

    return codes_main(argv, sys.stdout)


def _replay(argv: list[str]) -> int:
    from postgate.commands.rule_tests import replay_main

    return replay_main(argv, sys.stdout, sys.stderr, sys.stdin)


def _diff(argv: list[str]) -> int:
    from postgate.commands.rule_tests import diff_main

    return diff_main(argv, sys.stdout, sys.stderr, sys.stdin)


def _test(argv: list[str]) -> int:
    from postgate.commands.rule_tests import test_main

    return test_main(argv, sys.stdout, sys.stderr)


def _ask(argv: list[str]) -> int:
    from postgate.commands.ask import main as ask_main

    return ask_main(argv, sys.stdout, sys.stderr, sys.stdin)


def _status(argv: list[str]) -> int:
    from postgate.commands.status import main as status_main

    return status_main(argv, sys.stdout, sys.stderr)


def _state(argv: list[str]) -> int:
    from postgate.commands.state import main as state_main

    return state_main(argv, sys.stdout, sys.stderr)


_TOOLS: Final = {
    "codes": _codes,
    "replay": _replay,
    "diff": _diff,
    "test": _test,
    "ask": _ask,
    "status": _status,
    "state": _state,
}


def _run(args: argparse.Namespace) -> int:
    listen = tuple(args.listen or ())
    for endpoint in listen:
        problem = endpoint_problem(endpoint)
        if problem:
            print(f"postgate: --listen {problem}", file=sys.stderr)
            return 2
    config = _load(args.config, sys.stderr)
    if config is None:
        return EX_CONFIG
    from twisted.internet import reactor, task

    from postgate.daemon import logs

    logs.configure(config.daemon.log_level, config.daemon.log_format, schedule=reactor.callLater)
    logs.bridge_twisted(config.daemon.log_level)
    daemon = _start(config, listen, reactor)
    if daemon is None:
        return 1
    task.react(_serve, (daemon,))
    return 0  # react() exits the process itself


def _start(config: Config, listen: tuple[str, ...], reactor: Any) -> Daemon | None:
    """Bind every listener before the reactor runs: a failure is one log line, exit 1.

    Inside the reactor, Twisted would log the failure again with a traceback
    and "Main loop terminated"; an admin needs the one reason.
    """
    import os

    from postgate.daemon.logs import journal_wanted
    from postgate.daemon.service import Daemon
    from postgate.daemon.systemd import Notifier

    try:
        daemon = Daemon(config, reactor, Notifier.from_environ(), listen)
        daemon.start()
    except Exception as exc:  # noqa: BLE001 - any bind error must end the start loudly
        # The journal files a line by its syslog prefix: <3> is an error.
        journal = journal_wanted(os.environ, cast("BinaryIO", sys.stderr))  # only fileno() is used
        level = "<3>" if journal else ""
        print(f"{level}postgate: cannot start: {_reason(exc)}", file=sys.stderr)
        return None
    return daemon


def _reason(exc: Exception) -> str:
    # CannotListenError's own text is already a sentence; others may be bare.
    text = str(exc) or type(exc).__name__
    return text.removesuffix(".")


def _serve(reactor: Any, daemon: Daemon) -> Deferred[None]:
    from twisted.internet.defer import Deferred

    # All are in place before the daemon announces itself (`started`,
    # READY=1) on the first reactor turn, after Twisted's own SIGTERM handler.
    reactor.addSystemEventTrigger("before", "shutdown", daemon.stop)
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(daemon.reload))
    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(daemon.toggle_recording))
    return Deferred()
