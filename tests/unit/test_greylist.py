"""Greylisting on a fake clock: the step, the keys, the store, the rule and replay.

Every time here is a number of seconds given by the test; nothing reads a
clock. postgrey's defaults: 300 s delay, 2 days retry window, 35 days
lifetime, a client allowlisted after 5 passes (one an hour).
"""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING

import pytest

from postgate.answer import ABSENT, Answer, Local, settle
from postgate.commands.rule_tests import replay_main
from postgate.commands.state import main as state_main
from postgate.config.load import load_config
from postgate.config.problems import ConfigError
from postgate.rules.greylisting import DAY, HOUR, Client, Entry, Seen, Settings, step
from postgate.rules.triplets import keys_of, network_of, normal_sender, registered_domain
from postgate.state import greylist_report
from postgate.state.disk import DiskStore
from postgate.state.greylist import GreylistProvider, GreylistStore
from postgate.wire.codec import PolicyRequest

if TYPE_CHECKING:
    from pathlib import Path

    from postgate.config.load import Config

S = Settings()
T0 = 1_700_000_000.0


def mail(
    client: str = "192.0.2.10",
    sender: str = "alice@example.org",
    recipient: str = "bob@example.net",
    name: str = "unknown",
) -> PolicyRequest:
    return PolicyRequest(
        {
            "request": "smtpd_access_policy",
            "protocol_state": "RCPT",
            "client_address": client,
            "client_name": name,
            "sender": sender,
            "recipient": recipient,
        }
    )


class TestStep:
    def test_first_sight_is_deferred_for_the_whole_delay(self) -> None:
        outcome = step(Seen(), T0, S)
        assert (True, 300.0, "new", Entry(T0, T0)) == outcome[:4]

    def test_too_early_is_deferred_for_what_is_left_and_keeps_the_first_sight(self) -> None:
        outcome = step(Seen(Entry(T0, T0)), T0 + 120, S)
        assert (True, 180.0, "early", Entry(T0, T0 + 120)) == outcome[:4]

    def test_a_retry_after_the_delay_passes_and_is_remembered(self) -> None:
        outcome = step(Seen(Entry(T0, T0 + 60)), T0 + 300, S)
        assert (False, "passed", Entry(T0, T0 + 300)) == (outcome.defer, outcome.why, outcome.entry)

    def test_a_known_triplet_passes_at_once_later(self) -> None:
        outcome = step(Seen(Entry(T0, T0 + 400)), T0 + 10 * DAY, S)
        assert (False, "known") == (outcome.defer, outcome.why)

    def test_a_first_retry_after_the_retry_window_starts_over(self) -> None:
        outcome = step(Seen(Entry(T0, T0 + 10)), T0 + 2 * DAY + 1, S)
        assert (True, 300.0, "restarted") == outcome[:3]
        assert T0 + 2 * DAY + 1 == outcome.entry.first  # type: ignore[union-attr]

    def test_the_retry_window_does_not_end_a_passed_triplet(self) -> None:
        assert not step(Seen(Entry(T0, T0 + 300)), T0 + 3 * DAY, S).defer

    def test_an_entry_unseen_for_the_lifetime_is_forgotten(self) -> None:
        seen = Seen(Entry(T0, T0 + 300))
        assert not step(seen, T0 + 300 + 35 * DAY, S).defer
        assert (True, "new") == step(seen, T0 + 301 + 35 * DAY, S)[::2][:2]

    def test_a_first_sight_in_the_future_counts_from_now(self) -> None:
        assert (True, 300.0) == step(Seen(Entry(T0 + 999, T0 + 999)), T0, S)[:2]

    def test_delay_zero_passes_the_first_attempt(self) -> None:
        assert not step(Seen(), T0, Settings(delay=0)).defer


