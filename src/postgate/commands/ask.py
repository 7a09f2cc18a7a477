"""``postgate ask``: send one request to a running daemon and print its answer.

The hand query an admin makes after starting postgate, without netcat and
without typing Postfix's framing: ``postgate ask protocol_state=RCPT
sender=a@example.net`` (or ``name=value`` lines on standard input). The
daemon is found from the config's ``listen`` (its first ``tcp:``, ``tcp6:``
or ``unix:`` endpoint) unless ``--server`` names it. A plain blocking
socket: one request, one answer, no reactor.
"""

from __future__ import annotations

import argparse
import socket
import tomllib
from typing import TYPE_CHECKING, Final

from postgate.commands.rule_tests import config_option
from postgate.config.load import DEFAULT_LISTEN, endpoint_values
from postgate.wire.codec import EncodeError, encode_request

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path
    from typing import TextIO

TIMEOUT: Final = 10.0
MAX_ANSWER: Final = 65536
EX_UNAVAILABLE: Final = 69  # sysexits: the daemon could not be reached

Address = tuple[int, str | tuple[str, int]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postgate ask",
        description="Send one policy request to a running postgate and print the answer.",
        epilog="Without ATTRIBUTE arguments, name=value lines are read from standard "
        "input (Postfix's own format). request=smtpd_access_policy is added when missing.",
    )
    config_option(parser, "find the daemon from this config's listen")
    parser.add_argument(
        "--server",
        metavar="ADDRESS",
        help="HOST:PORT, [IPv6]:PORT or a UNIX socket path, instead of the config's listen",
    )
    parser.add_argument("attributes", nargs="*", metavar="ATTRIBUTE", help="name=value")
    return parser


def main(argv: Sequence[str], out: TextIO, err: TextIO, stdin: TextIO) -> int:
    args = _parser().parse_args(argv)
    try:
        attrs = _attributes(args.attributes or stdin.read().splitlines())
        address = _server(args.server) if args.server else _from_config(args.config)
        request = encode_request(attrs)
    except (ValueError, EncodeError) as exc:
        err.write(f"postgate ask: {exc}\n")
        return 2
    try:
        answer = _exchange(address, request)
    except OSError as exc:
        err.write(f"postgate ask: {_shown(address)}: {exc.strerror or exc}\n")
        return EX_UNAVAILABLE
    out.write(answer + "\n")
    return 0


def _attributes(items: Sequence[str]) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for item in items:
        if not item.strip():
            if attrs:
                break  # an empty line ends a request, as on the wire
            continue
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ValueError(f"{item!r} is not name=value")
        attrs[name] = value
    if "request" not in attrs:
        attrs = {"request": "smtpd_access_policy", **attrs}
    return attrs


def _server(text: str) -> Address:
    if "/" in text:
        return socket.AF_UNIX, text
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not host:
        raise ValueError(f"--server {text!r}: write HOST:PORT, [IPv6]:PORT or a socket path")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host, int(port))


def _from_config(path: Path) -> Address:
    """The first endpoint of ``listen`` that can be reached without systemd."""
    listen: object = DEFAULT_LISTEN
    if path.exists():
        try:
            listen = tomllib.loads(path.read_text()).get("daemon", {}).get("listen", listen)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError) as exc:
            raise ValueError(f"{path}: cannot read listen: {exc}; give --server") from None
    for endpoint in listen if isinstance(listen, list | tuple) else ():
        found = _endpoint_address(str(endpoint))
        if found is not None:
            return found
    raise ValueError(f"{path}: no tcp:, tcp6: or unix: endpoint in listen; give --server")


def _endpoint_address(endpoint: str) -> Address | None:
    kind, _, rest = endpoint.partition(":")
    values = endpoint_values(kind, rest)
    if kind == "unix":
        path = values.get("address", "")
        return (socket.AF_UNIX, path) if path else None
    if kind in ("tcp", "tcp6"):
        port = values.get("port", "")
        six = kind == "tcp6"
        host = values.get("interface") or ("::1" if six else "127.0.0.1")
        if host in ("0.0.0.0", "::"):  # noqa: S104 - a wildcard listener is reached on loopback
            host = "::1" if six else "127.0.0.1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return (family, (host, int(port))) if port.isdigit() else None
    return None


def _exchange(address: Address, request: bytes) -> str:
    family, where = address
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(where)
        sock.sendall(request)
        data = b""
        while b"\n\n" not in data and len(data) < MAX_ANSWER:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    if b"\n\n" not in data:
        raise ConnectionError(0, "the connection closed without an answer")
    return data.split(b"\n", 1)[0].decode("utf-8", "replace")


def _shown(address: Address) -> str:
    where = address[1]
    return where if isinstance(where, str) else f"{where[0]}:{where[1]}"


__all__ = ["main"]
