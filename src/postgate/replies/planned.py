"""Features postgate does not have yet, and what to run beside it meanwhile.

A postfwd or policyd admin writes ``rate = ...`` or ``reply = "rate_limited"``
first; a did-you-mean towards some other key would hide that the feature is
missing. Config keys and the named replies that belong to these features
are refused with the sentence below instead. Imports nothing from postgate.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

_RATE: Final = (
    'rate limits are written limit = { key = ["sasl_username"], windows = ["100 per hour"] } '
    "in a rule (docs/rules.md, Rate limits)"
)
_SPF: Final = "SPF checks are not supported yet: keep postfix-policyd-spf-python beside postgate"
_CONNECTIONS: Final = (
    "connection counting is not supported yet: use Postfix's smtpd_client_connection_count_limit"
)

# Config keys (a rule's or a top-level table) an admin reaches for first.
KEYS: Final = MappingProxyType(
    {
        **dict.fromkeys(("rate", "rate_limit", "ratelimit", "rates", "limits", "quota"), _RATE),
        "spf": _SPF,
    }
)

# Named replies whose scenario needs one of those features.
REPLIES: Final = MappingProxyType(
    {
        "too_many_connections": _CONNECTIONS,
        "spf_fail": _SPF,
        "spf_temperror": _SPF,
        "spf_permerror": _SPF,
    }
)

__all__ = ["KEYS", "REPLIES"]