class TestAutoAllowlist:
    def test_five_passes_an_hour_apart_allowlist_the_client(self) -> None:
        client = None
        for hour in range(5):  # a new triplet each hour, passing after its delay
            now = T0 + hour * HOUR + 400
            client = step(Seen(Entry(now - 400, now - 400), client), now, S).client
        assert Client(5, T0 + 4 * HOUR + 400) == client
        fresh = step(Seen(None, client), T0 + 5 * HOUR, S)
        assert (False, "allowlisted") == (fresh.defer, fresh.why)

    def test_only_one_pass_an_hour_counts(self) -> None:
        client = None
        for minute in range(10):
            now = T0 + 400 + minute * 60
            client = step(Seen(Entry(now - 400, now - 400), client), now, S).client
        assert Client(1, T0 + 400) == client

    def test_a_known_triplet_passing_again_does_not_count(self) -> None:
        assert step(Seen(Entry(T0, T0 + 300)), T0 + 2 * HOUR, S).client is None

    def test_the_allowlist_ends_after_the_lifetime_without_a_pass(self) -> None:
        client = Client(5, T0)
        assert step(Seen(None, client), T0 + 35 * DAY, S).why == "allowlisted"
        assert step(Seen(None, client), T0 + 35 * DAY + 1, S).defer

    def test_zero_turns_it_off(self) -> None:
        outcome = step(
            Seen(Entry(T0, T0 + 300), Client(50, T0)), T0 + 400, Settings(allowlist_after=0)
        )
        assert (False, "known", None) == (outcome.defer, outcome.why, outcome.client)


class TestKeys:
    @pytest.mark.parametrize(
        ("sender", "normal"),
        [
            ("Alice@Example.ORG", "alice@example.org"),
            ("", "<>"),
            ("alice+news@example.org", "alice@example.org"),
            ("bounce-123-456@lists.example.org", "bounce-#-#@lists.example.org"),
            ("prvs=1234abcdef=alice@example.org", "alice@example.org"),  # BATV, standard
            ("prvs=alice=1234abcdef@example.org", "alice@example.org"),  # BATV, reversed
            (
                "SRS0=HHH1=TT=orig.example=alice@fwd.example",
                "srs0=#=#=orig.example=alice@fwd.example",
            ),
            (
                "SRS0=HHH2=UU=orig.example=alice@fwd.example",
                "srs0=#=#=orig.example=alice@fwd.example",
            ),
            (
                "SRS1=HHH=fwd1.example==HHH=TT=orig.example=alice@fwd2.example",
                "srs1=#=fwd1.example==#=#=orig.example=alice@fwd2.example",
            ),
        ],
    )
    def test_sender_normalisation(self, sender: str, normal: str) -> None:
        assert normal == normal_sender(sender)

    @pytest.mark.parametrize(
        ("address", "network"),
        [
            ("192.0.2.77", "192.0.2.0/24"),
            ("::ffff:192.0.2.77", "192.0.2.0/24"),
            ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
            ("2001:db8:1:2:ffff:1:2:3", "2001:db8:1:2::/64"),
        ],
    )
    def test_networks(self, address: str, network: str) -> None:
        assert network == network_of(address, 24, 64)

    def test_prefixes_are_configurable(self) -> None:
        assert ("192.0.0.0/16", "2001:db8::/32") == (
            network_of("192.0.2.77", 16, 64),
            network_of("2001:db8:1:2::1", 24, 32),
        )

    def test_two_addresses_of_one_network_share_a_triplet(self) -> None:
        assert keys_of(mail("192.0.2.10"), S) == keys_of(mail("192.0.2.200"), S)
        assert keys_of(mail("192.0.2.10"), S) != keys_of(mail("192.0.3.10"), S)

    @pytest.mark.parametrize(
        ("name", "registered"),
        [
            ("mail-am6eur05.outbound.protection.outlook.com", "outlook.com"),
            ("smtp.example.co.uk", "example.co.uk"),
            ("co.uk", ""),
            ("localhost", ""),
        ],
    )
    def test_registered_domains(self, name: str, registered: str) -> None:
        assert registered == registered_domain(name)

    def test_pool_keys_on_sender_domain_and_recipient_when_the_names_agree(self) -> None:
        pool = Settings(pool=True)
        one = mail("40.92.1.1", "a@outlook.com", name="mail-1.outbound.protection.outlook.com")
        other = mail("52.100.9.9", "a@outlook.com", name="mail-9.eur.outlook.com")
        assert keys_of(one, pool) == keys_of(other, pool)
        assert "pool:outlook.com @outlook.com bob@example.net" == keys_of(one, pool).triplet

    def test_pool_needs_the_client_name_in_the_senders_domain(self) -> None:
        pool = Settings(pool=True)
        stranger = mail("198.51.100.1", "a@outlook.com", name="host.dyn.example")
        unknown = mail("198.51.100.1", "a@outlook.com")
        assert keys_of(stranger, pool).client == "198.51.100.0/24"
        assert keys_of(unknown, pool).client == "198.51.100.0/24"


