"""``[log]``: how much of a sender, recipient and client address the logs keep.

The ``decision``, ``observed`` and error events carry the request's
protocol_state, client_address, sender and recipient. Under ``[log]
addresses = "hash"`` the local parts become a keyed hash, as recording's
redaction makes them (`postgate.record.blocks.Redactor`): the same address
always reads the same, so one sender's trail can still be followed, but
nobody without the key can tell whose it is. ``"drop"`` keeps the domain
only. ``client_address = "network"`` keeps the /24 (IPv4) or /48 (IPv6).
Metrics never carry any of these (`postgate.daemon.stats`).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

import structlog

from postgate.record.blocks import KeyFileError, Redactor, load_key

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from postgate.config.ops import LogSettings

    Fields = Callable[[Mapping[str, str]], dict[str, str]]

log = structlog.get_logger("postgate")


def redactor(settings: LogSettings) -> Fields | None:
    """What the logs show of a request's fields, or None when they show them as they are.

    A hash key that cannot be read falls back to dropping local parts: the
    log must never say more than the admin asked for.
    """
    if not settings.redacts:
        return None
    local = _local(settings)
    client = _client(settings.client_address)

    def fields(raw: Mapping[str, str]) -> dict[str, str]:
        get = raw.get
        return {
            "protocol_state": get("protocol_state", ""),
            "client_address": client(get("client_address", "")),
            "sender": local(get("sender", "")),
            "recipient": local(get("recipient", "")),
        }

    return fields


def _local(settings: LogSettings) -> Callable[[str], str]:
    if settings.addresses == "keep":
        return str
    if settings.addresses == "hash" and settings.key is not None:
        try:
            return Redactor(load_key(settings.key)).address
        except (OSError, KeyFileError) as exc:  # the reason is the whole story: no traceback
            log.error(  # noqa: TRY400
                "log_key_unusable", key=str(settings.key), error=str(exc), fallback="drop"
            )
    return _drop_local


def _drop_local(value: str) -> str:
    local, at, domain = value.rpartition("@")
    return f"@{domain}" if at and local else ("" if not at else value)


def _client(mode: str) -> Callable[[str], str]:
    if mode == "keep":
        return str
    if mode == "drop":
        return lambda _: ""
    return _network


def _network(value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return "" if value != "unknown" else value  # Postfix's word for a client it could not name
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


__all__ = ["redactor"]
