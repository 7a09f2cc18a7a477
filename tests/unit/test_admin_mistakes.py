"""The mistakes a new admin makes, each refused or warned at load with the fix.

Written from a trial of postgate by an admin coming from postfwd: rules that
passed ``check`` and could never match, header actions Postfix ignores,
patterns kept in files, errors that did not point at the rule, and hints that
were themselves wrong.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from typing import TYPE_CHECKING

import pytest

from postgate.commands.cli import main
from postgate.config.load import load_config
from postgate.config.problems import ConfigError
from postgate.replies.parsing import parse_action
from postgate.replies.text import ReplyError
from postgate.wire.codec import PolicyRequest

if TYPE_CHECKING:
    from pathlib import Path


def load(tmp_path: Path, text: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a config, each as printed."""
    path = tmp_path / "postgate.toml"
    path.write_text(text)
    try:
        config = load_config(path)
    except ConfigError as exc:
        return [str(p) for p in exc.errors], [str(p) for p in exc.warnings]
    return [], [str(p) for p in config.warnings]


def rule(condition: str, action: str = '"554 5.7.1 No"', state: str = "") -> str:
    head = f'state = "{state}"\n' if state else ""
    return f'[[rules]]\nid = "R"\n{head}{condition}\naction = {action}\n'


class TestDeadEqualities:
    """Point 1: equality with a network, an @domain, a wildcard never holds."""

    @pytest.mark.parametrize(
        ("condition", "fix"),
        [
            ('client_address = "192.0.2.0/24"', 'client_address = { network = ["192.0.2.0/24"] }'),
            ('server_address = ["10.0.0.0/8"]', 'server_address = { network = ["10.0.0.0/8"] }'),
            ('sender = "@spammer.example"', 'sender_domain = "spammer.example"'),
            ('recipient = { equals = "@x.example" }', 'recipient_domain = "x.example"'),
            ('client_name = "*.dyn.example"', 'domain = ["dyn.example"], subdomains = true'),
            ('reverse_client_name = ".dyn.example"', 'domain = ["dyn.example"], subdomains'),
            ('sender_domain = "*.example"', "regex"),
        ],
    )
    def test_equality_that_never_holds_is_refused_with_the_fix(
        self, tmp_path: Path, condition: str, fix: str
    ) -> None:
        errors, _ = load(tmp_path, rule(condition))
        assert 1 == len(errors), errors
        assert "never" in errors[0], errors
        assert fix in errors[0], errors

    def test_wildcard_helo_is_only_warned(self, tmp_path: Path) -> None:
        """A client may send any HELO, a literal '*' included: a warning, not a refusal."""
        errors, warnings = load(tmp_path, rule('helo_name = "*.example"'))
        assert [] == errors
        assert any("subdomains = true" in w for w in warnings), warnings

    def test_plain_values_still_load(self, tmp_path: Path) -> None:
        text = rule('client_address = "192.0.2.1"\nsender = "a@b.example"\nclient_name = "x.y"')
        assert ([], []) == load(tmp_path, text)

    @pytest.mark.parametrize("text", ["$$sender", "$client_address", "${recipient}"])
    def test_dollar_variables_are_refused_with_the_placeholder(self, text: str) -> None:
        with pytest.raises(ReplyError) as caught:
            parse_action(f"REJECT blocked {text}")
        assert "{" in str(caught.value)
        assert "placeholders" in str(caught.value)

    def test_a_dollar_amount_stays_literal(self) -> None:
        action = parse_action("REJECT pay $5 first").action
        assert "REJECT pay $5 first" == action.render(PolicyRequest({}), "R")