class TestStore:
    def test_record_is_check_and_record(self) -> None:
        store = GreylistStore()
        key, client = "192.0.2.0/24 a@x b@y", "192.0.2.0/24"
        assert store.record(key, client, T0, S).defer
        assert store.record(key, client, T0 + 100, S).defer
        assert not store.record(key, client, T0 + 300, S).defer
        assert (Entry(T0, T0 + 300), Client(1, T0 + 300)) == store.seen(key, client)

    def test_expired_records_are_evicted(self) -> None:
        store = GreylistStore()
        for n in range(100):
            store.record(f"192.0.2.0/24 a{n}@x b@y", "192.0.2.0/24", T0 + n, S)
        store.record("198.51.100.0/24 a@x b@y", "198.51.100.0/24", T0 + 35 * DAY + 50, S)
        assert 51 == len(store.entries)  # 50 still within the lifetime, and the new one
        store.evict(T0 + 71 * DAY)
        assert (0, 0) == (len(store.entries), len(store.clients))

    def test_reset_by_prefix(self) -> None:
        store = GreylistStore()
        store.record("192.0.2.0/24 a@x b@y", "192.0.2.0/24", T0, S)
        store.record("198.51.100.0/24 a@x b@y", "198.51.100.0/24", T0, S)
        assert 1 == store.reset("192.0.2.")
        assert ["198.51.100.0/24 a@x b@y"] == list(store.entries)


def config(tmp_path: Path, rules: str) -> Config:
    path = tmp_path / "postgate.toml"
    path.write_text(rules)
    return load_config(path)


GREY_UNKNOWN = """
[[rules]]
id = "GREY"
client_name = "unknown"
greylist = { delay = "5m", auto_allowlist = 0 }
"""


