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
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from postgate.config.problems import Problems
from postgate.record.blocks import encode_block
from postgate.record.recorder import (
    Recorder,
    RecordSettings,
    Redactor,
    format_block,
    key_path,
    load_key,
    parse_record_settings,
    trim_cut_tail,
)
from postgate.replies.actions import parse_action
from postgate.wire.codec import Decoder, PolicyRequest, encode_request
from postgate.wire.policy_files import RECORDING_HEADER, parse_policy_text, read_policy_file
from tests.unit.support.records import NOW, ports, request, settings


def running(pid: int | None) -> bool:
    """Whether ``pid`` is a process of ours that has not been reaped."""
    return pid is not None and Path(f"/proc/{pid}").exists()


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


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
            "max_pending": 7,
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
            max_pending=7,
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
        text = RECORDING_HEADER + format_block(request(3), "DUNNO", "LOCAL", NOW)
        (case,) = parse_policy_text(text, "r.policy")
        expected = (request(3), "DUNNO", "LOCAL", NOW)
        assert expected == (case.request, case.expect, case.expect_rule, case.time)

    def test_block_is_the_wire_format_with_comments_first(self) -> None:
        """Comments, then name=value lines in request order, then one blank line."""
        text = format_block(PolicyRequest({"request": "smtpd_access_policy"}), "OK", "R", NOW)
        expected = (
            "# time: 2026-03-01T12:00:00.250000Z\n# expect: OK\n# expect-rule: R\n"
            "request=smtpd_access_policy\n\n"
        )
        assert expected == text

    def test_without_decisions_only_the_time_is_noted(self) -> None:
        """decisions = false records requests and time, no expectation."""
        (case,) = parse_policy_text(format_block(request(), "OK", "R", NOW, decisions=False))
        assert (None, None, NOW) == (case.expect, case.expect_rule, case.time)

    def test_attribute_names_that_would_read_back_differently_are_left_out(self) -> None:
        """'# expect:' smuggled in as a name cannot forge an expectation."""
        hostile = PolicyRequest({**request().as_dict(), "# expect: OK": "x", " spaced": "y"})
        (case,) = parse_policy_text(format_block(hostile, "DUNNO", "R", NOW))
        assert ("DUNNO", request()) == (case.expect, case.request)

    def test_undecodable_bytes_survive_the_round_trip(self, tmp_path: Path) -> None:
        """A value with invalid UTF-8 (surrogate-escaped) replays byte for byte."""
        odd = request(helo_name="h\udcffst")
        path = tmp_path / "r.policy"
        path.write_bytes(
            (RECORDING_HEADER + format_block(odd, "DUNNO", "R", NOW)).encode(
                "utf-8", "surrogateescape"
            )
        )
        assert [odd] == [case.request for case in read_policy_file(path)]

    def test_value_ending_in_cr_replays_byte_for_byte(self, tmp_path: Path) -> None:
        """A value ending in CR is written as the wire writes it and reads back unchanged."""
        odd = request(helo_name="host\r")
        path = tmp_path / "r.policy"
        path.write_bytes((RECORDING_HEADER + format_block(odd, "DUNNO", "R", NOW)).encode())
        assert [odd] == [case.request for case in read_policy_file(path)]

    def test_attribute_no_line_can_carry_is_left_out(self) -> None:
        """A value holding NUL is dropped from the block; the rest of the record stays."""
        odd = PolicyRequest({**request().as_dict(), "helo_name": "a\0b"})
        (case,) = parse_policy_text(format_block(odd, "DUNNO", "R", NOW))
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
        text = format_block(
            req, action.render(req, "R"), "R", NOW, redactor=redactor, action=action
        )
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
        text = format_block(
            req, action.render(req, "R"), "R", NOW, redactor=redactor, action=action
        )
        (case,) = parse_policy_text(text)
        assert ("?t?-xxxx" in text, case.expect) == (False, action.render(case.request, "R"))

    def test_one_letter_sender_leaves_the_answer_intact(self) -> None:
        """A sender 'e' no longer turns every 'e' of the answer into its hash."""
        redactor = Redactor(b"k" * 32)
        action = parse_action("REJECT sender refused").action
        req = request(sender="e")
        text = format_block(
            req, "REJECT sender refused", "R", NOW, redactor=redactor, action=action
        )
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
        (case,) = parse_policy_text(format_block(req, answer, "R", NOW, redactor=redactor))
        assert (None, "R") == (case.expect, case.expect_rule)

    def test_without_the_action_an_answer_showing_no_hidden_value_is_kept(self) -> None:
        """No action, but the answer quotes nothing redacted: it is written as sent."""
        redactor = Redactor(b"k" * 32)
        text = format_block(request(), "DUNNO", "R", NOW, redactor=redactor)
        (case,) = parse_policy_text(text)
        assert ("DUNNO", "R") == (case.expect, case.expect_rule)

    def test_key_file_is_private_and_reused(self, tmp_path: Path) -> None:
        """The key is created once, mode 0600, and read back the next time."""
        path = key_path(tmp_path / "r.policy")
        first = load_key(path)
        assert (32, 0o600, first) == (len(first), path.stat().st_mode & 0o777, load_key(path))


