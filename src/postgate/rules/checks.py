"""Rule keys that read gathered facts, each compiled to a `Check` on its rule.

A rate limit, a greylist or a DNS-list score cannot be decided from the
request alone: the key's compiler gives a `Check` (`postgate.rules.model`)
that names the facts it needs and decides from them. The answer step gathers
the facts before the decision and applies the check's effects after it
(docs/architecture.md, Facts and effects). A feature adds its key here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from postgate.rules import dnsbl, greylist
from postgate.rules.limits import compile_limit

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from postgate.rules.conditions import Context
    from postgate.rules.model import Check

    CheckCompiler = Callable[[Any, str, Context], Check | None]

# key in a [[rules]] table -> its compiler (value, place, context); None when
# the value is broken, after reporting it to the context's problems.
COMPILERS: Final[Mapping[str, CheckCompiler]] = {
    greylist.KEY: greylist.compile_greylist,
    "limit": compile_limit,
    "dnsbl": dnsbl.compile_listed,
    "dnsbl_score": dnsbl.compile_score,
}

# The named reply a rule with this key answers when it gives no action.
DEFAULT_REPLIES: Final[Mapping[str, str]] = {
    greylist.KEY: greylist.DEFAULT_REPLY,
    "limit": "rate_limited",
}

__all__ = ["COMPILERS", "DEFAULT_REPLIES"]