class TestRule:
    def answers(self, cfg: Config, requests: list[tuple[float, PolicyRequest]]) -> list[str]:
        source = Local({"greylist": GreylistProvider()})
        found = []
        for now, request in requests:
            answer = settle(cfg, request, now, source)
            assert isinstance(answer, Answer)
            found.append(answer.text)
        return found

    def test_deferred_then_early_then_passed(self, tmp_path: Path) -> None:
        cfg = config(tmp_path, GREY_UNKNOWN)
        texts = self.answers(cfg, [(T0, mail()), (T0 + 60, mail()), (T0 + 301, mail())])
        deferred = "DEFER_IF_PERMIT 4.7.1 Greylisted, try again later"
        assert [deferred, deferred, "DUNNO"] == texts

    def test_a_retry_from_another_address_of_the_64_passes(self, tmp_path: Path) -> None:
        cfg = config(tmp_path, GREY_UNKNOWN)
        first, retry = mail("2001:db8:5:6::1"), mail("2001:db8:5:6:ffff::25")
        assert ["DEFER_IF_PERMIT 4.7.1 Greylisted, try again later", "DUNNO"] == self.answers(
            cfg, [(T0, first), (T0 + 400, retry)]
        )

    def test_a_pool_retry_from_another_network_passes_only_when_pool_aware(
        self, tmp_path: Path
    ) -> None:
        rules = GREY_UNKNOWN.replace('client_name = "unknown"\n', "")
        first = mail("40.92.1.1", "a@outlook.com", name="mail-1.outbound.protection.outlook.com")
        retry = mail("52.100.9.9", "a@outlook.com", name="mail-9.eur.outlook.com")
        plan = [(T0, first), (T0 + 400, retry)]
        plain = self.answers(config(tmp_path, rules), plan)
        pooled = self.answers(config(tmp_path, rules.replace("}", ", pool = true }")), plan)
        deferred = "DEFER_IF_PERMIT 4.7.1 Greylisted, try again later"
        assert ([deferred, deferred], [deferred, "DUNNO"]) == (plain, pooled)

    def test_a_client_the_rule_does_not_select_is_never_deferred(self, tmp_path: Path) -> None:
        cfg = config(tmp_path, GREY_UNKNOWN)
        named = mail(name="mx.example.org")
        assert ["DUNNO", "DUNNO"] == self.answers(cfg, [(T0, named), (T0 + 1, named)])

    def test_the_reply_can_say_how_long_to_wait(self, tmp_path: Path) -> None:
        text = GREY_UNKNOWN + 'action = "450 4.7.1 Greylisted, retry in {retry} s"\n'
        texts = self.answers(config(tmp_path, text), [(T0, mail()), (T0 + 100, mail())])
        assert [
            "450 4.7.1 Greylisted, retry in 300 s",
            "450 4.7.1 Greylisted, retry in 200 s",
        ] == texts

    def test_only_rcpt_is_greylisted(self, tmp_path: Path) -> None:
        """At DATA or END-OF-MESSAGE (wired for limits) the mail was judged at RCPT."""
        cfg = config(tmp_path, GREY_UNKNOWN)
        provider = GreylistProvider()
        for state in ("CONNECT", "MAIL", "DATA", "END-OF-MESSAGE"):
            request = PolicyRequest(mail().raw | {"protocol_state": state, "recipient": ""})
            answer = settle(cfg, request, T0, Local({"greylist": provider}))
            assert isinstance(answer, Answer)
            assert "DUNNO" == answer.text, state
        assert {} == provider.store.entries

    def test_trace_names_the_outcome(self, tmp_path: Path) -> None:
        cfg = config(tmp_path, GREY_UNKNOWN)
        answer = settle(cfg, mail(), T0, Local({"greylist": GreylistProvider()}), trace=True)
        assert isinstance(answer, Answer)
        assert "GREY: greylist (delay 300 s): holds (new, retry in 300 s)" in answer.trace

    def test_unavailable_state_passes_or_defers_as_configured(self, tmp_path: Path) -> None:
        class Broken(GreylistProvider):
            def peek(self, name: str, request: PolicyRequest, now: float) -> object:
                return ABSENT

        passes = config(tmp_path, GREY_UNKNOWN)
        defers = config(tmp_path, GREY_UNKNOWN.replace("}", ', on_unavailable = "defer" }'))
        got = [settle(c, mail(), T0, Local({"greylist": Broken()})) for c in (passes, defers)]
        assert ["DUNNO", "DEFER_IF_PERMIT 4.7.1 Greylisted, try again later"] == [
            a.text for a in got if isinstance(a, Answer)
        ]

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            ('"yes"', "must be true or a table"),
            ('{ delay = "5 minutes" }', "must be seconds or a duration"),
            ("{ ipv4_prefix = 40 }", "must be a whole number in 8..32"),
            ('{ lifetime = "1d" }', "must be at least the delay and the retry window"),
            ('{ delay = "3d" }', "must be longer than the delay"),
            ("{ dealy = 5 }", "did you mean 'delay'"),
            ('{ on_unavailable = "reject" }', "is not one of pass, defer"),
        ],
    )
    def test_broken_settings_are_refused_at_their_place(
        self, tmp_path: Path, value: str, problem: str
    ) -> None:
        path = tmp_path / "postgate.toml"
        path.write_text(f'[[rules]]\nid = "G"\ngreylist = {value}\n')
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert any(
            problem in str(p) and "rules[0] (G).greylist" in str(p) for p in caught.value.errors
        ), [str(p) for p in caught.value.errors]

    def test_show_describes_the_rule(self, tmp_path: Path) -> None:
        lines = config(tmp_path, GREY_UNKNOWN.replace("}", ", pool = true }")).ruleset.describe()
        assert any(
            "greylist (delay 300 s, pool-aware) -> DEFER_IF_PERMIT" in line for line in lines
        )