class TestRecorder:
    def test_flushed_records_replay_in_order(self, tmp_path: Path) -> None:
        """After a flush the file holds every record, whole, in the order added."""
        path = tmp_path / "rec" / "r.policy"
        recorder = Recorder(settings(path))
        for n in range(50):
            recorder.add(request(n), "DUNNO", "R", NOW + n)
        assert recorder.flush(10)
        assert list(range(50)) == ports(path)
        recorder.close()
        assert (50, 0) == (recorder.written, recorder.dropped)

    def test_file_is_whole_blocks_after_every_flush(self, tmp_path: Path) -> None:
        """Each flush leaves a file ending with a blank line and no partial block."""
        path = tmp_path / "r.policy"
        recorder = Recorder(settings(path))
        ends = []
        for n in range(5):
            recorder.add(request(n), "DUNNO", "R", NOW)
            recorder.flush(10)
            ends.append(path.read_bytes().endswith(b"\n\n"))
        recorder.close()
        assert ([True] * 5, list(range(5))) == (ends, ports(path))

    def test_disabled_recorder_writes_nothing(self, tmp_path: Path) -> None:
        """Recording off: add() is a no-op and no file appears."""
        path = tmp_path / "r.policy"
        recorder = Recorder(settings(path, enabled=False))
        recorder.add(request(), "DUNNO", "R", NOW)
        recorder.flush(10)
        recorder.close()
        assert (False, 0) == (path.exists(), recorder.written)

    def test_switching_on_and_off_without_restart(self, tmp_path: Path) -> None:
        """Only records added while enabled are written (the SIGUSR1 toggle)."""
        path = tmp_path / "r.policy"
        recorder = Recorder(settings(path, enabled=False))
        states = [recorder.set_enabled(True)]
        recorder.add(request(1), "DUNNO", "R", NOW)
        states.append(recorder.set_enabled(False))
        recorder.add(request(2), "DUNNO", "R", NOW)
        recorder.close()
        assert ([True, False], [1]) == (states, ports(path))

    def test_no_writer_process_until_a_record_needs_one(self, tmp_path: Path) -> None:
        """Off at start: no process; the first record starts one; close() ends it."""
        recorder = Recorder(settings(tmp_path / "r.policy", enabled=False))
        idle = recorder.writer_pid
        recorder.set_enabled(True)
        switched_on = recorder.writer_pid
        recorder.add(request(1), "DUNNO", "R", NOW)
        pid = recorder.writer_pid
        alive = running(pid)
        recorder.close()
        assert (None, None, True, False) == (idle, switched_on, alive, running(pid))

    def test_never_started_recorder_flushes_and_closes(self) -> None:
        """Without a path nothing starts; flush() and close() return at once, cleanly."""
        recorder = Recorder(RecordSettings())
        flushed = recorder.flush(10)
        recorder.close()
        assert (True, None, False) == (flushed, recorder.writer_pid, recorder.enabled)

    def test_reload_that_enables_recording_starts_the_writer(self, tmp_path: Path) -> None:
        """A reconfigure switching recording on writes from then on."""
        path = tmp_path / "r.policy"
        recorder = Recorder(RecordSettings())
        recorder.reconfigure(settings(path))
        recorder.add(request(4), "DUNNO", "R", NOW)
        recorder.close()
        assert [4] == ports(path)

    def test_closed_recorder_cannot_be_switched_back_on(self, tmp_path: Path) -> None:
        """After close() the toggle stays off: no writer would take the records."""
        recorder = Recorder(settings(tmp_path / "r.policy", enabled=False))
        recorder.close()
        assert recorder.set_enabled(True) is False

    def test_cannot_switch_on_without_a_path(self) -> None:
        """No [record] path: the toggle stays off and says so."""
        recorder = Recorder(RecordSettings())
        state = recorder.set_enabled(True)
        recorder.close()
        assert state is False

    def test_reconfigure_moves_to_the_new_file(self, tmp_path: Path) -> None:
        """After a reload with another path, new records go there; the old file is whole."""
        old, new = tmp_path / "old.policy", tmp_path / "new.policy"
        recorder = Recorder(settings(old))
        recorder.add(request(1), "DUNNO", "R", NOW)
        recorder.flush(10)
        recorder.reconfigure(settings(new))
        recorder.add(request(2), "DUNNO", "R", NOW)
        recorder.close()
        assert ([1], [2]) == (ports(old), ports(new))

    def test_redacting_recorder_renders_the_expectation_it_replays(self, tmp_path: Path) -> None:
        """Given the action, the writer's '# expect:' equals replay's rendering, no address."""
        path = tmp_path / "r.policy"
        action = parse_action("REJECT <{sender}> refused").action
        req = request(1, sender="e")
        recorder = Recorder(settings(path, redact=True))
        recorder.add(req, action.render(req, "R"), "R", NOW, action=action)
        recorder.close()
        (case,) = read_policy_file(path)
        assert case.expect == action.render(case.request, "R")
        assert "<e>" not in path.read_text()

    def test_redacting_recorder_keeps_its_key_beside_the_file(self, tmp_path: Path) -> None:
        """redact = true: no local part in the file, the key in r.policy.key."""
        path = tmp_path / "r.policy"
        recorder = Recorder(settings(path, redact=True))
        recorder.add(request(1), "DUNNO", "R", NOW)
        recorder.close()
        expected = Redactor(load_key(key_path(path))).address("bob1@example.com")
        (case,) = read_policy_file(path)
        assert (expected, False) == (case.request["recipient"], b"bob1" in path.read_bytes())


