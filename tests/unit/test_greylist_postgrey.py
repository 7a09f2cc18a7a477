"""postgrey's whitelist files as postgate lists: its format, its matching, Debian's files."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from postgate.answer import Answer, Local, settle
from postgate.config.load import load_config
from postgate.config.problems import ConfigError
from postgate.state import local_providers
from postgate.wire.codec import PolicyRequest

if TYPE_CHECKING:
    from postgate.config.load import Config

EXAMPLES = Path(__file__).resolve().parents[2] / "conf" / "examples"
DEBIAN = Path("/etc/postgrey")


def request(
    client: str = "192.0.2.99", name: str = "unknown", rcpt: str = "x@y.example"
) -> PolicyRequest:
    return PolicyRequest(
        {
            "request": "smtpd_access_policy",
            "protocol_state": "RCPT",
            "client_address": client,
            "client_name": name,
            "sender": "a@b.example",
            "recipient": rcpt,
        }
    )


def rules(clients: str, recipients: str) -> str:
    return f"""
[lists.c]
type = "postgrey_clients"
file = "{clients}"

[lists.r]
type = "postgrey_recipients"
file = "{recipients}"

[[rules]]
id = "CLIENT"
client_name = {{ list = "c" }}
action = "OK"

[[rules]]
id = "RECIPIENT"
recipient = {{ list = "r" }}
action = "OK"
"""


@pytest.fixture
def example() -> Config:
    return load_config(EXAMPLES / "greylisting.toml")


def decided(config: Config, req: PolicyRequest) -> str:
    answer = settle(config, req, 0.0, Local(local_providers(config)))
    assert isinstance(answer, Answer)
    return answer.rule


class TestClients:
    @pytest.mark.parametrize(
        ("client", "name", "rule"),
        [
            ("192.0.2.99", "debian.org", "NOT_GREYLISTED_CLIENTS"),
            ("192.0.2.99", "bugs.debian.org", "NOT_GREYLISTED_CLIENTS"),  # names below it
            ("192.0.2.99", "notdebian.org", "GREYLIST_NO_RDNS_OR_LATER"),
            ("192.0.2.25", "unknown", "NOT_GREYLISTED_CLIENTS"),  # an address
            ("198.51.100.7", "unknown", "NOT_GREYLISTED_CLIENTS"),  # 198.51.100 is a /24
            ("198.51.101.7", "unknown", "GREYLIST_NO_RDNS_OR_LATER"),
            ("203.0.113.15", "unknown", "NOT_GREYLISTED_CLIENTS"),  # CIDR
            ("203.0.113.16", "unknown", "GREYLIST_NO_RDNS_OR_LATER"),
            ("2001:db8:25:1::9", "unknown", "NOT_GREYLISTED_CLIENTS"),
            ("192.0.2.99", "MX12.mail.example.net", "NOT_GREYLISTED_CLIENTS"),  # /regex/, any case
            ("192.0.2.99", "mx12.mail.example.net.evil", "GREYLIST_NO_RDNS_OR_LATER"),
        ],
    )
    def test_postgrey_client_entries(
        self, example: Config, client: str, name: str, rule: str
    ) -> None:
        found = decided(example, request(client, name))
        assert (
            (rule == found)
            if rule != "GREYLIST_NO_RDNS_OR_LATER"
            else found.startswith(("GREYLIST", "DEFAULT"))
        ), found


class TestRecipients:
    @pytest.mark.parametrize(
        ("rcpt", "listed"),
        [
            ("postmaster@anything.example", True),
            ("postmaster+x@anything.example", True),
            ("sales@example.com", True),
            ("Sales+eu@Example.com", True),
            ("sales@other.example", False),
            ("someone@no-greylisting.example", True),
            ("someone@sub.no-greylisting.example", True),
            ("someone@not-no-greylisting.example", False),
            ("support-eu@example.com", True),
            ("support-42@example.com", False),
        ],
    )
    def test_postgrey_recipient_entries(self, example: Config, rcpt: str, listed: bool) -> None:
        rule = decided(example, request("192.0.2.99", "mx.other.example", rcpt))
        assert listed == (rule == "NOT_GREYLISTED_RECIPIENTS"), rule


@pytest.fixture(autouse=False)
def debian() -> Path:
    """Debian's postgrey package ships the files (make system-deps installs it)."""
    if not DEBIAN.joinpath("whitelist_clients").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and postgrey's files are missing", pytrace=False)
        pytest.skip("postgrey is not installed")
    return DEBIAN


@pytest.mark.usefixtures("debian")
class TestDebiansFiles:
    def test_debians_shipped_files_load_without_error(self, tmp_path: Path) -> None:
        path = tmp_path / "p.toml"
        path.write_text(
            rules(str(DEBIAN / "whitelist_clients"), str(DEBIAN / "whitelist_recipients"))
        )
        config = load_config(path)  # raises on any error
        lists = config.ruleset.lists
        assert (lists["c"].size > 150, lists["r"].size) == (True, 2)
        # Two of postgrey's regexes can backtrack without bound; they are left out, said so.
        left_out = [str(w) for w in config.warnings if "is left out" in str(w)]
        assert 2 == len(left_out), left_out
        assert "OK" == config.ruleset.decide(request(name="smtp.vger.kernel.org")).action.line
        assert "OK" == config.ruleset.decide(request(name="mail7.telekom.de")).action.line
        assert "OK" == config.ruleset.decide(request(rcpt="abuse@x.example")).action.line

    def test_a_copy_with_comments_and_blank_lines_reads_the_same(self, tmp_path: Path) -> None:
        shutil.copy(DEBIAN / "whitelist_clients", tmp_path / "wc")
        (tmp_path / "wr").write_text("# mine\n\n  postmaster@   # trailing note\n")
        path = tmp_path / "p.toml"
        path.write_text(rules("wc", "wr"))
        assert 1 == load_config(path).ruleset.lists["r"].size


def test_a_bad_network_line_is_an_error_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "wc").write_text("example.org\n192.0.2.0/99\n")
    (tmp_path / "wr").write_text("postmaster@\n")
    path = tmp_path / "p.toml"
    path.write_text(rules("wc", "wr"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert ["line 2"] == [p.place for p in caught.value.errors]


@pytest.mark.usefixtures("debian")
def test_the_greylisting_section_of_rules_md_loads(tmp_path: Path) -> None:
    """Every TOML example of docs/rules.md, Greylisting, is a config postgate accepts."""
    text = (EXAMPLES.parents[1] / "docs" / "rules.md").read_text()
    section = text.split("## Greylisting", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```toml\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    assert 2 == len(blocks)
    for index, block in enumerate(blocks):
        path = tmp_path / f"example{index}.toml"
        path.write_text(block)
        assert load_config(path).ruleset.rule_count == 2