class TestReplaySummary:
    def test_how_much_mail_was_delayed_and_by_how_long(self, tmp_path: Path) -> None:
        cfg = config(tmp_path, GREY_UNKNOWN)
        provider = GreylistProvider()
        source = Local({"greylist": provider})
        plan = [
            (T0, mail()),
            (T0 + 400, mail()),  # passes after 400 s
            (T0 + 500, mail(sender="carol@example.org")),
            (T0 + 1400, mail(sender="carol@example.org")),  # passes after 900 s
            (T0 + 1500, mail(sender="spam@example.org")),  # never retried
            (T0 + 1600, mail()),  # known
        ]
        for now, request in plan:
            settle(cfg, request, now, source)
        line = (
            "greylisting: 3 deferred, 3 passed, 0 allowlisted; 2 triplets delayed "
            "(median 650 s, max 900 s), 1 never passed"
        )
        assert [line] == provider.summary()


def block(seconds: int, sender: str, expect: str) -> str:
    return (
        f"# time: {int(T0) + seconds}\n# expect: {expect}\n"
        "request=smtpd_access_policy\nprotocol_state=RCPT\n"
        f"client_address=192.0.2.{seconds % 200}\n"
        f"client_name=unknown\nsender={sender}\nrecipient=bob@example.net\n\n"
    )


class TestReplayCommand:
    def test_replay_simulates_greylisting_on_the_cases_clock(self, tmp_path: Path) -> None:
        (tmp_path / "g.toml").write_text(
            GREY_UNKNOWN + 'action = "450 4.7.1 Greylisted, retry in {retry} s"\n'
        )
        (tmp_path / "mail.policy").write_text(
            block(0, "a@example.org", "450 4.7.1 Greylisted, retry in 300 s")
            + block(100, "a@example.org", "450 4.7.1 Greylisted, retry in 200 s")
            + block(400, "a@example.org", "DUNNO")
            + block(500, "b@example.org", "DUNNO")  # wrong on purpose: it is new
        )
        out, err = io.StringIO(), io.StringIO()
        argv = ["-c", str(tmp_path / "g.toml"), str(tmp_path / "mail.policy")]
        status = replay_main(argv, out, err)
        text = out.getvalue()
        assert (1, "expectations: 3 held, 1 failed") == (status, text.strip().splitlines()[-1])
        assert "1 triplets delayed (median 400 s, max 400 s), 1 never passed" in text
        # The failure is explained from its one decision, not a second one.
        assert "holds (new, retry in 300 s)" in text


