"""Named lists: kinds, files, every bad line reported at its file and line."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.unit.support.rules import compile_problems, rule_of

if TYPE_CHECKING:
    from pathlib import Path

    from postgate.config.problems import Problems
    from postgate.rules import Ruleset


def compile_in(directory: Path, text: str) -> tuple[Ruleset, Problems]:
    """Compile as ``directory/postgate.toml``, the place list files are relative to."""
    return compile_problems(text, directory, str(directory / "postgate.toml"))


def use(kind: str, attribute: str, source: str, extra: str = "") -> str:
    return (
        f'[lists.x]\ntype = "{kind}"\n{source}\n{extra}\n'
        f'[[rules]]\nid = "HIT"\n{attribute} = {{ list = "x" }}\naction = "REJECT"\n'
    )


class TestListFiles:
    def test_entries_comments_and_blank_lines(self, tmp_path: Path) -> None:
        """`#` starts a comment at line start or after a space; blank lines are skipped."""
        (tmp_path / "nets.txt").write_text(
            "# office\n\n192.0.2.0/24   # hq\n  198.51.100.7\n\t\n2001:db8::/48\n"
        )
        compiled, problems = compile_in(
            tmp_path, use("network", "client_address", 'file = "nets.txt"')
        )
        hits = [
            rule_of(compiled, client_address=a)
            for a in ("192.0.2.9", "198.51.100.7", "2001:db8::5")
        ]
        assert ([], ["HIT"] * 3) == (problems.errors, hits)

    def test_file_is_relative_to_the_config_directory(self, tmp_path: Path) -> None:
        """`file = "lists/x.txt"` is found next to the config, not in the cwd."""
        (tmp_path / "lists").mkdir()
        (tmp_path / "lists" / "d.txt").write_text("example.net\n")
        compiled, problems = compile_in(
            tmp_path, use("domain", "sender_domain", 'file = "lists/d.txt"')
        )
        assert ([], "HIT") == (problems.errors, rule_of(compiled, sender="a@example.net"))

    def test_every_bad_line_is_reported_with_file_and_line(self, tmp_path: Path) -> None:
        """Each invalid CIDR names its own file and line; good lines still load."""
        path = tmp_path / "nets.txt"
        path.write_text("192.0.2.0/24\n10.0.0.0/33\nfoo\n198.51.100.0/24\n")
        compiled, problems = compile_in(
            tmp_path, use("network", "client_address", 'file = "nets.txt"')
        )
        expected = [
            f"{path}: line 2: '10.0.0.0/33' is not a network (prefix length out of range)",
            f"{path}: line 3: 'foo' is not a network (expected an IP address or CIDR)",
        ]
        assert (expected, "HIT") == (
            [str(p) for p in problems.errors],
            rule_of(compiled, client_address="198.51.100.1"),
        )

    def test_a_missing_file_is_one_error_at_the_file_key(self, tmp_path: Path) -> None:
        """The error sits at lists.NAME.file and says which path was tried."""
        _, problems = compile_in(tmp_path, use("domain", "sender_domain", 'file = "nope.txt"'))
        expected = [
            (
                f"{tmp_path}/postgate.toml: lists.x.file: cannot read {tmp_path}/nope.txt: "
                "No such file or directory"
            )
        ]
        assert expected == [str(p) for p in problems.errors]

    def test_undecodable_line_is_reported(self, tmp_path: Path) -> None:
        """A list file must be UTF-8; a broken line is named, not guessed at."""
        path = tmp_path / "d.txt"
        path.write_bytes(b"example.net\nbad\xff.example\n")
        _, problems = compile_in(tmp_path, use("domain", "sender_domain", 'file = "d.txt"'))
        assert [f"{path}: line 2: not valid UTF-8"] == [str(p) for p in problems.errors]

    def test_items_and_file_together(self, tmp_path: Path) -> None:
        """Inline items and a file add up."""
        (tmp_path / "a.txt").write_text("a@example.net\n")
        source = 'items = ["b@example.net"]\nfile = "a.txt"'
        compiled, _ = compile_in(tmp_path, use("address", "recipient", source))
        assert ["HIT", "HIT"] == [rule_of(compiled, recipient=f"{x}@example.net") for x in "ab"]


class TestListKinds:
    def test_host_bits_are_a_warning_and_the_network_is_used(self, tmp_path: Path) -> None:
        """Like Postfix's mynetworks: 10.1.2.3/8 warns and means 10.0.0.0/8."""
        compiled, problems = compile_in(
            tmp_path, use("network", "client_address", 'items = ["10.1.2.3/8"]')
        )
        expected = ["lists.x.items[0]: '10.1.2.3/8' has host bits set; using 10.0.0.0/8"]
        assert (expected, "HIT") == (
            [f"{p.place}: {p.reason}" for p in problems.warnings],
            rule_of(compiled, client_address="10.200.0.1"),
        )

    def test_domain_entries_with_leading_dot_explain_subdomains(self, tmp_path: Path) -> None:
        """Postfix-style `.example.net` is refused with the way to say it here."""
        _, problems = compile_in(tmp_path, use("domain", "client_name", 'items = [".example.net"]'))
        assert ["'.example.net': write the plain domain and set subdomains = true on the list"] == [
            p.reason for p in problems.errors
        ]

    def test_domain_list_with_subdomains(self, tmp_path: Path) -> None:
        """subdomains = true on the list reaches every name below an entry."""
        compiled, _ = compile_in(
            tmp_path, use("domain", "client_name", 'items = ["example.net"]', "subdomains = true")
        )
        assert ["HIT", "HIT", "DEFAULT"] == [
            rule_of(compiled, client_name=n) for n in ("example.net", "a.b.example.net", "net")
        ]

    def test_address_list_with_whole_domain_entry(self, tmp_path: Path) -> None:
        """`@example.org` in an address list stands for every address there."""
        compiled, _ = compile_in(
            tmp_path, use("address", "sender", 'items = ["Trap@Example.net", "@example.org"]')
        )
        assert ["HIT", "HIT", "DEFAULT", "DEFAULT"] == [
            rule_of(compiled, sender=s)
            for s in ("trap@EXAMPLE.NET", "anyone@example.org", "x@example.net", "")
        ]

    def test_string_list_folds_case_for_folded_attributes(self, tmp_path: Path) -> None:
        """A string list used on protocol_state matches in any case."""
        compiled, _ = compile_in(tmp_path, use("string", "protocol_state", 'items = ["rcpt"]'))
        assert "HIT" == rule_of(compiled, protocol_state="RCPT")

    def test_string_list_is_exact_for_login_names(self, tmp_path: Path) -> None:
        """sasl_username keeps its case, so a string list compares exactly."""
        compiled, _ = compile_in(tmp_path, use("string", "sasl_username", 'items = ["Alice"]'))
        assert ("HIT", "DEFAULT") == (
            rule_of(compiled, sasl_username="Alice"),
            rule_of(compiled, sasl_username="alice"),
        )

    def test_fingerprint_list_validates_hex(self, tmp_path: Path) -> None:
        """A fingerprint entry must be hex digits; a typo is caught at load."""
        _, problems = compile_in(
            tmp_path, use("fingerprint", "ccert_fingerprint", 'items = ["AB:CD:ZZ:00"]')
        )
        assert ["'AB:CD:ZZ:00' is not a certificate fingerprint (hex digits, colons optional)"] == [
            p.reason for p in problems.errors
        ]

    def test_a_list_kind_that_does_not_fit_the_attribute_is_an_error(self, tmp_path: Path) -> None:
        """A domain list on `sender` says to use sender_domain."""
        _, problems = compile_in(tmp_path, use("domain", "sender", 'items = ["example.net"]'))
        assert [
            (
                "rules[0].sender.list: domain list 'x' cannot test sender: domain lists test "
                "domains: use sender_domain or recipient_domain"
            )
        ] == [f"{p.place}: {p.reason}" for p in problems.errors]

    def test_unknown_list_name_suggests_a_close_one(self, tmp_path: Path) -> None:
        text = use("domain", "sender_domain", 'items = ["example.net"]')
        text = text.replace("[lists.x]", "[lists.sender_blocklist]")
        _, problems = compile_in(tmp_path, text.replace('list = "x"', 'list = "sender_blocklst"'))
        assert ["no list 'sender_blocklst' (did you mean 'sender_blocklist'?)"] == [
            p.reason for p in problems.errors
        ]

    def test_an_unused_list_is_a_warning(self, tmp_path: Path) -> None:
        """A list no rule reads is probably a typo elsewhere."""
        _, problems = compile_in(tmp_path, '[lists.z]\ntype = "domain"\nitems = ["a.example"]\n')
        assert ["lists.z: no rule uses this list"] == [
            f"{p.place}: {p.reason}" for p in problems.warnings
        ]

    def test_unknown_type_and_unknown_keys(self, tmp_path: Path) -> None:
        """A wrong type and a misspelt key are each named."""
        _, problems = compile_in(tmp_path, '[lists.z]\ntype = "ip"\nitem = ["a"]\n')
        assert [
            (
                "lists.z.item: unknown key (did you mean 'items'?); "
                "known: type, items, file, subdomains"
            ),
            (
                "lists.z.type: 'ip' is not one of network, domain, address, string, "
                "fingerprint, pattern, postgrey_clients, postgrey_recipients"
            ),
        ] == [f"{p.place}: {p.reason}" for p in problems.errors]