class TestRotation:
    def test_rotates_by_size_and_keeps_the_newest_files(self, tmp_path: Path) -> None:
        """path, path.1, path.2 hold the newest records, contiguous; older ones are gone."""
        path = tmp_path / "r.policy"
        recorder = Recorder(settings(path, max_bytes=1000, keep=2))
        for n in range(30):
            recorder.add(request(n), "DUNNO", "R", NOW)
            recorder.flush(10)
        recorder.close()
        files = [path.with_name("r.policy.2"), path.with_name("r.policy.1"), path]
        kept = [port for file in files for port in ports(file)]
        assert kept == list(range(30 - len(kept), 30))
        assert not path.with_name("r.policy.3").exists()
        assert all(f.stat().st_size <= 1000 for f in files)
        assert all(f.read_text().startswith(RECORDING_HEADER) for f in files)

    def test_keep_zero_starts_over_without_copies(self, tmp_path: Path) -> None:
        """keep = 0: the full file is dropped and a new one begun."""
        path = tmp_path / "r.policy"
        recorder = Recorder(settings(path, max_bytes=1000, keep=0))
        for n in range(10):
            recorder.add(request(n), "DUNNO", "R", NOW)
            recorder.flush(10)
        recorder.close()
        kept = ports(path)
        assert (False, kept) == (
            path.with_name("r.policy.1").exists(),
            list(range(10 - len(kept), 10)),
        )