class TestStateFile:
    def test_entries_and_clients_survive_a_restart(self, tmp_path: Path) -> None:
        disk = DiskStore(tmp_path / "state.sqlite", clock=lambda: T0)
        store = GreylistStore(disk)
        key, client = "192.0.2.0/24 a@x b@y", "192.0.2.0/24"
        store.record(key, client, T0, S)
        store.record(key, client, T0 + 400, S)
        store.record("192.0.2.0/24 c@x b@y", client, T0 + 500, S)
        disk.close()
        again = GreylistStore(DiskStore(tmp_path / "state.sqlite", clock=lambda: T0))
        assert 3 == again.load(T0 + 600)
        assert store.entries == again.entries
        assert list(store.entries) == list(again.entries)  # oldest first, for eviction
        assert Client(1, T0 + 400) == again.clients[client]
        assert not again.record(key, client, T0 + 700, S).defer

    def test_a_reset_reaches_the_file(self, tmp_path: Path) -> None:
        disk = DiskStore(tmp_path / "state.sqlite", clock=lambda: T0)
        store = GreylistStore(disk)
        store.record("192.0.2.0/24 a@x b@y", "192.0.2.0/24", T0, S)
        store.reset("192.0.2.")
        disk.close()
        again = GreylistStore(DiskStore(tmp_path / "state.sqlite", clock=lambda: T0))
        assert 0 == again.load(T0)

    def test_rows_past_their_lifetime_are_not_loaded(self, tmp_path: Path) -> None:
        disk = DiskStore(tmp_path / "state.sqlite", clock=lambda: T0)
        GreylistStore(disk).record("192.0.2.0/24 a@x b@y", "192.0.2.0/24", T0, S)
        disk.close()
        again = GreylistStore(DiskStore(tmp_path / "state.sqlite", clock=lambda: T0))
        assert 0 == again.load(T0 + 35 * DAY + 1)


class TestStateCommand:
    def test_the_allowlist_and_triplets_are_listed_from_the_state_file(
        self, tmp_path: Path
    ) -> None:
        cfg = tmp_path / "g.toml"
        cfg.write_text(GREY_UNKNOWN.replace("auto_allowlist = 0", "auto_allowlist = 2"))
        file = tmp_path / "state.sqlite"
        now = time.time()
        disk = DiskStore(file)
        store = GreylistStore(disk)
        settings = Settings(allowlist_after=2)
        for hour in (3, 1):  # two triplets passing an hour apart: the network is allowlisted
            key = f"192.0.2.0/24 s{hour}@x r@y"
            store.record(key, "192.0.2.0/24", now - hour * HOUR - 400, settings)
            store.record(key, "192.0.2.0/24", now - hour * HOUR, settings)
        store.record("198.51.100.0/24 a@x r@y", "198.51.100.0/24", now, settings)
        disk.close()
        out, err = io.StringIO(), io.StringIO()
        argv = ["list", "--greylist", "-c", str(cfg), "--file", str(file)]
        assert 0 == state_main(argv, out, err), err.getvalue()
        assert ["192.0.2.0/24  2 passes  allowlisted", "1 clients, 3 triplets"] == (
            out.getvalue().splitlines()
        )
        out = io.StringIO()
        argv = [
            "show",
            "--greylist",
            "--prefix",
            "198.51.100.",
            "-c",
            str(cfg),
            "--file",
            str(file),
        ]
        assert 0 == state_main(argv, out, err)
        assert out.getvalue().startswith("198.51.100.0/24 a@x r@y  first seen ")

    def test_reset_needs_the_daemon(self, tmp_path: Path) -> None:
        cfg = tmp_path / "g.toml"
        cfg.write_text(GREY_UNKNOWN)
        err = io.StringIO()
        assert 69 == state_main(
            ["reset", "--greylist", "--all", "-c", str(cfg)], io.StringIO(), err
        )


def test_reset_on_a_store_by_key_and_prefix() -> None:
    store = GreylistStore()
    store.record("192.0.2.0/24 a@x b@y", "192.0.2.0/24", T0, S)
    store.record("198.51.100.0/24 a@x b@y", "198.51.100.0/24", T0, S)
    assert {"reset": 1} == greylist_report.handle(
        store, {"action": "reset", "key": "192.0.2.0/24 a@x b@y"}, T0
    )
    assert {"reset": 1} == greylist_report.handle(store, {"action": "reset", "all": True}, T0)
    assert ({}, {}) == (store.entries, store.clients)
