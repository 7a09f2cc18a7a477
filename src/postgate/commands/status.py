"""``postgate status``: ask the running daemon over its control socket what it is doing.

The socket is the config's ``[control] socket`` (only that table is read, so
a config being edited cannot stop the report) or ``--socket``. Human-readable
by default; ``--json`` prints the daemon's object as it came.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from postgate.commands.control_client import ControlError, request
from postgate.commands.rule_tests import config_option

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TextIO

EX_UNAVAILABLE = 69  # sysexits: the daemon cannot be reached


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postgate status",
        description="Show what the running daemon is doing (from its control socket).",
    )
    config_option(parser, "configuration file whose [control] socket to use")
    parser.add_argument("--socket", type=Path, help="the control socket (instead of the config's)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def socket_path(config: Path) -> Path | None:
    """``[control] socket`` of ``config``, relative to its directory; None when unset."""
    doc = tomllib.loads(config.read_text(encoding="utf-8"))
    table = doc.get("control", {})
    value = table.get("socket") if isinstance(table, dict) else None
    if not isinstance(value, str) or not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else config.parent / path


def main(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    args = _parser().parse_args(argv)
    path = args.socket
    if path is None:
        try:
            path = socket_path(args.config)
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            err.write(f"postgate status: {args.config}: {exc}\n")
            return 78
        if path is None:
            err.write(f"postgate status: {args.config} has no [control] socket; or use --socket\n")
            return 78
    try:
        report = request(path, "status")
    except ControlError as exc:
        err.write(f"postgate status: {exc}\n")
        return EX_UNAVAILABLE
    if args.json:
        out.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.writelines(f"{line}\n" for line in human(report))
    return 0


def human(r: dict[str, Any]) -> list[str]:
    """The report for a terminal: one topic a line, the rules as a table."""
    conns, reqs, rec = r["connections"], r["requests"], r["recording"]
    lines = [
        f"postgate {r['version']} (pid {r['pid']}), up {_span(r['uptime_seconds'])}",
        f"started     {r['started']}",
        f"config      {r['config']}: {r['rules']} rules, digest {r['digest']}"
        + (" (dry_run: every answer sent as DUNNO)" if r["dry_run"] else ""),
        f"reload      {_reload(r['last_reload'])}",
        "listening   " + "; ".join(f"{k} {', '.join(v)}" for k, v in r["listeners"].items() if v),
        f"connections {conns['open']} open (max {conns['max']}); refused: "
        + ", ".join(f"{k} {v}" for k, v in conns["refused"].items())
        + f"; protocol errors {conns['protocol_errors']}",
        f"requests    {reqs['answered']} answered, {reqs['errors']} errors"
        + (
            ": " + ", ".join(f"{k} {v}" for k, v in reqs["by_state"].items())
            if reqs["by_state"]
            else ""
        ),
        f"recording   {'on' if rec['enabled'] else 'off'}"
        + (f" ({rec['path']})" if rec["path"] else "")
        + f", {rec['written']} written, {rec['dropped']} dropped",
        "state       "
        + ("no state backend (no rule keeps state)" if r["state"] is None else _state(r["state"])),
    ]
    lines += _table("decisions since start", r["decisions"])
    lines += _table('observed (would have answered; mode = "observe")', r["observed"])
    return lines


def _table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return [f"{title}: none"]
    width = max(len(str(row["count"])) for row in rows)
    return [f"{title}:"] + [
        f"  {row['count']:>{width}}  {row['class']:<5}  {row['rule']}" for row in rows
    ]


def _reload(last: dict[str, Any] | None) -> str:
    if last is None:
        return "none since start"
    if last["result"] == "ok":
        return f"ok at {last['at']} (digest {last['digest']})"
    return f"FAILED at {last['at']}, old rules kept: " + "; ".join(last.get("errors", []))


def _state(state: Any) -> str:
    return orjson.dumps(state).decode()


def _span(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"


__all__ = ["human", "main", "socket_path"]
