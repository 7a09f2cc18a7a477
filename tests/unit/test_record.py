"""The recorder: settings, block format, redaction, rotation, drops and crash safety."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from postgate.config.load import load_config
from postgate.config.problems import Problems
from postgate.config.record import RecordSettings, parse_record_settings
from postgate.daemon.server import Answerer
from postgate.record.blocks import Format, KeyFileError, Redactor, key_path, load_key
from postgate.record.recorder import Recorder
from postgate.record.writer import trim_cut_tail
from postgate.replies.parsing import parse_action
from postgate.wire.codec import Decoder, PolicyRequest, encode_request
from postgate.wire.policy_files import RECORDING_HEADER, parse_policy_text, read_policy_file
from tests.unit.support.records import (
    NOW,
    REACTOR,
    on_reactor,
    ports,
    received,
    recorder,
    request,
    settings,
    started,
    turn,
)

if TYPE_CHECKING:
    from postgate.replies.model import Action


def block(
    req: PolicyRequest,
    answer: str,
    rule: str,
    now: float,
    *,
    decisions: bool = True,
    redactor: Redactor | None = None,
    action: Action | None = None,
) -> str:
    """`Format.block` as text."""
    shape = Format(decisions, redactor)
    data = shape.block(req.wire or req.raw, answer, rule, now, action.line if action else "")
    return data.decode("utf-8", "surrogateescape")


def running(pid: int | None) -> bool:
    """Whether ``pid`` is a process of ours that has not been reaped."""
    return pid is not None and Path(f"/proc/{pid}").exists()


def stop(pid: int | None) -> int:
    """SIGSTOP the writer: it reads nothing more, as behind a stalled disk."""
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    return pid


class TestSettings:
    def test_defaults_record_nothing(self) -> None:
        """An empty [record] table leaves recording off, with no path."""
        problems = Problems("p.toml")
        assert (RecordSettings(), []) == (parse_record_settings({}, problems), problems.errors)

    def test_full_table_is_read_and_relative_path_follows_the_config(self) -> None:
        """Every key is read; a relative path is relative to the config's directory."""
        raw = {
            "path": "rec/requests.policy",
            "enabled": True,
            "max_bytes": 4096,
            "keep": 2,
            "redact": True,
            "decisions": False,
            "max_pending_bytes": 70000,
        }
        problems = Problems("p.toml")
        got = parse_record_settings(raw, problems, Path("/etc/postgate"))
        expected = RecordSettings(
            path=Path("/etc/postgate/rec/requests.policy"),
            enabled=True,
            max_bytes=4096,
            keep=2,
            redact=True,
            decisions=False,
            max_pending_bytes=70000,
        )
        assert (expected, []) == (got, problems.errors)

    def test_every_mistake_is_reported_with_its_place(self) -> None:
        """Unknown keys get a hint; bad types and ranges name the setting."""
        raw = {"pth": "x", "enabled": "yes", "keep": -1, "max_bytes": 1.5, "redact": 1}
        problems = Problems("p.toml")
        parse_record_settings(raw, problems)
        places = [p.place for p in problems.errors]
        assert [
            "record.pth",
            "record.enabled",
            "record.max_bytes",
            "record.keep",
            "record.redact",
        ] == places
        assert "did you mean 'path'?" in problems.errors[0].reason

    def test_enabled_without_path_is_refused(self) -> None:
        """Recording on needs somewhere to write."""
        problems = Problems("p.toml")
        parse_record_settings({"enabled": True}, problems)
        assert ["record.enabled: recording needs record.path"] == [
            f"{p.place}: {p.reason}" for p in problems.errors
        ]


