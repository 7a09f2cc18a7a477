"""Named lists: read from the config or from files, checked line by line.

Each kind keeps its entries in the shape its lookup needs, so a request costs
a few hash probes whatever the list size: networks by prefix
length (`networks.NetworkSet`), domains as a set walked by label suffix,
addresses and strings as sets. Every bad entry is reported with its own
file and line; the good entries still load so one typo shows all the others.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from postgate.config.values import Values, check_keys
from postgate.rules import postgrey
from postgate.rules.domains import MAX_DOMAIN, DomainSet
from postgate.rules.networks import Network, NetworkSet, parse_network
from postgate.rules.patterns import Pattern, PatternError, compile_pattern

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

    from postgate.config.problems import Problems

KINDS: Final = (
    "network",
    "domain",
    "address",
    "string",
    "fingerprint",
    "pattern",
    postgrey.CLIENTS,  # postgrey's whitelist files, in their own format
    postgrey.RECIPIENTS,
)
LIST_KEYS: Final = ("type", "items", "file", "subdomains")
_COMMENT: Final = re.compile(r"(?:^|\s)#")
_SPACE: Final = re.compile(r"\s")
_SPACED: Final = "contains white space"
_NAME: Final = r"[^\s@/:#\[\]\\,;.]{1,63}"
_DOMAIN_NAME: Final = re.compile(rf"(?:{_NAME}\.)*{_NAME}")
_HEX: Final = re.compile(r"[0-9a-f]{32,128}")


@dataclass(frozen=True, slots=True)
class AddressSet:
    """Addresses, and ``@domain`` entries that stand for every address there."""

    addresses: frozenset[str]

    def __contains__(self, address: str) -> bool:
        if not address:
            return False
        if address in self.addresses:
            return True
        at = address.rfind("@")
        return at >= 0 and address[at:] in self.addresses

    @property
    def size(self) -> int:
        return len(self.addresses)

    def canonical(self) -> list[str]:
        return sorted(self.addresses)


@dataclass(frozen=True, slots=True)
class PatternSet:
    """Checked regexes (`patterns.compile_pattern`), kept in file order."""

    patterns: tuple[Pattern, ...]

    @property
    def size(self) -> int:
        return len(self.patterns)

    def canonical(self) -> list[str]:
        return [p.source for p in self.patterns]


Entries = (
    NetworkSet
    | DomainSet
    | AddressSet
    | PatternSet
    | postgrey.PostgreyClients
    | postgrey.PostgreyRecipients
    | frozenset[str]
)


@dataclass(frozen=True, slots=True)
class NamedList:
    """A loaded list: its kind decides which attributes it may be used with."""

    name: str
    kind: str
    entries: Entries
    size: int
    digest: str
    subdomains: bool = False

    def describe(self) -> str:
        below = ", with subdomains" if self.subdomains else ""
        return f"{self.name} ({self.kind}, {self.size} entries{below})"


def parse_entry(kind: str, text: str) -> tuple[object | None, str | None]:
    """Normalise one entry of a list of ``kind``; return (entry, problem)."""
    return _PARSERS[kind](text)


def _domain(text: str) -> tuple[object | None, str | None]:
    name = text.lower().removesuffix(".")
    if name.startswith(("*.", ".")):
        return None, f"{text!r}: write the plain domain and set subdomains = true on the list"
    if len(name) > MAX_DOMAIN or not _DOMAIN_NAME.fullmatch(name):
        return None, f"{text!r} is not a domain name"
    return name, None


def _address(text: str) -> tuple[object | None, str | None]:
    address = text.lower()
    local, at, domain = address.rpartition("@")
    if not at or not domain or _domain(domain)[1] is not None:
        return None, f"{text!r} is not an address (write local@domain, or @domain for all)"
    return (local + "@" + domain.removesuffix(".")), None


def _string(text: str) -> tuple[object | None, str | None]:
    return text, None


def _fingerprint(text: str) -> tuple[object | None, str | None]:
    value = text.replace(":", "").lower()
    if not _HEX.fullmatch(value) or len(value) % 2:
        return None, f"{text!r} is not a certificate fingerprint (hex digits, colons optional)"
    return value, None


_POSTFIX_TABLE: Final = re.compile(r"/(.*)/[a-zA-Z]*(?:\s+\S.*)?")


def _pattern(text: str) -> tuple[object | None, str | None]:
    """One regex per line; a Postfix regexp:/pcre: table line is refused with the fix."""
    table = _POSTFIX_TABLE.fullmatch(text)
    if table is not None:
        return None, (
            f"{text}: a Postfix table line; write {table.group(1)!r} alone, one pattern "
            "per line, and give the action to the rule"
        )
    try:
        return compile_pattern(text), None
    except PatternError as exc:
        return None, f"/{text}/: {exc}"


_PARSERS: Final[Mapping[str, Callable[[str], tuple[object | None, str | None]]]] = {
    "network": parse_network,
    "domain": _domain,
    "address": _address,
    "string": _string,
    "fingerprint": _fingerprint,
    "pattern": _pattern,
    postgrey.CLIENTS: postgrey.client_entry,
    postgrey.RECIPIENTS: postgrey.recipient_entry,
}


def read_list_file(path: Path) -> Iterator[tuple[int, str | None]]:
    """Yield (line number, entry) for every entry line; None for undecodable lines.

    ``#`` starts a comment at the start of a line or after white space, so an
    entry may be followed by a note. Raises OSError when the file is unreadable
    or is not a regular file: a FIFO or a device would block the reload that
    reads it for as long as nobody writes to it.
    """
    data = read_regular(path)
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield number, None
            continue
        if "#" in line:
            found = _COMMENT.search(line)
            line = line[: found.start()] if found else line
        line = line.strip()
        if line:
            yield number, line


def build_entries(kind: str, values: list[object], subdomains: bool) -> Entries:
    """Turn normalised entries into the lookup structure for their kind."""
    if kind == "network":
        return NetworkSet.build([v for v in values if isinstance(v, Network)])
    if kind == "pattern":
        return PatternSet(tuple(v for v in values if isinstance(v, Pattern)))
    if kind in (postgrey.CLIENTS, postgrey.RECIPIENTS):
        return postgrey.build(kind, values)
    names = frozenset(str(v) for v in values)
    if kind == "domain":
        return DomainSet(names, subdomains)
    if kind == "address":
        return AddressSet(names)
    return names


def digest_of(kind: str, entries: Entries) -> str:
    """A hash of the canonical entries, so a reload with new contents shows."""
    canon = sorted(entries) if isinstance(entries, frozenset) else entries.canonical()
    return hashlib.sha256("\n".join([kind, *canon]).encode("utf-8", "surrogatepass")).hexdigest()


def entry_count(entries: Entries) -> int:
    # String lists stay bare frozensets: `in` on them is the cheapest lookup there is.
    return len(entries) if isinstance(entries, frozenset) else entries.size


def load_lists(raw: Any, base_dir: Path, problems: Problems) -> dict[str, NamedList]:
    """Load every ``[lists.NAME]`` table; report problems and skip what is broken."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.error("lists", "must be a table of lists ([lists.NAME])")
        return {}
    loaded = {}
    for name, table in raw.items():
        named = _load_one(name, table, base_dir, problems)
        if named is not None:
            loaded[name] = named
    return loaded


