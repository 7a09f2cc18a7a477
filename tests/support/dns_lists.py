"""The DNS lists the DNS-list tests share: two ranges of one zone, an RHSBL for the
sender domain and for HELO, and an allow list that subtracts (by bit mask).

The unit tests answer them from a ``[dns.answers]`` table, the integration
tests from a private NSD serving the same zones.
"""

from __future__ import annotations

from typing import Final

LISTS: Final = """
[dns.lists.zen]
zone = "zen.example"
answers = ["127.0.0.[2..11]"]
weight = 3

[dns.lists.pbl]
zone = "zen.example"
answers = ["127.0.0.[10;11]"]
weight = 1

[dns.lists.dbl]
zone = "dbl.example"
query = "sender_domain"
weight = 2

[dns.lists.helo]
zone = "dbl.example"
query = "helo_name"
weight = 1

[dns.lists.wl]
zone = "wl.example"
mask = "0.0.0.2"
weight = -4
"""
