"""Deterministic benchmark corpus: the list files and the requests, with expected answers.

A run is only comparable with another if both replay the same requests, so
everything comes from one seeded generator (no set iteration, no clock).
The mix imitates a small provider's MX and submission service seen through
Postfix 3.7: mostly RCPT requests (one per recipient), some DATA and
END-OF-MESSAGE; IPv4 and IPv6 clients; TLS and plaintext; authenticated
submission; relay attempts; listed clients and senders; spamtraps; bad HELOs;
dynamic and unresolvable client names; declared and actual sizes. Every
request carries every attribute Postfix 3.7 sends (docs/protocol.md, An observed request),
and `client_port` differs from one request to the next so that a server's
exact-request cache (postfwd has one) cannot answer from memory.

The expected answer of each request comes from `reference.decide`, an
independent restatement of the reference ruleset, applied to the list files
as written to disk. Output (all in --out):

    lists/*.txt      the five reference lists, one entry per line
    requests.txt     the corpus: `# expect: ACTION` then the request, per block
    summary.json     seed, sizes, and how many requests each rule answers

Run: .venv/bin/python bench/corpus.py --out bench/out/corpus [--seed 1]
     [--requests 20000] [--list-size 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import LIST_FILES, Lists, decide, domain_hazards, load_lists

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SYLLABLES: Final = (
    "al",
    "ber",
    "cor",
    "dan",
    "el",
    "fin",
    "gar",
    "hol",
    "in",
    "jas",
    "kor",
    "lin",
    "mar",
    "nor",
    "ol",
    "pen",
    "qua",
    "ros",
    "sel",
    "tor",
    "ul",
    "ven",
    "wes",
    "xan",
    "yor",
    "zel",
)
TLDS: Final = ("com", "net", "org", "de", "fr", "nl", "io", "co.uk", "example")
FIRST: Final = ("anna", "ben", "carla", "dirk", "eva", "frank", "gina", "hugo", "ines", "jan")
LAST: Final = ("meyer", "smith", "garcia", "rossi", "novak", "berg", "lund", "costa", "klein")
ROLES: Final = ("info", "sales", "support", "billing", "noreply", "newsletter", "hr", "office")
DYNAMIC_WORDS: Final = ("dyn", "dynamic", "dsl", "adsl", "ppp", "pool", "dhcp", "cable")
# Every public /8 used for generated clients avoids mynetworks and the
# special ranges, so whether a client is inside mynetworks is always a choice.
PUBLIC_FIRST_OCTETS: Final = tuple(
    n for n in range(11, 224) if n not in {100, 127, 169, 172, 192, 198, 203}
)
TLS_SUITES: Final = (
    ("TLSv1.3", "TLS_AES_256_GCM_SHA384", "256"),
    ("TLSv1.3", "TLS_AES_128_GCM_SHA256", "128"),
    ("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384", "256"),
    ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", "128"),
)
WEAK_SUITE: Final = ("TLSv1", "DES-CBC3-SHA", "112")
SPREAD_HOSTS: Final = ("mail", "mx", "smtp", "out", "relay", "mta1", "mta2", "mx-out")


class Words:
    """Deterministic, pronounceable names; never the same one twice."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def label(self) -> str:
        while True:
            parts = [self.rng.choice(SYLLABLES) for _ in range(self.rng.randint(2, 3))]
            word = "".join(parts) + str(self.rng.randint(1, 999))
            if word not in self.used:
                self.used.add(word)
                return word

    def domain(self) -> str:
        return f"{self.label()}.{self.rng.choice(TLDS)}"


# ---------- lists ----------


@dataclass(frozen=True, slots=True)
class ListContents:
    local_domains: list[str]
    sender_blocklist: list[str]
    client_blocklist: list[str]
    spamtraps: list[str]
    trusted_certs: list[str]


def fingerprint(rng: random.Random) -> str:
    """A SHA-256 fingerprint as Postfix prints it: uppercase hex pairs with colons."""
    return ":".join(f"{rng.randrange(256):02X}" for _ in range(32))


def blocklist_network(rng: random.Random) -> str:
    first = rng.choice(PUBLIC_FIRST_OCTETS)
    value = (first << 24) | rng.randrange(1 << 24)
    length = rng.choices((32, 24, 22, 20, 16, 28), weights=(60, 25, 5, 4, 3, 3))[0]
    start = value >> (32 - length) << (32 - length)
    dotted = ".".join(str(start >> shift & 255) for shift in (24, 16, 8, 0))
    return dotted if length == 32 else f"{dotted}/{length}"


