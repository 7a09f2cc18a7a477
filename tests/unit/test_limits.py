"""Rate limits on a fake clock: the rule key, reservations, charging, reloads, events."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from postgate.answer import Answer, Local, settle
from postgate.commands.rule_tests import replay_main
from postgate.commands.rule_tests import test_main as run_tests
from postgate.commands.wiring import needed_lists
from postgate.config.load import Config, load_config
from postgate.config.problems import ConfigError
from postgate.state.limit_facts import LimitFacts
from postgate.state.limits import MAX_FLIGHTS, LimitStore
from postgate.wire.codec import PolicyRequest

if TYPE_CHECKING:
    from postgate.answer import FactProvider

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_764_900_000.0  # a fixed clock


def config(tmp_path: Path, limit: str, extra: str = "", name: str = "p.toml") -> Config:
    path = tmp_path / name
    path.write_text(
        f'[[rules]]\nid = "RATE"\nsasl_username = {{ present = true }}\nlimit = {limit}\n{extra}'
    )
    return load_config(path)


USER = '{ key = ["sasl_username"], windows = ["3 per hour"] }'


class Mail:
    """One SMTP session's requests, numbered instances on one smtpd pid."""

    def __init__(self, user: str = "alice", port: str = "4000", address: str = "192.0.2.9"):
        self.base = {
            "request": "smtpd_access_policy",
            "sasl_username": user,
            "client_address": address,
            "client_port": port,
            "sender": f"{user}@example.org",
        }
        self.n = 0

    def new(self) -> str:
        self.n += 1
        return f"1f2e.6b0b7c2f.1bba5.{self.base['client_port']}{self.n}"

    def ask(self, state: str, instance: str, **more: str) -> PolicyRequest:
        return PolicyRequest(self.base | {"protocol_state": state, "instance": instance} | more)