class TestDrops:
    def test_blocked_writer_costs_counted_drops_not_waiting(self, tmp_path: Path) -> None:
        """With the writer stuck on a FIFO nobody reads, add() drops and counts; log says so.

        The writer blocks opening the FIFO, so the pipe to it fills; then
        ``max_pending`` records wait in the daemon and the next are dropped.
        """
        fifo = tmp_path / "r.policy"
        os.mkfifo(fifo)
        with capture_logs() as logs:
            recorder = Recorder(settings(fifo, max_pending=5), FakeClock())
            added = 0
            while recorder.dropped == 0 and added < 100_000:  # the 1 MiB pipe fills first
                recorder.add(request(added), "DUNNO", "R", NOW)
                added += 1
            more = 20
            for n in range(more):
                recorder.add(request(added + n), "DUNNO", "R", NOW)
            received = _drain_fifo(fifo, recorder)
        written = parse_policy_text(received.decode())
        dropped = recorder.dropped
        assert (added + more, True) == (len(written) + dropped, dropped >= more)
        events = [e for e in logs if e["event"] == "record_dropped"]
        assert [dropped] == [e["total"] for e in events]

    def test_records_a_close_cannot_send_are_counted_as_dropped(self, tmp_path: Path) -> None:
        """Writer stopped (SIGSTOP), close() times out: records still waiting count as dropped."""
        recorder = Recorder(settings(tmp_path / "r.policy", max_pending=50))
        recorder.add(request(0), "DUNNO", "R", NOW)
        pid = recorder.writer_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # reads nothing more: the pipe fills, then 50 wait here
        added = 1
        while recorder.dropped == 0 and added < 100_000:
            recorder.add(request(added), "DUNNO", "R", NOW)
            added += 1
        refused = recorder.dropped
        with capture_logs() as logs:
            recorder.close(timeout=0.3)
        unsent = [e["unsent"] for e in logs if e["event"] == "record_close_timeout"]
        stuck = [e["event"] for e in logs if e["event"] == "record_writer_stuck"]
        assert ([50], refused + 50, ["record_writer_stuck"]) == (unsent, recorder.dropped, stuck)

    def test_unwritable_record_is_counted_and_the_writer_goes_on(self, tmp_path: Path) -> None:
        """A record that cannot be encoded is dropped, logged, and later records are written."""
        path = tmp_path / "r.policy"
        recorder = Recorder(settings(path))
        with capture_logs() as logs:
            recorder.add(request(1, helo_name="\ud800"), "DUNNO", "R", NOW)
            recorder.flush(10)
        recorder.add(request(2), "DUNNO", "R", NOW)
        recorder.close()
        failed = [e["records"] for e in logs if e["event"] == "record_failed"]
        assert ([2], 1, [1]) == (ports(path), recorder.dropped, failed)


def _drain_fifo(fifo: Path, recorder: Recorder) -> bytes:
    """Open the reading end (unblocking the writer), close the recorder, read to EOF."""
    reader = os.open(fifo, os.O_RDONLY)
    chunks: list[bytes] = []
    thread = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(reader, 65536), b""))
    )
    thread.start()
    recorder.close()
    thread.join(10)
    os.close(reader)
    return b"".join(chunks)


