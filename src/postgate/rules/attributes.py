"""The attribute names a rule may test, and how each one compares.

Owns the catalogue only: which names Postfix sends (docs/protocol.md, Attributes),
which ones postgate derives from them, which compare case-insensitively and
which are numbers. Imports nothing from postgate, so every other module of the
engine can lean on it.
"""

from __future__ import annotations

from typing import Final

# In Postfix 3.7 wire order (docs/protocol.md, An observed request), then the
# 3.8+/3.12 names.
POSTFIX: Final = (
    "request",
    "protocol_state",
    "protocol_name",
    "client_address",
    "client_name",
    "client_port",
    "reverse_client_name",
    "server_address",
    "server_port",
    "helo_name",
    "sender",
    "recipient",
    "recipient_count",
    "queue_id",
    "instance",
    "size",
    "etrn_domain",
    "stress",
    "sasl_method",
    "sasl_username",
    "sasl_sender",
    "ccert_subject",
    "ccert_issuer",
    "ccert_fingerprint",
    "ccert_pubkey_fingerprint",
    "encryption_protocol",
    "encryption_cipher",
    "encryption_keysize",
    "policy_context",
    "compatibility_level",
    "mail_version",
    "tls_sni",
)

# Derived from `sender` / `recipient`, split at the last "@" (a quoted local
# part may itself contain "@").
DERIVED: Final = {
    "sender_domain": "sender",
    "sender_localpart": "sender",
    "recipient_domain": "recipient",
    "recipient_localpart": "recipient",
}

KNOWN: Final = POSTFIX + tuple(DERIVED)

NUMERIC: Final = frozenset(
    {"size", "recipient_count", "encryption_keysize", "client_port", "server_port"}
)

IP: Final = frozenset({"client_address", "server_address"})

ADDRESS: Final = frozenset({"sender", "recipient", "sasl_sender"})

DOMAIN: Final = frozenset(
    {
        "sender_domain",
        "recipient_domain",
        "helo_name",
        "client_name",
        "reverse_client_name",
        "etrn_domain",
        "tls_sni",
    }
)

FINGERPRINT: Final = frozenset({"ccert_fingerprint", "ccert_pubkey_fingerprint"})

# Names, addresses and protocol words are case-insensitive in SMTP and DNS;
# login names, certificate names and free text are compared as sent.
FOLDED: Final = (
    ADDRESS
    | DOMAIN
    | FINGERPRINT
    | frozenset(
        {
            "sender_localpart",
            "recipient_localpart",
            "request",
            "protocol_state",
            "protocol_name",
            "sasl_method",
            "stress",
            "encryption_protocol",
            "encryption_cipher",
        }
    )
)

# The values of protocol_state (docs/protocol.md, When Postfix asks).
STATES: Final = (
    "CONNECT",
    "EHLO",
    "HELO",
    "MAIL",
    "RCPT",
    "DATA",
    "END-OF-MESSAGE",
    "VRFY",
    "ETRN",
)
