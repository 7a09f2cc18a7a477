"""A daemon whose one rule echoes the recipient back, and what talking to it needs.

The reply carries the request's own value, so a reply that went to the wrong
request or connection shows at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from postgate.wire.codec import encode_request

if TYPE_CHECKING:
    from collections.abc import Iterator

ECHO = """\
[daemon]
listen = ["tcp:{port}:interface=127.0.0.1"]
log_level = "{level}"

[[rules]]
id = "ECHO"
action = "550 5.7.1 {word} {{recipient}}"
"""


def write_config(tmp_path: Path, port: int, word: str = "echo", level: str = "info") -> Path:
    path = tmp_path / "postgate.toml"
    path.write_text(ECHO.format(port=port, word=word, level=level))
    return path


def request(recipient: str, **extra: str) -> dict[str, str]:
    attrs = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "192.0.2.7",
        "sender": "s@example.org",
        "recipient": recipient,
    }
    attrs.update(extra)
    return attrs


def echo_reply(word: str, recipient: str) -> bytes:
    return f"action=550 5.7.1 {word} {recipient}\n\n".encode()


def conversation(conn: int, count: int = 50) -> Iterator[tuple[bytes, bytes]]:
    for seq in range(count):
        rcpt = f"c{conn}-n{seq}@example.com"
        yield encode_request(request(rcpt)), echo_reply("echo", rcpt)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