class TestHeaderActions:
    """Point 2: PREPEND where Postfix ignores it, or repeats it."""

    def test_prepend_at_end_of_message_is_refused(self, tmp_path: Path) -> None:
        errors, _ = load(tmp_path, rule("", '"PREPEND X-Tag: yes"', "END-OF-MESSAGE"))
        assert 1 == len(errors), errors
        assert "smtpd_end_of_data_restrictions" in errors[0]
        assert 'state = "DATA"' in errors[0]

    def test_prepend_at_rcpt_is_warned_once_per_recipient(self, tmp_path: Path) -> None:
        errors, warnings = load(tmp_path, rule("", '"PREPEND X-Tag: yes"', "RCPT"))
        assert [] == errors
        assert 1 == len(warnings), warnings
        assert "once per recipient" in warnings[0]

    def test_prepend_without_state_is_warned(self, tmp_path: Path) -> None:
        errors, warnings = load(tmp_path, rule('helo_name = "x"', '"PREPEND X-Tag: yes"'))
        assert [] == errors
        assert any('state = "DATA"' in w for w in warnings), warnings

    def test_prepend_at_data_is_fine(self, tmp_path: Path) -> None:
        assert ([], []) == load(tmp_path, rule("", '"PREPEND X-Tag: yes"', "DATA"))

    def test_group_state_reaches_its_rules(self, tmp_path: Path) -> None:
        text = (
            '[[rules]]\nid = "G"\nstate = "END-OF-MESSAGE"\n'
            '[[rules.rules]]\nid = "P"\naction = "PREPEND X-Tag: yes"\n'
        )
        errors, _ = load(tmp_path, text)
        assert 1 == len(errors), errors
        assert "(P)" in errors[0]


class TestPatternFiles:
    """Point 4: patterns kept in a file, one per line, checked like rule regexes."""

    def test_pattern_file_matches_and_reports_each_bad_line(self, tmp_path: Path) -> None:
        (tmp_path / "dynamic.txt").write_text(
            "# dynamic pools\n^dsl-\n\\.dyn\\.\n(a+)+$\n/^ppp/ REJECT\n"
        )
        text = '[lists.dynamic]\ntype = "pattern"\nfile = "dynamic.txt"\n' + rule(
            'client_name = { list = "dynamic" }'
        )
        errors, _ = load(tmp_path, text)
        shown = str(tmp_path / "dynamic.txt")
        assert [f"{shown}: line 4", f"{shown}: line 5"] == [e.split(": /")[0] for e in errors]
        assert "'^ppp' alone" in errors[1], errors

    def test_pattern_list_decides(self, tmp_path: Path) -> None:
        (tmp_path / "dynamic.txt").write_text("^dsl-\n\\.dyn\\.\n")
        path = tmp_path / "postgate.toml"
        path.write_text(
            '[lists.dynamic]\ntype = "pattern"\nfile = "dynamic.txt"\n'
            + rule('client_name = { list = "dynamic" }')
        )
        ruleset = load_config(path).ruleset
        names = ["dsl-1.isp.example", "a.DYN.isp.example", "mail.isp.example"]
        decided = [ruleset.decide(PolicyRequest({"client_name": n})).rule for n in names]
        assert ["R", "R", "DEFAULT"] == decided


class TestErrorPlaces:
    """Point 5: an error names the rule's id and the file line."""

    def test_error_names_rule_id_and_line(self, tmp_path: Path) -> None:
        text = (
            '[[rules]]\nid = "FIRST"\naction = "OK"\nhelo_name = "a"\n\n'
            '[[rules]]\nid = "SPAMTRAP"\nrecipient = "trap@example.com"\n'
            'action = "554 4.7.1 No"\n'
        )
        errors, _ = load(tmp_path, text)
        path = tmp_path / "postgate.toml"
        assert len(errors) == 1
        assert errors[0].startswith(f"{path}:9: rules[1] (SPAMTRAP).action: "), errors

    def test_nested_rule_and_list_lines(self, tmp_path: Path) -> None:
        text = (
            '[lists.nets]\ntype = "network"\nitems = ["10.0.0.0/33"]\n\n'
            '[[rules]]\nid = "G"\nhelo_name = "a"\n'
            '[[rules.rules]]\nid = "INNER"\nsize = { gt = "5" }\naction = "OK"\n'
            '[[rules.rules]]\nid = "INNER2"\nclient_address = { list = "nets" }\naction = "OK"\n'
        )
        errors, _ = load(tmp_path, text)
        path = tmp_path / "postgate.toml"
        starts = sorted(e.split(": ", 2)[0] + ": " + e.split(": ", 2)[1] for e in errors)
        assert [
            f"{path}:10: rules[0] (G).rules[0] (INNER).size.gt",
            f"{path}:3: lists.nets.items[0]",
        ] == starts