def make_lists(rng: random.Random, words: Words, size: int) -> ListContents:
    local = [words.domain() for _ in range(size)]
    traps = [f"{words.label()}@{rng.choice(local)}" for _ in range(size)]
    return ListContents(
        local_domains=local,
        sender_blocklist=[words.domain() for _ in range(size)],
        client_blocklist=list(dict.fromkeys(blocklist_network(rng) for _ in range(size * 2)))[
            :size
        ],
        spamtraps=traps,
        trusted_certs=[fingerprint(rng) for _ in range(size)],
    )


def write_lists(contents: ListContents, directory: Path, seed: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for key, filename in LIST_FILES.items():
        entries: list[str] = getattr(contents, key)
        header = f"# {filename}: {len(entries)} entries, generated by bench/corpus.py seed {seed}\n"
        (directory / filename).write_text(header + "".join(e + "\n" for e in entries), "utf-8")


# ---------- requests ----------


class Generator:
    """Builds one request at a time from client profiles and transaction shapes."""

    def __init__(self, rng: random.Random, words: Words, lists: ListContents) -> None:
        self.rng = rng
        self.words = words
        self.lists = lists
        self.external = [words.domain() for _ in range(2000)]
        self.serial = 0

    # -- small pieces --

    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability

    def vary_case(self, text: str) -> str:
        """Postfix passes names as the client wrote them; some clients shout."""
        if not self.chance(0.05):
            return text
        return text.upper() if self.chance(0.5) else text.title()

    def localpart(self) -> str:
        pick = self.rng.random()
        if pick < 0.6:
            return f"{self.rng.choice(FIRST)}.{self.rng.choice(LAST)}"
        if pick < 0.85:
            return self.rng.choice(ROLES)
        return f"bounce-{self.rng.randrange(10**6)}-{self.rng.choice(FIRST)}"

    def address(self, domain: str) -> str:
        return f"{self.localpart()}@{self.vary_case(domain)}"

    def public_ipv4(self) -> str:
        first = self.rng.choice(PUBLIC_FIRST_OCTETS)
        return ".".join(str(n) for n in (first, *(self.rng.randrange(256) for _ in range(3))))

    def public_ipv6(self) -> str:
        groups = [f"{self.rng.randrange(1 << 16):x}" for _ in range(3)]
        return f"2a0{self.rng.randrange(10)}:{':'.join(groups)}::{self.rng.randrange(1, 1 << 16):x}"

    def listed_client(self) -> str:
        entry = self.rng.choice(self.lists.client_blocklist)
        base, _, length = entry.partition("/")
        if not length:
            return base
        octets = [int(n) for n in base.split(".")]
        value = sum(o << s for o, s in zip(octets, (24, 16, 8, 0), strict=True))
        value += self.rng.randrange(1 << (32 - int(length)))
        return ".".join(str(value >> s & 255) for s in (24, 16, 8, 0))

    def mynetworks_client(self) -> str:
        octet = self.rng.randrange
        first, second = self.rng.choice(((10, octet(256)), (192, 168), (172, octet(16, 32))))
        if self.chance(0.1):
            return "127.0.0.1"
        return f"{first}.{second}.{octet(256)}.{octet(1, 255)}"

    def hostname(self) -> str:
        return f"{self.rng.choice(SPREAD_HOSTS)}.{self.rng.choice(self.external)}"

    def dynamic_name(self, address: str) -> str:
        word = self.rng.choice(DYNAMIC_WORDS)
        digits = str(self.rng.randrange(100)) if self.chance(0.5) else ""
        dashed = address.replace(".", "-").replace(":", "-")
        isp = self.rng.choice(self.external)
        return self.rng.choice(
            (f"{dashed}.{word}{digits}.{isp}", f"{word}{digits}-{dashed}.{isp}", f"{word}.{isp}")
        )

    def near_miss_name(self) -> str:
        """Names that contain a dynamic word without the separators the rule needs."""
        word = self.rng.choice(DYNAMIC_WORDS)
        return f"{word}{self.words.label()}.{self.rng.choice(self.external)}"

    # -- client profiles: address, names, HELO --

    def client(self) -> dict[str, str]:
        kind = self.rng.choices(
            ("mta", "listed", "dynamic", "unknown", "half-unknown", "near-dynamic"),
            weights=(70, 5, 8, 6, 3, 2),
        )[0]
        address = self.listed_client() if kind == "listed" else self.external_address()
        name = self.hostname()
        attrs = {"client_address": address, "client_name": name, "reverse_client_name": name}
        if kind == "dynamic":
            attrs["client_name"] = attrs["reverse_client_name"] = self.dynamic_name(address)
        elif kind == "unknown":
            attrs["client_name"] = attrs["reverse_client_name"] = self.vary_case("unknown")
        elif kind == "half-unknown":
            attrs["client_name"] = "unknown"
        elif kind == "near-dynamic":
            attrs["client_name"] = attrs["reverse_client_name"] = self.near_miss_name()
        attrs["helo_name"] = self.helo(attrs)
        return attrs

    def external_address(self) -> str:
        return self.public_ipv6() if self.chance(0.25) else self.public_ipv4()

    def helo(self, attrs: dict[str, str]) -> str:
        pick = self.rng.random()
        if pick < 0.02:
            return self.vary_case("localhost")
        if pick < 0.05:
            return self.public_ipv4()
        if pick < 0.06:
            return f"[{self.public_ipv4()}]"  # an address literal is not a bare IP
        if pick < 0.07:
            return "localhost.localdomain"  # near miss of the localhost rule
        name = attrs["client_name"]
        return self.vary_case(name if name.lower() != "unknown" else self.hostname())

    # -- sessions --

    def tls(self, attrs: dict[str, str], suite: tuple[str, str, str] | None) -> None:
        protocol, cipher, bits = suite or ("", "", "0")
        attrs.update(encryption_protocol=protocol, encryption_cipher=cipher)
        attrs["encryption_keysize"] = bits
        fp, pubkey = "", ""
        if suite and self.chance(0.08):
            trusted = self.chance(0.4)
            fp = self.rng.choice(self.lists.trusted_certs) if trusted else fingerprint(self.rng)
            pubkey = fingerprint(self.rng)
        attrs.update(ccert_fingerprint=fp, ccert_pubkey_fingerprint=pubkey)

    def inbound(self) -> dict[str, str]:
        """An MX session from the internet: unauthenticated, mostly TLS."""
        attrs = self.client()
        attrs["server_port"] = "25"
        suite = self.rng.choice(TLS_SUITES) if self.chance(0.6) else None
        self.tls(attrs, suite)
        attrs.update(sasl_method="", sasl_username="")
        attrs["sender"] = self.inbound_sender()
        attrs["recipient"] = self.inbound_recipient()
        return attrs

    def inbound_sender(self) -> str:
        pick = self.rng.random()
        if pick < 0.04:
            return ""  # bounce
        if pick < 0.08:
            return self.address(self.rng.choice(self.lists.sender_blocklist))
        if pick < 0.12:
            return self.address(self.rng.choice(self.lists.local_domains))  # forged local
        return self.address(self.rng.choice(self.external))

    def inbound_recipient(self) -> str:
        pick = self.rng.random()
        if pick < 0.03:
            return self.vary_case(self.rng.choice(self.lists.spamtraps))
        if pick < 0.15:
            return self.address(self.rng.choice(self.external))  # relay attempt
        return self.address(self.rng.choice(self.lists.local_domains))

    def submission(self) -> dict[str, str]:
        """A logged-in user on port 587, or a host inside mynetworks."""
        internal = self.chance(0.35)
        address = self.mynetworks_client() if internal else self.external_address()
        name = self.hostname() if not internal else "localhost"
        attrs = {"client_address": address, "client_name": name, "reverse_client_name": name}
        attrs["helo_name"] = self.vary_case(name if self.chance(0.8) else "localhost")
        attrs["server_port"] = "25" if internal else "587"
        suite = self.rng.choice(TLS_SUITES) if self.chance(0.9) else None
        suite = WEAK_SUITE if suite and self.chance(0.03) else suite
        self.tls(attrs, suite)
        user = f"{self.rng.choice(FIRST)}{self.rng.randrange(1000)}"
        authenticated = not internal or self.chance(0.2)
        attrs["sasl_method"] = "plain" if authenticated else ""
        attrs["sasl_username"] = user if authenticated else ""
        local = self.rng.choice(self.lists.local_domains)
        attrs["sender"] = self.address(local)
        domains = self.external if self.chance(0.6) else self.lists.local_domains
        attrs["recipient"] = self.address(self.rng.choice(domains))
        return attrs

    # -- one request --

    def request(self) -> dict[str, str]:
        attrs = self.inbound() if self.chance(0.75) else self.submission()
        state = self.rng.choices(("RCPT", "DATA", "END-OF-MESSAGE"), weights=(82, 9, 9))[0]
        self.transaction(attrs, state)
        return self.wire_order(attrs, state)

    def transaction(self, attrs: dict[str, str], state: str) -> None:
        declared = self.message_size() if self.chance(0.5) else 0
        if state == "RCPT":
            attrs["recipient_count"] = "0"
            attrs["queue_id"] = self.queue_id() if self.chance(0.3) else ""
            attrs["size"] = str(declared)
            return
        count = self.recipient_count()
        attrs["recipient_count"] = str(count)
        attrs["queue_id"] = self.queue_id()
        if count != 1:
            attrs["recipient"] = ""  # Postfix sends it only for a single recipient
        actual = self.message_size()
        attrs["size"] = str(declared if state == "DATA" else actual)

    def message_size(self) -> int:
        if self.chance(0.03):
            return self.rng.randint(10485761, 40000000)
        if self.chance(0.01):
            return 10485760  # exactly the limit: not over it
        return int(self.rng.lognormvariate(10, 1.6)) + 300

    def recipient_count(self) -> int:
        if self.chance(0.08):
            return self.rng.randint(51, 400)
        if self.chance(0.02):
            return 50
        return self.rng.choices((1, 2, 3, 5, 10, 25), weights=(60, 15, 10, 8, 5, 2))[0]

    def instance(self) -> str:
        """pid.seconds.microseconds.sequence in hex, as smtpd makes it (docs/protocol.md)."""
        pid, sec, usec = (self.rng.randrange(1 << n) for n in (16, 31, 20))
        return f"{pid:x}.{sec:x}.{usec:x}.0"

    def queue_id(self) -> str:
        return "".join(self.rng.choice("0123456789ABCDEF") for _ in range(11))

    def wire_order(self, attrs: dict[str, str], state: str) -> dict[str, str]:
        """All attributes, in Postfix 3.7's order (docs/protocol.md, An observed request)."""
        self.serial += 1
        v6 = ":" in attrs["client_address"]
        return {
            "request": "smtpd_access_policy",
            "protocol_state": state,
            "protocol_name": "ESMTP" if self.chance(0.97) else "SMTP",
            "client_address": attrs["client_address"],
            "client_name": attrs["client_name"],
            "client_port": str(1024 + (self.serial * 7919) % 64511),
            "reverse_client_name": attrs["reverse_client_name"],
            "server_address": "2001:db8:25::25" if v6 else "192.0.2.25",
            "server_port": attrs["server_port"],
            "helo_name": attrs["helo_name"],
            "sender": attrs["sender"],
            "recipient": attrs["recipient"],
            "recipient_count": attrs["recipient_count"],
            "queue_id": attrs["queue_id"],
            "instance": self.instance(),
            "size": attrs["size"],
            "etrn_domain": "",
            "stress": "",
            "sasl_method": attrs["sasl_method"],
            "sasl_username": attrs["sasl_username"],
            "sasl_sender": "",
            "ccert_subject": "",
            "ccert_issuer": "",
            "ccert_fingerprint": attrs["ccert_fingerprint"],
            "ccert_pubkey_fingerprint": attrs["ccert_pubkey_fingerprint"],
            "encryption_protocol": attrs["encryption_protocol"],
            "encryption_cipher": attrs["encryption_cipher"],
            "encryption_keysize": attrs["encryption_keysize"],
            "policy_context": "",
        }


def unambiguous(make: Callable[[], dict[str, str]], lists: Lists) -> dict[str, str]:
    """Draw until the answer does not depend on whether domain lists match subdomains."""
    while True:
        attrs = make()
        if not domain_hazards(attrs, lists):
            return attrs


def generate(seed: int, count: int, list_size: int, out: Path) -> Counter[int]:
    rng = random.Random(seed)
    words = Words(rng)
    contents = make_lists(rng, words, list_size)
    write_lists(contents, out / "lists", seed)
    lists = load_lists(out / "lists")
    generator = Generator(rng, words, contents)
    rules: Counter[int] = Counter()
    with (out / "requests.txt").open("w", encoding="utf-8") as stream:
        stream.write(f"# bench corpus: seed {seed}, {count} requests, lists of {list_size}\n")
        for index, block in enumerate(blocks(generator, lists, count, rules)):
            stream.write(block if index == 0 else "\n" + block)
    return rules


def blocks(generator: Generator, lists: Lists, count: int, rules: Counter[int]) -> Iterator[str]:
    for index in range(count):
        attrs = unambiguous(generator.request, lists)
        answer = decide(attrs, lists)
        rules[answer.rule] += 1
        body = "".join(f"{name}={value}\n" for name, value in attrs.items())
        yield f"# name: {index:06d} reference rule {answer.rule}\n# expect: {answer.action}\n{body}"


def generator_digest() -> str:
    """Changes whenever this generator or the oracle changes, so stale corpora are rebuilt."""
    here = Path(__file__).resolve().parent
    sources = b"".join((here / name).read_bytes() for name in ("corpus.py", "reference.py"))
    return hashlib.sha256(sources).hexdigest()[:12]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--list-size", type=int, default=1000)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rules = generate(args.seed, args.requests, args.list_size, args.out)
    summary = {
        "seed": args.seed,
        "requests": args.requests,
        "list_size": args.list_size,
        "generator": generator_digest(),
        "rules": {str(rule): rules[rule] for rule in range(1, 16)},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    missing = [rule for rule in range(1, 16) if not rules[rule]]
    if missing:
        print(f"corpus: no request is answered by rule(s) {missing}; raise --requests")
        return 1
    print(
        f"corpus: {args.requests} requests in {args.out}/requests.txt; per rule: {summary['rules']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