class TestBlockFormat:
    def test_block_replays_to_the_same_request_and_decision(self) -> None:
        """A recorded block parses back to the request, its answer, rule and time."""
        text = RECORDING_HEADER + block(request(3), "DUNNO", "LOCAL", NOW)
        (case,) = parse_policy_text(text, "r.policy")
        expected = (request(3), "DUNNO", "LOCAL", NOW)
        assert expected == (case.request, case.expect, case.expect_rule, case.time)

    def test_block_is_the_wire_format_with_comments_first(self) -> None:
        """Comments, then name=value lines in request order, then one blank line."""
        text = block(PolicyRequest({"request": "smtpd_access_policy"}), "OK", "R", NOW)
        expected = (
            "# time: 2026-03-01T12:00:00.250000Z\n# expect: OK\n# expect-rule: R\n"
            "request=smtpd_access_policy\n\n"
        )
        assert expected == text

    def test_without_decisions_only_the_time_is_noted(self) -> None:
        """decisions = false records requests and time, no expectation."""
        (case,) = parse_policy_text(block(request(), "OK", "R", NOW, decisions=False))
        assert (None, None, NOW) == (case.expect, case.expect_rule, case.time)

    def test_attribute_names_that_would_read_back_differently_are_left_out(self) -> None:
        """'# expect:' smuggled in as a name cannot forge an expectation."""
        hostile = PolicyRequest({**request().as_dict(), "# expect: OK": "x", " spaced": "y"})
        (case,) = parse_policy_text(block(hostile, "DUNNO", "R", NOW))
        assert ("DUNNO", request()) == (case.expect, case.request)

    def test_undecodable_bytes_survive_the_round_trip(self, tmp_path: Path) -> None:
        """A value with invalid UTF-8 (surrogate-escaped) replays byte for byte."""
        odd = request(helo_name="h\udcffst")
        path = tmp_path / "r.policy"
        path.write_bytes(
            (RECORDING_HEADER + block(odd, "DUNNO", "R", NOW)).encode("utf-8", "surrogateescape")
        )
        assert [odd] == [case.request for case in read_policy_file(path)]

    def test_value_ending_in_cr_replays_byte_for_byte(self, tmp_path: Path) -> None:
        """A value ending in CR is written as the wire writes it and reads back unchanged."""
        odd = request(helo_name="host\r")
        path = tmp_path / "r.policy"
        path.write_bytes((RECORDING_HEADER + block(odd, "DUNNO", "R", NOW)).encode())
        assert [odd] == [case.request for case in read_policy_file(path)]

    def test_attribute_no_line_can_carry_is_left_out(self) -> None:
        """A value holding NUL is dropped from the block; the rest of the record stays."""
        odd = PolicyRequest({**request().as_dict(), "helo_name": "a\0b"})
        (case,) = parse_policy_text(block(odd, "DUNNO", "R", NOW))
        assert request() == case.request


class TestRedaction:
    def test_local_parts_become_stable_keyed_hashes(self) -> None:
        """Same key, same address, same hash; the domain stays readable."""
        one, two = Redactor(b"k" * 32), Redactor(b"k" * 32)
        hidden = one.address("alice@example.org")
        local, _, domain = hidden.partition("@")
        assert (hidden, "example.org", 14) == (two.address("alice@example.org"), domain, len(local))
        assert local.startswith("h-")

    def test_another_key_gives_other_hashes(self) -> None:
        """Without the key the hashes cannot be matched to a guessed address."""
        assert Redactor(b"a" * 32).local("alice") != Redactor(b"b" * 32).local("alice")

    def test_null_sender_and_bare_login_are_handled(self) -> None:
        """Empty stays empty; a login without '@' is hashed whole."""
        redactor = Redactor(b"k" * 32)
        assert ("", redactor.local("bob")) == (redactor.address(""), redactor.address("bob"))

    def test_recorded_block_hides_addresses_also_in_the_answer(self) -> None:
        """sender, recipient and sasl_username are hashed; the answer is rendered from them."""
        redactor = Redactor(b"k" * 32)
        req = request(7, sasl_username="alice")
        action = parse_action("550 5.7.1 <{recipient}>: no").action
        text = block(req, action.render(req, "R"), "R", NOW, redactor=redactor, action=action)
        (case,) = parse_policy_text(text)
        rcpt = redactor.address("bob7@example.com")
        assert "alice" not in text
        assert "bob7" not in text
        expected = (f"550 5.7.1 <{rcpt}>: no", rcpt, redactor.local("alice"))
        assert expected == (case.expect, case.request["recipient"], case.request["sasl_username"])

    def test_value_shown_sanitised_in_the_answer_is_hidden_too(self) -> None:
        """A long non-ASCII sender, cut and shown with '?' in the reply, stays out of the file."""
        redactor = Redactor(b"k" * 32)
        local = "\u00e9t\u00e9-" + "x" * 80
        req = request(sender=f"{local}@example.org")
        action = parse_action("REJECT {sender} refused").action
        text = block(req, action.render(req, "R"), "R", NOW, redactor=redactor, action=action)
        (case,) = parse_policy_text(text)
        assert ("?t?-xxxx" in text, case.expect) == (False, action.render(case.request, "R"))

    def test_one_letter_sender_leaves_the_answer_intact(self) -> None:
        """A sender 'e' no longer turns every 'e' of the answer into its hash."""
        redactor = Redactor(b"k" * 32)
        action = parse_action("REJECT sender refused").action
        req = request(sender="e")
        text = block(req, "REJECT sender refused", "R", NOW, redactor=redactor, action=action)
        (case,) = parse_policy_text(text)
        assert ("REJECT sender refused", redactor.local("e")) == (
            case.expect,
            case.request["sender"],
        )

    def test_without_the_action_an_answer_showing_a_hidden_value_is_left_out(self) -> None:
        """No action to render with: '# expect:' is omitted, '# expect-rule:' kept."""
        redactor = Redactor(b"k" * 32)
        req = request(sender="x" * 80 + "@example.org")
        answer = f"REJECT {'x' * 61}... refused"
        (case,) = parse_policy_text(block(req, answer, "R", NOW, redactor=redactor))
        assert (None, "R") == (case.expect, case.expect_rule)

    def test_without_the_action_an_answer_showing_no_hidden_value_is_kept(self) -> None:
        """No action, but the answer quotes nothing redacted: it is written as sent."""
        redactor = Redactor(b"k" * 32)
        text = block(request(), "DUNNO", "R", NOW, redactor=redactor)
        (case,) = parse_policy_text(text)
        assert ("DUNNO", "R") == (case.expect, case.expect_rule)

    def test_key_file_is_private_and_reused(self, tmp_path: Path) -> None:
        """The key is created once, mode 0600, and read back the next time."""
        path = key_path(tmp_path / "r.policy")
        first = load_key(path)
        assert (32, 0o600, first) == (len(first), path.stat().st_mode & 0o777, load_key(path))