class Run:
    def __init__(self, cfg: Config, providers: dict[str, FactProvider] | None = None) -> None:
        self.cfg = cfg
        self.limits = LimitFacts(LimitStore(), self.logged)
        self.source = Local(providers or {"limit": self.limits})
        self.events: list[tuple[str, dict[str, Any]]] = []

    def logged(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    def answer(self, request: PolicyRequest, now: float) -> Answer:
        found = settle(self.cfg, request, now, self.source, trace=True)
        assert isinstance(found, Answer)
        return found

    def message(
        self, mail: Mail, now: float, rcpts: int = 2, size: int = 1000, *, end: bool = True
    ) -> list[str]:
        instance = mail.new()
        rules = [
            self.answer(mail.ask("RCPT", instance, recipient=f"r{n}@example.com"), now).rule
            for n in range(rcpts)
        ]
        if end and rules[-1] != "RATE":
            eom = mail.ask("END-OF-MESSAGE", instance, recipient_count=str(rcpts), size=str(size))
            rules.append(self.answer(eom, now).rule)
        return rules


def test_the_fourth_message_in_the_hour_waits_and_says_for_how_long(tmp_path: Path) -> None:
    run, mail = Run(config(tmp_path, USER)), Mail()
    for n in range(3):
        assert ["DEFAULT"] * 3 == run.message(mail, T0 + n)
    refused = run.answer(mail.ask("RCPT", mail.new(), recipient="x@example.com"), T0 + 60)
    assert ("RATE", "450 4.7.1 Rate limit exceeded, try again later") == (
        refused.rule,
        refused.text,
    )
    assert any("holds (3 of 3 per hour; +1 goes over 3 per hour)" in t for t in refused.trace)


def test_placeholders_tell_the_limit_window_and_wait(tmp_path: Path) -> None:
    action = 'action = "450 4.7.1 {limit} per {window}, again in {retry}"\n'
    run, mail = Run(config(tmp_path, USER, action)), Mail()
    for _ in range(3):
        run.message(mail, T0)
    refused = run.answer(mail.ask("RCPT", mail.new(), recipient="x@example.com"), T0 + 600)
    assert "450 4.7.1 3 per hour, again in 56 minutes" == refused.text


def test_recipients_are_counted_by_weight_and_checked_with_reservations(tmp_path: Path) -> None:
    limit = '{ key = ["sasl_username"], count = "recipients", windows = ["5 per hour"] }'
    run, mail = Run(config(tmp_path, limit)), Mail()
    assert ["DEFAULT"] * 4 == run.message(mail, T0, rcpts=3)
    # 3 charged; in flight: 2 more fit, the third recipient does not.
    assert ["DEFAULT", "DEFAULT", "RATE"] == run.message(mail, T0, rcpts=3, end=False)


def test_bytes_are_charged_with_the_real_size(tmp_path: Path) -> None:
    limit = '{ key = ["sasl_username"], count = "bytes", windows = ["10000 per day"] }'
    run, mail = Run(config(tmp_path, limit)), Mail()
    run.message(mail, T0, rcpts=1, size=9000)
    assert ["DEFAULT"] == run.message(mail, T0, rcpts=1, size=999, end=False)[:1]
    declared = mail.ask("RCPT", mail.new(), recipient="x@example.com", size="2000")
    assert "RATE" == run.answer(declared, T0).rule


def test_a_message_abandoned_is_released_by_the_next_transaction(tmp_path: Path) -> None:
    run = Run(config(tmp_path, USER))
    sessions = [Mail(port=str(port)) for port in (1, 2, 3)]
    for mail in sessions:
        assert "DEFAULT" == run.message(mail, T0, end=False)[0]  # 3 reserved, none charged
    assert "RATE" == run.message(Mail(port="4"), T0, end=False)[0]
    # Session 1's next transaction ends its abandoned one: it fits, and is charged.
    assert ["DEFAULT"] * 3 == run.message(sessions[0], T0)
    store = run.limits.store
    assert (2, 1, 2) == (len(store.flights), len(store.counters), store.reserved[("RATE", "alice")])


def test_a_reservation_times_out(tmp_path: Path) -> None:
    run = Run(config(tmp_path, USER))
    for port in ("1", "2", "3"):
        run.message(Mail(port=port), T0, end=False)
    assert "RATE" == run.message(Mail(port="4"), T0, end=False)[0]
    assert "DEFAULT" == run.message(Mail(port="5"), T0 + 901, end=False)[0]


def test_without_end_of_message_the_daemon_says_which_line_to_add(tmp_path: Path) -> None:
    run = Run(config(tmp_path, USER))
    for n in range(5):
        run.message(Mail(port=str(n)), T0 + n * 1000, end=False)
    told = [fields for event, fields in run.events if event == "limit_needs_end_of_message"]
    assert 1 == len(told)
    assert str(told[0]["add_to_main_cf"]).startswith("smtpd_end_of_data_restrictions = ")


def test_end_of_message_only_wiring_decides_and_charges_there(tmp_path: Path) -> None:
    run, mail = Run(config(tmp_path, USER)), Mail()
    eom = [mail.ask("END-OF-MESSAGE", mail.new(), recipient_count="1") for _ in range(4)]
    assert ["DEFAULT", "DEFAULT", "DEFAULT", "RATE"] == [run.answer(r, T0).rule for r in eom]


def test_exceeded_and_recovered_are_logged_once_per_breach(tmp_path: Path) -> None:
    run, mail = Run(config(tmp_path, USER)), Mail()
    for _ in range(3):
        run.message(mail, T0)
    for _ in range(5):
        run.message(mail, T0 + 60)
    run.message(mail, T0 + 4000)
    assert ["limit_exceeded", "limit_recovered"] == [e for e, _ in run.events]
    assert {"rule": "RATE", "key": "alice", "window": "3 per hour", "limit": 3} == {
        k: v for k, v in run.events[0][1].items() if k != "retry_seconds"
    }


def test_a_reload_that_changes_the_limit_keeps_the_counts(tmp_path: Path) -> None:
    run, mail = Run(config(tmp_path, USER)), Mail()
    run.message(mail, T0)
    run.message(mail, T0)
    run.cfg = config(tmp_path, '{ key = ["sasl_username"], windows = ["2 per hour"] }')
    assert "RATE" == run.message(mail, T0, end=False)[0]
    run.cfg = config(tmp_path, '{ key = ["sasl_username"], windows = ["5 per hour"] }')
    assert "DEFAULT" == run.message(mail, T0)[0]


def test_keys_are_separate_per_user_and_per_network(tmp_path: Path) -> None:
    limit = '{ key = ["client_network"], windows = ["1 per hour"] }'
    run = Run(config(tmp_path, limit))
    assert "DEFAULT" == run.message(Mail(address="192.0.2.9"), T0)[0]
    assert "RATE" == run.message(Mail(address="192.0.2.200", port="2"), T0)[0]
    assert "DEFAULT" == run.message(Mail(address="198.51.100.1", port="3"), T0)[0]
    assert "DEFAULT" == run.message(Mail(address="2001:db8::1", port="4"), T0)[0]
    assert "RATE" == run.message(Mail(address="2001:db8::ffff:1", port="5"), T0)[0]


def test_a_recipient_keyed_limit_is_charged_for_each_recipient_domain(tmp_path: Path) -> None:
    limit = '{ key = ["recipient_domain"], windows = ["1 per hour"] }'
    run, mail = Run(config(tmp_path, limit)), Mail()
    run.message(mail, T0, rcpts=2)  # both r0@ and r1@example.com: one message
    assert "RATE" == run.message(Mail(user="bob", port="9"), T0, rcpts=1)[0]


def test_an_empty_key_is_not_limited(tmp_path: Path) -> None:
    run = Run(config(tmp_path, '{ key = ["sender"], windows = ["1 per hour"] }'))
    bounce = Mail()
    bounce.base["sender"] = ""
    assert [["DEFAULT"] * 3] * 3 == [run.message(bounce, T0) for _ in range(3)]


@pytest.mark.parametrize(
    ("limit", "said"),
    [
        ('{ key = ["sasl_user"], windows = ["1 per hour"] }', "did you mean"),
        ('{ key = ["sender"], windows = ["lots"] }', 'write a window as "100 per hour"'),
        ('{ key = ["sender"], windows = ["1 per 2 seconds"] }', "10 seconds to 31 days"),
        ('{ key = ["sender"], windows = ["1/h", "2 per 60 minutes"] }', "same length"),
        ('{ key = ["sender"], count = "mails", windows = ["1/h"] }', "messages, recipients"),
        ('"100/h"', "must be a table"),
    ],
)
def test_mistakes_are_reported_at_their_place(tmp_path: Path, limit: str, said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, limit)
    assert said in str(caught.value)
    assert "rules[0] (RATE).limit" in str(caught.value)


def test_other_spellings_point_to_limit(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[rules]]\nid = "R"\nrate = "100/h"\naction = "DUNNO"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "limit = {" in str(caught.value)


def test_the_example_policy_file_passes() -> None:
    out = io.StringIO()
    examples = ROOT / "conf" / "examples"
    argv = ["-c", str(examples / "limits.toml"), str(examples / "test_limits.policy")]
    assert 0 == run_tests(argv, out, io.StringIO()), out.getvalue()


def test_a_limit_that_never_sees_end_of_message_is_warned_about(tmp_path: Path) -> None:
    warned = config(tmp_path, USER, 'state = "RCPT"\n').warnings
    assert ["never counts anything" in str(w) for w in warned] == [True]
    assert () == config(tmp_path, USER, 'state = ["RCPT", "END-OF-MESSAGE"]\n').warnings


def test_check_names_the_restriction_lists_a_limit_needs(tmp_path: Path) -> None:
    lines = needed_lists(config(tmp_path, USER).ruleset)
    assert [line.split(":")[0] for line in lines] == [
        "smtpd_recipient_restrictions",
        "smtpd_end_of_data_restrictions",
    ]


def test_data_wiring_counts_recipient_count_as_policyd_rate_limit_does(tmp_path: Path) -> None:
    limit = '{ key = ["sasl_username"], count = "recipients", windows = ["10 per minute"] }'
    run, mail = Run(config(tmp_path, limit)), Mail()
    rules = []
    for _ in range(4):
        instance = mail.new()
        rules.append(run.answer(mail.ask("DATA", instance, recipient_count="3"), T0).rule)
        if rules[-1] == "DEFAULT":
            eom = mail.ask("END-OF-MESSAGE", instance, recipient_count="3")
            run.answer(eom, T0)
    assert ["DEFAULT", "DEFAULT", "DEFAULT", "RATE"] == rules


def test_messages_in_flight_are_bounded() -> None:
    store = LimitStore()
    for n in range(MAX_FLIGHTS + 5):
        store.reserve("R", "k", f"i{n}", f"s{n}", 1, T0)
    assert (MAX_FLIGHTS, MAX_FLIGHTS) == (len(store.flights), store.reserved["R", "k"])
    assert "i0" not in store.flights


def test_each_test_file_starts_with_empty_state(tmp_path: Path) -> None:
    examples = ROOT / "conf" / "examples"
    shutil.copy(examples / "limits.toml", tmp_path / "limits.toml")
    for name in ("test_a.policy", "test_b.policy"):
        shutil.copy(examples / "test_limits.policy", tmp_path / name)
    out = io.StringIO()
    assert 0 == run_tests([str(tmp_path)], out, io.StringIO()), out.getvalue()
    assert "24 passed, 0 failed" in out.getvalue()


def test_replay_counts_each_case_once_even_when_one_fails(tmp_path: Path) -> None:
    examples = ROOT / "conf" / "examples"
    text = (examples / "test_limits.policy").read_text()
    broken = text.replace("# expect: DUNNO", "# expect: REJECT no", 1)
    (tmp_path / "c.policy").write_text(broken)
    out = io.StringIO()
    argv = ["-c", str(examples / "limits.toml"), str(tmp_path / "c.policy")]
    assert 1 == replay_main(argv, out, io.StringIO())
    assert "expectations: 11 held, 1 failed" in out.getvalue()
