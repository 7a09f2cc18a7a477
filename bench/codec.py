"""Micro benchmark of the policy codec: microseconds per decoded request.

Not a test. The decoder runs once per request on every connection, so this
is the number to watch when protocol.py changes. The request is a Postfix 3.8
RCPT request with TLS and SASL values filled in (31 attributes, 966 bytes),
fed the way Postfix writes it (whole), in 16-byte chunks (a slow or
hostile peer), and 100 at a time (a pipelining test client).

Run: .venv/bin/python bench/codec.py [--rounds N]
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from postgate.wire.codec import Decoder, encode, encode_request

if TYPE_CHECKING:
    from collections.abc import Callable

ATTRIBUTES = {
    "request": "smtpd_access_policy",
    "protocol_state": "RCPT",
    "protocol_name": "ESMTP",
    "client_address": "2001:db8:4:1::25",
    "client_name": "mail.client.example.net",
    "client_port": "50626",
    "reverse_client_name": "mail.client.example.net",
    "server_address": "2001:db8:10::1",
    "server_port": "587",
    "helo_name": "mail.client.example.net",
    "sender": "alice.sender@client.example.net",
    "recipient": "bob.recipient@example.com",
    "recipient_count": "0",
    "queue_id": "",
    "instance": "25be.6b0b7c2f.1bba5.0",
    "size": "48213",
    "etrn_domain": "",
    "stress": "",
    "sasl_method": "PLAIN",
    "sasl_username": "alice",
    "sasl_sender": "",
    "ccert_subject": "mail.client.example.net",
    "ccert_issuer": "Example+20Issuing+20CA",
    "ccert_fingerprint": ":".join(["5C"] * 32),
    "ccert_pubkey_fingerprint": ":".join(["A7"] * 32),
    "encryption_protocol": "TLSv1.3",
    "encryption_cipher": "TLS_AES_256_GCM_SHA384",
    "encryption_keysize": "256",
    "policy_context": "submission",
    "compatibility_level": "3.6",
    "mail_version": "3.8.6",
}


def per_request(run: Callable[[], int], rounds: int) -> float:
    """Best of five runs, in microseconds per decoded request."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter_ns()
        decoded = sum(run() for _ in range(rounds))
        best = min(best, (time.perf_counter_ns() - start) / 1000 / decoded)
    return best


def fed_in(wire: bytes, size: int) -> Callable[[], int]:
    chunks = [wire[i : i + size] for i in range(0, len(wire), size)]
    decoder = Decoder()

    def run() -> int:
        return sum(len(decoder.feed(chunk)) for chunk in chunks)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    rounds = parser.parse_args().rounds
    wire = encode_request(ATTRIBUTES)
    reply = "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.example"
    cases = {
        "whole": fed_in(wire, len(wire)),
        "16-byte chunks": fed_in(wire, 16),
        "100 per feed": fed_in(wire * 100, len(wire) * 100),
        "CRLF, whole": fed_in(wire.replace(b"\n", b"\r\n"), len(wire) * 2),
    }
    print(f"request: {len(ATTRIBUTES)} attributes, {len(wire)} bytes; {rounds} rounds, best of 5")
    for name, run in cases.items():
        scale = 100 if name.startswith("100") else 1
        print(f"  decode {name:<16} {per_request(run, rounds // scale):7.2f} us/request")

    def encode_one() -> int:
        encode(reply)
        return 1

    encoded = per_request(encode_one, rounds)
    print(f"  encode reply             {encoded:7.2f} us/reply")


if __name__ == "__main__":
    main()