CRASHER = """
import os, signal, sys, time
from pathlib import Path
from postgate.wire.codec import PolicyRequest
from postgate.record.recorder import Recorder, RecordSettings

path, count = Path(sys.argv[1]), int(sys.argv[2])
recorder = Recorder(RecordSettings(path=path, enabled=True, max_pending=1_000_000))
for n in range(count):
    attrs = {"request": "smtpd_access_policy", "client_port": str(n),
             "recipient": f"r{n}@example.com", "padding": "x" * (n % 700)}
    recorder.add(PolicyRequest(attrs), "DUNNO", "DEFAULT", 1e9 + n)
    if n % 500 == 0:
        time.sleep(0.001)  # let the writer run, as a reactor between turns would
print(recorder.writer_pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # while the writer is still busy
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

    def test_writer_killed_mid_stream_is_replaced_and_nothing_later_is_lost(
        self, tmp_path: Path
    ) -> None:
        """SIGKILL of the writer: logged, another starts; the file replays in order."""
        path = tmp_path / "r.policy"
        recorder = Recorder(settings(path, max_pending=1_000_000))
        with capture_logs() as logs:
            for n in range(3000):
                recorder.add(crash_request(n), "DUNNO", "R", NOW)
            first = recorder.writer_pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            added = 3000
            while recorder.writer_pid in (first, None) and added < 3000 + 600:
                recorder.add(crash_request(added), "DUNNO", "R", NOW)
                added += 1
                time.sleep(0.01)  # a restart waits RESTART_INTERVAL after the last start
            last = [crash_request(added + n) for n in range(10)]
            for req in last:
                recorder.add(req, "DUNNO", "R", NOW)
            recorder.close()
        numbers, torn = untorn(path)
        assert ([], ["record_writer_died"]) == (
            torn,
            [e["event"] for e in logs if e["event"] == "record_writer_died"],
        )
        assert numbers == sorted(set(numbers))
        assert list(range(added, added + 10)) == numbers[-10:]

    def test_writer_outlives_the_signals_a_stop_sends_to_the_group(self, tmp_path: Path) -> None:
        """SIGTERM, SIGINT, SIGHUP to the writer do not end it: it ends when the daemon closes."""
        path = tmp_path / "r.policy"
        recorder = Recorder(settings(path))
        recorder.add(request(1), "DUNNO", "R", NOW)
        pid = recorder.writer_pid
        assert pid is not None
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            os.kill(pid, signum)
        recorder.add(request(2), "DUNNO", "R", NOW)
        flushed = recorder.flush(10)
        recorder.close()
        assert (True, [1, 2], 0) == (flushed, ports(path), recorder.dropped)

    def test_cut_last_block_is_ignored_on_read_and_trimmed_on_reopen(self, tmp_path: Path) -> None:
        """A write cut short leaves a partial block: replay skips it, the recorder removes it."""
        path = tmp_path / "r.policy"
        whole = RECORDING_HEADER + format_block(request(1), "DUNNO", "R", NOW)
        path.write_text(whole + format_block(request(2), "DUNNO", "R", NOW)[:-40])
        before = ports(path)
        with capture_logs() as logs:
            recorder = Recorder(settings(path))
            recorder.add(request(3), "DUNNO", "R", NOW)
            recorder.close()
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


@pytest.mark.parametrize("keep", [1, 3])
def test_rotated_files_each_replay_on_their_own(tmp_path: Path, keep: int) -> None:
    """Every rotated file starts with the header and parses by itself."""
    path = tmp_path / "r.policy"
    recorder = Recorder(settings(path, max_bytes=800, keep=keep))
    for n in range(12):
        recorder.add(request(n), "DUNNO", "R", NOW)
        recorder.flush(10)
    recorder.close()
    rotated = sorted(tmp_path.glob("r.policy.*"))
    assert keep == len(rotated)
    assert all(len(read_policy_file(f)) >= 1 for f in rotated)


class TestCopiedLines:
    """Requests read from a peer are recorded by copying their received lines."""

    @staticmethod
    def received(raw: bytes) -> PolicyRequest:
        (decoded,) = Decoder().feed(raw)
        return decoded

    def test_copied_block_reads_back_as_the_formatted_one(self) -> None:
        """The copied lines and the line-by-line form replay to the same case."""
        decoded = self.received(encode_request(request(4).as_dict()))
        copied = encode_block(decoded, "DUNNO", "LOCAL", NOW)
        formatted = format_block(decoded, "DUNNO", "LOCAL", NOW).encode()
        (fast,) = parse_policy_text(copied.decode())
        (slow,) = parse_policy_text(formatted.decode())
        assert (slow.request, slow.expect, slow.expect_rule, slow.time) == (
            fast.request,
            fast.expect,
            fast.expect_rule,
            fast.time,
        )
        assert decoded.wire in copied

    def test_line_that_reads_as_a_comment_is_never_copied(self) -> None:
        """A client cannot forge an expectation: such a request is reformatted."""
        raw = b"request=smtpd_access_policy\n# expect: OK=1\nrecipient=a@x\n\n"
        decoded = self.received(raw)
        (case,) = parse_policy_text(encode_block(decoded, "REJECT no", "R", NOW).decode())
        assert ("REJECT no", "a@x") == (case.expect, case.request.get("recipient"))
        assert b"# expect: OK=1" not in encode_block(decoded, "REJECT no", "R", NOW)