class TestListen:
    """Point 6: listen endpoints are checked like every other value."""

    @pytest.mark.parametrize(
        ("endpoint", "phrase"),
        [
            ("tcp:notaport", "port"),
            ("tcp:99999", "port"),
            ("tcp:10040:interfce=127.0.0.1", "interface"),
            ("127.0.0.1:32045", "tcp:32045:interface=127.0.0.1"),
            ("unix:", "path"),
            ("systemd:domain=INET", "name=NAME"),
        ],
    )
    def test_check_refuses_a_bad_endpoint(self, tmp_path: Path, endpoint: str, phrase: str) -> None:
        errors, _ = load(tmp_path, f'[daemon]\nlisten = ["{endpoint}"]\n')
        assert 1 == len(errors), errors
        assert "daemon.listen[0]" in errors[0]
        assert phrase in errors[0], errors

    @pytest.mark.parametrize(
        "endpoint",
        [
            "tcp:10040:interface=127.0.0.1",
            "tcp6:10040:interface=\\:\\:1",
            "unix:/run/postgate/policy.sock:mode=660",
            "systemd:domain=INET:name=postgate-tcp",
            "systemd:domain=UNIX:index=0",
        ],
    )
    def test_good_endpoints_pass(self, tmp_path: Path, endpoint: str) -> None:
        text = f'[daemon]\nlisten = ["{endpoint.replace(chr(92), chr(92) * 2)}"]\n'
        assert ([], []) == load(tmp_path, text)

    def test_listen_option_gets_the_config_message(self, tmp_path: Path) -> None:
        path = tmp_path / "postgate.toml"
        path.write_text("")
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = main(["run", "-c", str(path), "--listen", "127.0.0.1:32045"])
        lines = err.getvalue().splitlines()
        assert (2, "", 1) == (status, out.getvalue(), len(lines)), lines
        assert "--listen" in lines[0]
        assert "tcp:32045:interface=127.0.0.1" in lines[0]


class TestHints:
    """Point 7: hints that are valid themselves, braces shown as written."""

    def test_missing_text_hint_is_itself_valid(self) -> None:
        with pytest.raises(ReplyError) as caught:
            parse_action("550 4.7.1")
        suggestion = str(caught.value).split("e.g. '")[1].split("'")[0]
        assert "550 5.7.1 Access denied" == parse_action(suggestion).action.line

    def test_unknown_placeholder_message_shows_double_braces(self) -> None:
        with pytest.raises(ReplyError) as caught:
            parse_action("REJECT {nope}")
        assert "('{{' and '}}' for braces)" in str(caught.value)


class TestNotYet:
    """Point 11: features that do not exist yet say so."""

    @pytest.mark.parametrize("key", ["spf"])
    def test_unsupported_feature_keys(self, tmp_path: Path, key: str) -> None:
        errors, _ = load(tmp_path, rule(f"{key} = 1"))
        assert 1 == len(errors), errors
        assert "not supported yet" in errors[0], errors
        assert "did you mean" not in errors[0], errors

    @pytest.mark.parametrize("name", ["spf_fail", "too_many_connections"])
    def test_replies_of_missing_features_are_not_offered(self, tmp_path: Path, name: str) -> None:
        errors, _ = load(tmp_path, rule('helo_name = "x"', f'"{name}"').replace("action", "reply"))
        assert 1 == len(errors), errors
        assert "not supported yet" in errors[0], errors