class TestPathsAtLoad:
    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            ("rec\0.policy", "must not contain a NUL character"),
            ("rec/", "is a directory, not a file name"),
            (".", "is a directory, not a file name"),
            ("x" * 256, "too long"),
        ],
        ids=["nul", "slash", "directory", "long-name"],
    )
    def test_paths_no_writer_could_open_are_load_errors(
        self, tmp_path: Path, value: str, reason: str
    ) -> None:
        """Said at load, with the setting's place, not by a writer dying once a second."""
        problems = Problems("p.toml")
        got = parse_record_settings({"path": value}, problems, tmp_path)
        (problem,) = problems.errors
        assert (None, "record.path", True) == (got.path, problem.place, reason in problem.reason)


class TestRedactionLimits:
    def test_many_long_distinct_senders_keep_no_memory(self) -> None:
        """2,000 distinct 16 KB local parts: the redactor holds on to none of them."""
        redactor = Redactor(b"k" * 32)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(2000):
                redactor.address(f"{n:05d}{'x' * 16_000}@example.org")
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 1 << 20, f"{grown} bytes kept"

    def test_key_of_the_wrong_length_is_refused(self, tmp_path: Path) -> None:
        """A 0-byte key (left by a full disk) would be a keyless HMAC: refused, named."""
        path = key_path(tmp_path / "r.policy")
        path.write_bytes(b"")
        with pytest.raises(KeyFileError, match="0 bytes"):
            load_key(path)

    def test_failed_key_write_leaves_no_key_file(self, tmp_path: Path) -> None:
        """The write fails (a file size limit of 0, like a full disk): no key file is left."""
        path = key_path(tmp_path / "r.policy")
        done = subprocess.run(
            [sys.executable, "-c", KEY_WRITER, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ("failed", []) == (done.stdout.strip(), list(tmp_path.iterdir())), done.stderr

    def test_recorder_refuses_to_redact_with_a_bad_key(self, tmp_path: Path) -> None:
        """redact = true and an empty key file: recording stays off, with one clear error."""
        path = tmp_path / "r.policy"
        key_path(path).write_bytes(b"")
        with capture_logs() as logs:
            made = Recorder(settings(path, redact=True), REACTOR)
            switched = made.set_enabled(True)
        errors = [e["event"] for e in logs if e["log_level"] == "error"]
        assert (False, False, ["record_key_failed"]) == (made.enabled, switched, errors)


# Creates a key with writes limited to 0 bytes (EFBIG, as ENOSPC would fail them).
KEY_WRITER = """
import resource, signal, sys
from pathlib import Path
from postgate.record.blocks import load_key
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
try:
    load_key(Path(sys.argv[1]))
except OSError:
    print("failed")
else:
    print("created")
"""


class TestRecorder:
    @on_reactor
    async def test_flushed_records_replay_in_order(self, tmp_path: Path) -> None:
        """After a flush the file holds every record, whole, in the order added."""
        path = tmp_path / "rec" / "r.policy"
        made = recorder(path)
        for n in range(50):
            made.add(request(n), "DUNNO", "R", NOW + n)
        await made.flush()
        assert list(range(50)) == ports(path)
        await made.close()
        assert (50, 0) == (made.written, made.dropped)

    @on_reactor
    async def test_file_is_whole_blocks_after_every_flush(self, tmp_path: Path) -> None:
        """Each flush leaves a file ending with a blank line and no partial block."""
        path = tmp_path / "r.policy"
        made = recorder(path)
        ends = []
        for n in range(5):
            made.add(request(n), "DUNNO", "R", NOW)
            await made.flush()
            ends.append(path.read_bytes().endswith(b"\n\n"))
        await made.close()
        assert ([True] * 5, list(range(5))) == (ends, ports(path))

    @on_reactor
    async def test_disabled_recorder_writes_nothing(self, tmp_path: Path) -> None:
        """Recording off: add() is a no-op and no file appears."""
        path = tmp_path / "r.policy"
        made = recorder(path, enabled=False)
        made.add(request(), "DUNNO", "R", NOW)
        await made.flush()
        await made.close()
        assert (False, 0) == (path.exists(), made.written)

    @on_reactor
    async def test_switching_on_and_off_without_restart(self, tmp_path: Path) -> None:
        """Only records added while enabled are written (the SIGUSR1 toggle)."""
        path = tmp_path / "r.policy"
        made = recorder(path, enabled=False)
        states = [made.set_enabled(True)]
        made.add(request(1), "DUNNO", "R", NOW)
        states.append(made.set_enabled(False))
        made.add(request(2), "DUNNO", "R", NOW)
        await made.close()
        assert ([True, False], [1]) == (states, ports(path))

    @on_reactor
    async def test_no_writer_process_until_a_record_needs_one(self, tmp_path: Path) -> None:
        """Off at start: no process; the first record starts one; close() ends it."""
        made = recorder(tmp_path / "r.policy", enabled=False)
        idle = made.writer_pid
        made.set_enabled(True)
        await turn(0.01)
        switched_on = made.writer_pid
        made.add(request(1), "DUNNO", "R", NOW)
        pid = await started(made)
        alive = running(pid)
        await made.close()
        assert (None, None, True, False) == (idle, switched_on, alive, running(pid))

    @on_reactor
    async def test_never_started_recorder_flushes_and_closes(self) -> None:
        """Without a path nothing starts; flush() and close() return at once, cleanly."""
        made = Recorder(RecordSettings(), REACTOR)
        await made.flush()
        await made.close()
        assert (None, False) == (made.writer_pid, made.enabled)

    @on_reactor
    async def test_reload_that_enables_recording_starts_the_writer(self, tmp_path: Path) -> None:
        """A reconfigure switching recording on writes from then on."""
        path = tmp_path / "r.policy"
        made = Recorder(RecordSettings(), REACTOR)
        made.reconfigure(settings(path))
        made.add(request(4), "DUNNO", "R", NOW)
        await made.close()
        assert [4] == ports(path)

    @on_reactor
    async def test_closed_recorder_cannot_be_switched_back_on(self, tmp_path: Path) -> None:
        """After close() the toggle stays off: no writer would take the records."""
        made = recorder(tmp_path / "r.policy", enabled=False)
        await made.close()
        assert made.set_enabled(True) is False

    def test_cannot_switch_on_without_a_path(self) -> None:
        """No [record] path: the toggle stays off and says so."""
        assert Recorder(RecordSettings(), REACTOR).set_enabled(True) is False

    @on_reactor
    async def test_reconfigure_moves_to_the_new_file(self, tmp_path: Path) -> None:
        """After a reload with another path, new records go there; the old file is whole."""
        old, new = tmp_path / "old.policy", tmp_path / "new.policy"
        made = recorder(old)
        made.add(request(1), "DUNNO", "R", NOW)
        await made.flush()
        made.reconfigure(settings(new))
        made.add(request(2), "DUNNO", "R", NOW)
        await made.close()
        assert ([1], [2]) == (ports(old), ports(new))

    @on_reactor
    async def test_records_queued_before_a_reload_go_to_the_old_file(self, tmp_path: Path) -> None:
        """A reload in the middle of a turn: what came before it is written where it was meant."""
        old, new = tmp_path / "old.policy", tmp_path / "new.policy"
        made = recorder(old)
        for n in range(3):
            made.add(request(n), "DUNNO", "R", NOW)
        made.reconfigure(settings(new))
        for n in range(3, 5):
            made.add(request(n), "DUNNO", "R", NOW)
        await made.close()
        assert ([0, 1, 2], [3, 4]) == (ports(old), ports(new))

    @on_reactor
    async def test_write_failure_is_logged_by_the_daemon_and_counted(self, tmp_path: Path) -> None:
        """A file the writer cannot open: one record_write_failed error, its records dropped."""
        plain = tmp_path / "plain"
        plain.write_text("not a directory")
        made = recorder(plain / "r.policy")
        with capture_logs() as logs:
            made.add(request(1), "DUNNO", "R", NOW)
            await made.close()
        failed = [(e["log_level"], e["path"]) for e in logs if e["event"] == "record_write_failed"]
        assert ([("error", str(plain / "r.policy"))], 1) == (failed, made.dropped)

    @on_reactor
    async def test_redacting_recorder_renders_the_expectation_it_replays(
        self, tmp_path: Path
    ) -> None:
        """Given the action, the writer's '# expect:' equals replay's rendering, no address."""
        path = tmp_path / "r.policy"
        action = parse_action("REJECT <{sender}> refused").action
        req = request(1, sender="e")
        made = recorder(path, redact=True)
        made.add(req, action.render(req, "R"), "R", NOW, action)
        await made.close()
        (case,) = read_policy_file(path)
        assert case.expect == action.render(case.request, "R")
        assert "<e>" not in path.read_text()

    @on_reactor
    async def test_the_daemons_answers_are_recorded_and_redacted_alike(
        self, tmp_path: Path
    ) -> None:
        """The answer path's own append (an `Answer`): the same block as `add` gives."""
        conf = tmp_path / "postgate.toml"
        conf.write_text('[[rules]]\nid = "R"\naction = "REJECT <{sender}> refused"\n')
        path = tmp_path / "r.policy"
        made = recorder(path, redact=True)
        reply = Answerer(load_config(conf), recorder=made).answer(received(1, sender="e@x"))
        await made.close()
        (case,) = read_policy_file(path)
        assert (b"action=REJECT <e@x> refused\n\n", "R") == (reply, case.expect_rule)
        assert case.expect == parse_action("REJECT <{sender}> refused").action.render(
            case.request, "R"
        )
        assert "<e@x>" not in path.read_text()

    @on_reactor
    async def test_redacting_recorder_keeps_its_key_beside_the_file(self, tmp_path: Path) -> None:
        """redact = true: no local part in the file, the key in r.policy.key."""
        path = tmp_path / "r.policy"
        made = recorder(path, redact=True)
        made.add(request(1), "DUNNO", "R", NOW)
        await made.close()
        expected = Redactor(load_key(key_path(path))).address("bob1@example.com")
        (case,) = read_policy_file(path)
        assert (expected, False) == (case.request["recipient"], b"bob1" in path.read_bytes())


class TestRotation:
    @on_reactor
    async def test_rotates_by_size_and_keeps_the_newest_files(self, tmp_path: Path) -> None:
        """path, path.1, path.2 hold the newest records, contiguous; older ones are gone."""
        path = tmp_path / "r.policy"
        made = recorder(path, max_bytes=1000, keep=2)
        for n in range(30):
            made.add(request(n), "DUNNO", "R", NOW)
            await made.flush()
        await made.close()
        files = [path.with_name("r.policy.2"), path.with_name("r.policy.1"), path]
        kept = [port for file in files for port in ports(file)]
        assert kept == list(range(30 - len(kept), 30))
        assert not path.with_name("r.policy.3").exists()
        assert all(f.stat().st_size <= 1000 for f in files)
        assert all(f.read_text().startswith(RECORDING_HEADER) for f in files)

    @on_reactor
    async def test_keep_zero_starts_over_without_copies(self, tmp_path: Path) -> None:
        """keep = 0: the full file is dropped and a new one begun."""
        path = tmp_path / "r.policy"
        made = recorder(path, max_bytes=1000, keep=0)
        for n in range(10):
            made.add(request(n), "DUNNO", "R", NOW)
            await made.flush()
        await made.close()
        kept = ports(path)
        assert (False, kept) == (
            path.with_name("r.policy.1").exists(),
            list(range(10 - len(kept), 10)),
        )

    @pytest.mark.parametrize("keep", [1, 3])
    @on_reactor
    async def test_rotated_files_each_replay_on_their_own(self, tmp_path: Path, keep: int) -> None:
        """Every rotated file starts with the header and parses by itself."""
        path = tmp_path / "r.policy"
        made = recorder(path, max_bytes=800, keep=keep)
        for n in range(12):
            made.add(request(n), "DUNNO", "R", NOW)
            await made.flush()
        await made.close()
        rotated = sorted(tmp_path.glob("r.policy.*"))  # noqa: ASYNC240 - a test directory
        assert keep == len(rotated)
        assert all(len(read_policy_file(f)) >= 1 for f in rotated)


async def fill(made: Recorder, first: int, **extra: str) -> int:
    """Add records, letting the reactor push between, until one is dropped (bounded)."""
    added = first
    while made.dropped == 0 and added < first + 200_000:
        for _ in range(100):
            made.add(received(added, **extra), "DUNNO", "R", NOW)
            added += 1
        await turn(0.006)  # past PUSH_DELAY: a push, so the writer starts and the pipe fills
    return added


def read_fifo(fifo: Path, chunks: list[bytes]) -> None:
    """Open the FIFO's reading end (unblocking the writer) and read to its end."""
    reader = os.open(fifo, os.O_RDONLY)
    try:
        chunks.extend(iter(lambda: os.read(reader, 65536), b""))
    finally:
        os.close(reader)


class TestDrops:
    @on_reactor
    async def test_blocked_writer_costs_counted_drops_not_waiting(self, tmp_path: Path) -> None:
        """With the writer stuck on a FIFO nobody reads, add() drops and counts; the log
        says so while it is stuck, and again at close.

        The writer blocks opening the FIFO, so the pipe to it fills; then
        ``max_pending_bytes`` of requests wait in the daemon and the next are dropped.
        """
        fifo = tmp_path / "r.policy"
        os.mkfifo(fifo)
        with capture_logs() as logs:
            made = recorder(fifo, max_pending_bytes=1 << 16)
            added = await fill(made, 0)
            more = 20
            for n in range(more):
                made.add(received(added + n), "DUNNO", "R", NOW)
            await turn(0.01)
            stalled = [e["event"] for e in logs if e["event"] == "record_dropped"]
            chunks: list[bytes] = []
            thread = threading.Thread(target=read_fifo, args=(fifo, chunks), daemon=True)
            thread.start()  # a thread: opening waits for the writer, which the reactor runs
            await made.close()
            thread.join(10)
        written = parse_policy_text(b"".join(chunks).decode())
        dropped = made.dropped
        assert (added + more, True) == (len(written) + dropped, dropped >= more)
        events = [e["total"] for e in logs if e["event"] == "record_dropped"]
        assert (["record_dropped"], dropped, 2) == (stalled, events[-1], len(events))

    @on_reactor
    async def test_pending_requests_are_bounded_in_bytes(self, tmp_path: Path) -> None:
        """Writer stopped: 60 KB requests fill max_pending_bytes after about that many bytes.

        Bounded in records, 10,000 of them held 572 MiB.
        """
        made = recorder(tmp_path / "r.policy", max_pending_bytes=4 << 20)
        made.add(received(0), "DUNNO", "R", NOW)
        stop(await started(made))
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            added = await fill(made, 1, **BIG)
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
            await made.close(timeout=0.3)
        # The pipe (1 MiB), the transport's buffer and 4 MiB in the queue; each request
        # is held as its bytes and its decoded values.
        assert (True, True) == (added < 200, held < 24 << 20), (added, held)

    @on_reactor
    async def test_a_backlog_drains_in_short_reactor_turns(self, tmp_path: Path) -> None:
        """Writer stopped, then resumed with a full backlog: no turn of the reactor
        takes long, so answers go on while the backlog drains."""
        made = recorder(tmp_path / "r.policy", max_pending_bytes=32 << 20)
        made.add(received(0), "DUNNO", "R", NOW)
        pid = stop(await started(made))
        added = await fill(made, 1, **BIG)
        late: list[float] = []
        os.kill(pid, signal.SIGCONT)
        flushed = made.flush()
        while not flushed.called and len(late) < 60_000:
            start = time.monotonic()
            await turn(0.001)
            late.append(time.monotonic() - start)
        await flushed
        await made.close()
        assert (added, True) == (made.written + made.dropped, max(late) < 0.1), max(late)

    @on_reactor
    async def test_records_a_close_cannot_send_are_counted_as_dropped(self, tmp_path: Path) -> None:
        """Writer stopped (SIGSTOP), close() times out: every record not written is dropped."""
        path = tmp_path / "r.policy"
        made = recorder(path, max_pending_bytes=1 << 16)
        made.add(received(0), "DUNNO", "R", NOW)
        await made.flush()  # the first record is on disk, its writer gone
        made.add(received(1), "DUNNO", "R", NOW)
        stop(await started(made))
        added = await fill(made, 2)
        with capture_logs() as logs:
            await made.close(timeout=0.3)
        timeouts = [e["event"] for e in logs if e["event"] == "record_close_timeout"]
        assert (["record_close_timeout"], [0]) == (timeouts, ports(path))
        assert (1, added) == (made.written, made.written + made.dropped)

    @on_reactor
    async def test_unwritable_record_is_counted_and_the_writer_goes_on(
        self, tmp_path: Path
    ) -> None:
        """A record that cannot be made into a block is dropped, logged; later ones are written."""
        path = tmp_path / "r.policy"
        made = recorder(path)
        with capture_logs() as logs:
            made.add(request(1, helo_name="\ud800"), "DUNNO", "R", NOW)
            await made.flush()
        made.add(request(2), "DUNNO", "R", NOW)
        await made.close()
        failed = [e["records"] for e in logs if e["event"] == "record_failed"]
        assert ([2], 1, [1]) == (ports(path), made.dropped, failed)


BIG = dict.fromkeys(("helo_name", "ccert_subject", "ccert_issuer"), "x" * 15000)


class TestWriterFailures:
    @on_reactor
    async def test_a_writer_that_keeps_dying_backs_off_and_logs_structured_events(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A writer that dies at every start (a NUL in a path no check saw): restarts
        1 s, then 2 s apart, one event each with its last stderr line, and nothing
        of its traceback on the daemon's own output."""
        made = Recorder(RecordSettings(path=tmp_path / "r\0.policy", enabled=True), REACTOR)
        with capture_logs() as logs:
            deadline = time.monotonic() + 3.6
            while time.monotonic() < deadline:
                made.add(request(1), "DUNNO", "R", NOW)
                await turn(0.05)
            await made.close(timeout=1)
        died = [e for e in logs if e["event"] == "record_writer_died"]
        out, err = capfd.readouterr()
        assert ("", "", [1.0, 2.0]) == (out, err, [e["restart_in"] for e in died[:2]])
        assert all("embedded null byte" in e["stderr"] for e in died)
        assert len(died) <= 3


# A daemon recording requests as fast as it can, killed while its writer is busy.
CRASHER = """
import os, signal, sys
from pathlib import Path
from twisted.internet import reactor
from postgate.wire.codec import PolicyRequest
from postgate.config.record import RecordSettings
from postgate.record.recorder import Recorder

path, count = Path(sys.argv[1]), int(sys.argv[2])
recorder = Recorder(RecordSettings(path=path, enabled=True, max_pending_bytes=1 << 30), reactor)

def feed(first):
    for n in range(first, min(first + 500, count)):
        attrs = {"request": "smtpd_access_policy", "client_port": str(n),
                 "recipient": f"r{n}@example.com", "padding": "x" * (n % 700)}
        recorder.add(PolicyRequest(attrs), "DUNNO", "DEFAULT", 1e9 + n)
    if first + 500 < count:
        reactor.callLater(0.001, feed, first + 500)
    else:
        print(recorder.writer_pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # while the writer is still busy

reactor.callWhenRunning(feed, 0)
reactor.run()
"""


def crash_request(n: int) -> PolicyRequest:
    return PolicyRequest(
        {
            "request": "smtpd_access_policy",
            "client_port": str(n),
            "recipient": f"r{n}@example.com",
            "padding": "x" * (n % 700),
        }
    )


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    """Poll (bounded) until ``pid`` has exited; True if it did."""
    for _ in range(int(seconds / 0.01)):
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.01)
    return False


def untorn(path: Path) -> tuple[list[int], list[int]]:
    """The ports recorded, and the lines of blocks whose fields do not belong together."""
    cases = read_policy_file(path)
    torn = [
        c.line
        for c in cases
        if c.request["recipient"] != f"r{c.request['client_port']}@example.com"
    ]
    return [int(c.request["client_port"]) for c in cases], torn


class TestCrashSafety:
    def test_daemon_killed_mid_recording_leaves_whole_blocks(self, tmp_path: Path) -> None:
        """SIGKILL of the daemon: its writer writes what it was sent, whole, and exits."""
        path = tmp_path / "r.policy"
        done = subprocess.run(
            [sys.executable, "-c", CRASHER, str(path), "20000"],
            timeout=120,
            check=False,
            capture_output=True,
            text=True,
        )
        writer_exited = wait_gone(int(done.stdout))
        numbers, torn = untorn(path)
        assert (-signal.SIGKILL, True, []) == (done.returncode, writer_exited, torn)
        assert path.read_bytes().endswith(b"\n\n")
        assert len(numbers) >= 1000
        assert numbers == sorted(set(numbers))  # in order, none twice

    @on_reactor
    async def test_writer_killed_mid_stream_is_replaced_and_nothing_later_is_lost(
        self, tmp_path: Path
    ) -> None:
        """SIGKILL of the writer: logged, another starts; the file replays in order."""
        path = tmp_path / "r.policy"
        made = recorder(path, max_pending_bytes=1 << 30)
        with capture_logs() as logs:
            for n in range(3000):
                made.add(crash_request(n), "DUNNO", "R", NOW)
            first = await started(made)
            os.kill(first, signal.SIGKILL)
            added = 3000
            while made.writer_pid in (first, None) and added < 3000 + 600:
                made.add(crash_request(added), "DUNNO", "R", NOW)
                added += 1
                await turn(0.01)  # the first restart waits a second
            for n in range(10):
                made.add(crash_request(added + n), "DUNNO", "R", NOW)
            await made.close()
        numbers, torn = untorn(path)
        died = [e["event"] for e in logs if e["event"] == "record_writer_died"]
        assert ([], ["record_writer_died"]) == (torn, died)
        assert numbers == sorted(set(numbers))
        assert list(range(added, added + 10)) == numbers[-10:]

    @on_reactor
    async def test_writer_outlives_the_signals_a_stop_sends_to_the_group(
        self, tmp_path: Path
    ) -> None:
        """SIGTERM, SIGINT, SIGHUP to the writer do not end it: it ends when the daemon closes."""
        path = tmp_path / "r.policy"
        made = recorder(path)
        made.add(request(1), "DUNNO", "R", NOW)
        pid = await started(made)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            os.kill(pid, signum)
        made.add(request(2), "DUNNO", "R", NOW)
        await made.flush()
        await made.close()
        assert ([1, 2], 0) == (ports(path), made.dropped)

    @on_reactor
    async def test_cut_last_block_is_ignored_on_read_and_trimmed_on_reopen(
        self, tmp_path: Path
    ) -> None:
        """A write cut short leaves a partial block: replay skips it, the recorder removes it."""
        path = tmp_path / "r.policy"
        whole = RECORDING_HEADER + block(request(1), "DUNNO", "R", NOW)
        path.write_text(whole + block(request(2), "DUNNO", "R", NOW)[:-40])
        before = ports(path)
        with capture_logs() as logs:
            made = recorder(path)
            made.add(request(3), "DUNNO", "R", NOW)
            await made.close()
        assert ([1], [1, 3]) == (before, ports(path))
        assert ["record_repaired"] == [e["event"] for e in logs]

    def test_files_that_are_not_recordings_are_never_trimmed(self, tmp_path: Path) -> None:
        """Only a file with the recording header is ever cut."""
        path = tmp_path / "hand.policy"
        path.write_text("request=smtpd_access_policy\nrecipient=a@b")
        assert (0, "request=smtpd_access_policy\nrecipient=a@b") == (
            trim_cut_tail(path),
            path.read_text(),
        )


class TestCopiedLines:
    """Requests read from a peer are recorded by copying their received lines."""

    @staticmethod
    def received(raw: bytes) -> PolicyRequest:
        (decoded,) = Decoder().feed(raw)
        return decoded

    def test_copied_block_reads_back_as_the_formatted_one(self) -> None:
        """The copied lines and the line-by-line form replay to the same case."""
        decoded = self.received(encode_request(request(4).as_dict()))
        copied = block(decoded, "DUNNO", "LOCAL", NOW)
        formatted = block(PolicyRequest(decoded.raw), "DUNNO", "LOCAL", NOW)
        (fast,) = parse_policy_text(copied)
        (slow,) = parse_policy_text(formatted)
        assert (slow.request, slow.expect, slow.expect_rule, slow.time) == (
            fast.request,
            fast.expect,
            fast.expect_rule,
            fast.time,
        )
        assert decoded.wire.decode() in copied

    def test_line_that_reads_as_a_comment_is_never_copied(self) -> None:
        """A client cannot forge an expectation: such a request is reformatted."""
        raw = b"request=smtpd_access_policy\n# expect: OK=1\nrecipient=a@x\n\n"
        decoded = self.received(raw)
        (case,) = parse_policy_text(block(decoded, "REJECT no", "R", NOW))
        assert ("REJECT no", "a@x") == (case.expect, case.request.get("recipient"))
        assert "# expect: OK=1" not in block(decoded, "REJECT no", "R", NOW)

    @pytest.mark.parametrize("blank", ["\v", "\f", "\x1c", "\u00a0", "\u3000"])
    def test_name_with_any_outer_blank_is_never_copied(self, blank: str) -> None:
        """A vertical tab or a no-break space around a name (which the reader refuses)
        sends the request to the line-by-line form: the recording stays readable."""
        raw = f"request=smtpd_access_policy\n{blank}odd=1\nrecipient=a@x\n\n".encode()
        (case,) = parse_policy_text(block(self.received(raw), "DUNNO", "R", NOW))
        assert {"request": "smtpd_access_policy", "recipient": "a@x"} == case.request.as_dict()