def _load_one(name: str, table: Any, base_dir: Path, problems: Problems) -> NamedList | None:
    place = f"lists.{name}"
    if not isinstance(table, dict):
        problems.error(place, "must be a table with type = ... and items = [...] or file = ...")
        return None
    check_keys(table, LIST_KEYS, place, problems)
    get = Values(table, place, problems)
    kind = get.choice("type", None, KINDS)
    if kind is None:
        return None
    errors = len(problems.errors)
    subdomains = get.flag("subdomains")
    if subdomains and kind != "domain":
        problems.error(f"{place}.subdomains", "only domain lists have subdomains")
    values = _inline(table, kind, place, problems)
    values += _from_file(table, kind, f"{place}.file", base_dir, problems)
    if "items" not in table and "file" not in table:
        problems.error(place, 'needs items = [...] or file = "..." (or both)')
    entries = build_entries(kind, values, subdomains)
    size = entry_count(entries)
    if not size and errors == len(problems.errors) and ("items" in table or "file" in table):
        problems.warn(place, "the list is empty")
    return NamedList(name, kind, entries, size, digest_of(kind, entries), subdomains)


def _inline(table: Mapping[str, Any], kind: str, place: str, problems: Problems) -> list[object]:
    items = table.get("items", [])
    if not isinstance(items, list):
        problems.error(f"{place}.items", "must be a list of strings")
        return []
    values = []
    for index, item in enumerate(items):
        where = f"{place}.items[{index}]"
        if not isinstance(item, str) or not item.strip():
            problems.error(where, f"must be a non-empty string, not {item!r}")
            continue
        entry = _checked(_PARSERS[kind], item.strip(), problems, where, None)
        if entry is not None:
            values.append(entry)
    return values


def _from_file(
    table: Mapping[str, Any], kind: str, place: str, base: Path, problems: Problems
) -> list[object]:
    name = table.get("file")
    if name is None:
        return []
    if not isinstance(name, str) or not name or "\0" in name:
        problems.error(place, "must be a file name (without NUL bytes)")
        return []
    path = base / name
    try:
        return _file_entries(path, _PARSERS[kind], problems)
    except OSError as exc:
        problems.error(place, f"cannot read {path}: {exc.strerror or exc}")
    return []


def read_regular(path: Path) -> bytes:
    """A regular file's bytes; anything else (a FIFO, a device) is refused, never waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return f.read()


def _file_entries(
    path: Path, parse: Callable[[str], tuple[object | None, str | None]], problems: Problems
) -> list[object]:
    """The hot loop of a 100,000-line file: places are formatted only on a problem."""
    values: list[object] = []
    shown = str(path)
    for number, text in read_list_file(path):
        if text is None:
            problems.error(f"line {number}", "not valid UTF-8", file=shown)
            continue
        entry = _checked(parse, text, problems, number, shown)
        if entry is not None:
            values.append(entry)
    return values


def _checked(
    parse: Callable[[str], tuple[object | None, str | None]],
    text: str,
    problems: Problems,
    where: str | int,
    file: str | None,
) -> object | None:
    """Parse one entry; a problem is reported at ``where``, a place or a file's line number.

    A problem with an entry still usable is a warning, otherwise an error.
    """
    # A pattern may hold a space; other entries never do, so a space means two.
    spaced = parse is not _pattern and _SPACE.search(text)  # postgrey's lines have no spaces
    entry, problem = (None, _SPACED) if spaced else parse(text)
    if problem:
        if problem == _SPACED:
            problem = f"{text!r}: one entry per line, without spaces"
        report = problems.warn if entry is not None else problems.error
        report(where if isinstance(where, str) else f"line {where}", problem, file=file)
    return entry
