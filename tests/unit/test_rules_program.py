"""The generated decide function: same answers as the step-by-step trace, no config text run."""

# House style puts the expected value first (`expected == actual`), which SIM300
# calls a Yoda condition whenever the expectation is a literal.

from __future__ import annotations

import gc
import io
import linecache
import traceback
from contextlib import redirect_stdout
from typing import TYPE_CHECKING, Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postgate.commands.cli import main
from postgate.config.load import load_config
from postgate.rules.attributes import DERIVED, KNOWN, NUMERIC
from postgate.rules.facts import fold, split_address
from postgate.rules.match import View
from postgate.rules.program import _Writer
from postgate.wire.codec import PolicyRequest
from postgate.wire.policy_files import read_policy_file
from tests.unit.support.rules import ROOT, compile_toml, reference_ruleset, rule_of

if TYPE_CHECKING:
    from pathlib import Path
    from types import FunctionType

RULESET = reference_ruleset()
CASES = read_policy_file(ROOT / "conf" / "examples" / "test_reference.policy")

# Values that hit, nearly hit and miss the reference rules, plus garbage.
VALUES = st.sampled_from(
    [
        "",
        "RCPT",
        "rcpt",
        "DATA",
        "END-OF-MESSAGE",
        "localhost",
        "192.0.2.1",
        "10.1.2.3",
        "203.0.113.9",
        "::ffff:10.0.0.1",
        "2001:db8::1",
        "unknown",
        "dsl-12.pool.example.net",
        "alice@example.com",
        "spamtrap@example.com",
        "x@EXAMPLE.COM.",
        "@",
        "a@b@c",
        "51",
        "128",
        "99999999999999999999999999999999999",
        " 7",
        "AB:CD:EF",
        "é\udcff",
    ]
)
NAMES = st.sampled_from([n for n in KNOWN if n != "request"])


def decide_both(attrs: dict[str, str]) -> tuple[tuple[str, str], tuple[str, str]]:
    request = PolicyRequest({"request": "smtpd_access_policy", **attrs})
    fast = RULESET.decide(request)
    traced = RULESET.decide(request, trace=True)
    return (fast.rule, fast.action.line), (traced.rule, traced.action.line)


class TestSameAnswersAsTheTrace:
    def test_every_reference_case(self) -> None:
        """The generated function and the per-rule trace agree on every recorded request."""
        both = [decide_both(case.request.as_dict()) for case in CASES]
        assert [fast for fast, _ in both] == [traced for _, traced in both]

    @settings(max_examples=400, deadline=None)
    @given(st.dictionaries(NAMES, VALUES, max_size=12))
    def test_any_request(self, attrs: dict[str, str]) -> None:
        """Shared views computed once at the top give the answers of views computed per test."""
        fast, traced = decide_both(attrs)
        assert traced == fast


class TestViewsAsWritten:
    @settings(max_examples=300, deadline=None)
    @given(NAMES.filter(lambda n: n not in NUMERIC), VALUES)
    def test_folded_key_equals_fold(self, name: str, value: str) -> None:
        """The fold the generator spells out is `facts.fold`, attribute by attribute."""
        writer = _Writer()
        source = writer.view(View("key", name))
        raw = {DERIVED.get(name, name): value}
        namespace: dict[str, Any] = {**writer.namespace, "raw": raw, "get": raw.get}
        local, domain = split_address(value)
        derived = {"_localpart": local, "_domain": domain}.get(name[name.rfind("_") :], value)
        expected = fold(name, derived if name in DERIVED else value)
        assert expected == eval(source, namespace)  # noqa: S307 - the generator's own output


class TestConfigTextIsNeverRun:
    def test_code_in_every_kind_of_value_is_only_compared(self) -> None:
        """Python in ids, values, lists and patterns is data: it matches itself, runs nothing."""
        payload = "x\\\");__import__('os')._exit(3)#"
        compiled = compile_toml(
            f'[lists.evil]\ntype = "string"\nitems = ["{payload}"]\n'
            f'[[rules]]\nid = "A"\nhelo_name = "{payload}"\naction = "REJECT"\n'
            f'[[rules]]\nid = "B"\nsasl_username = {{ list = "evil" }}\naction = "REJECT"\n'
            f'[[rules]]\nid = "C"\nclient_name = {{ regex = "_exit\\\\(3\\\\)" }}\n'
            'action = "REJECT"\n'
        )
        text = "x\");__import__('os')._exit(3)#"
        assert ["A", "B", "C", "DEFAULT"] == [
            rule_of(compiled, helo_name=text),
            rule_of(compiled, sasl_username=text),
            rule_of(compiled, client_name=text),
            rule_of(compiled, helo_name="mx.example.org"),
        ]


DOMAIN_RULES = """\
[[rules]]
id = "LOCAL"
recipient_domain = "example.com"
sender_domain = "example.com"
action = "REJECT local"
"""


def raising(_value: str) -> tuple[str, str]:
    raise LookupError("forced by the test")


class TestDebuggable:
    def test_a_traceback_shows_the_generated_line(self) -> None:
        ruleset = compile_toml(DOMAIN_RULES)
        cast("FunctionType", ruleset.program).__globals__["_split"] = raising  # this build only
        with pytest.raises(LookupError) as caught:
            ruleset.decide(PolicyRequest({"recipient": "a@example.com"}))
        filename = ruleset.program.__code__.co_filename
        assert f"<postgate ruleset {ruleset.digest}>" == filename
        frame = next(f for f in traceback.extract_tb(caught.tb) if f.filename == filename)
        generated = ruleset.source.splitlines()[frame.lineno - 1] if frame.lineno else ""
        assert ("decide", generated.strip()) == (frame.name, frame.line)
        assert "_split(" in generated
        assert f'File "{filename}", line {frame.lineno}, in decide\n    {generated.strip()}\n' in (
            "".join(traceback.format_exception(caught.value))
        )

    def test_show_python_prints_the_compiled_source(self, tmp_path: Path) -> None:
        path = tmp_path / "postgate.toml"
        path.write_text(DOMAIN_RULES)
        out = io.StringIO()
        with redirect_stdout(out):
            status = main(["show", "--python", "-c", str(path)])
        program = load_config(path).ruleset.program
        compiled = "".join(linecache.getlines(program.__code__.co_filename))
        printed = out.getvalue()
        assert (0, True) == (status, printed.startswith("def decide(raw):\n"))
        assert compiled == printed[: len(compiled)]
        decide = compile(compiled, program.__code__.co_filename, "exec").co_consts[0]
        assert program.__code__.co_code == decide.co_code
        legend = printed[len(compiled) :].splitlines()
        assert f"# compiled as {program.__code__.co_filename}" == legend[0]
        assert "# k0 = 'recipient'" in legend
        assert "# k4 = LOCAL -> REJECT local" in legend

    def test_the_source_leaves_linecache_with_its_last_ruleset(self) -> None:
        """Reloads with new rules must not pile up sources for the life of the daemon."""
        rules = "".join(
            f'[[rules]]\nid = "R{n}"\nhelo_name = "h{n}"\naction = "OK"\n' for n in range(7)
        )
        first, second = compile_toml(rules), compile_toml(rules)
        filename = first.program.__code__.co_filename
        assert filename == second.program.__code__.co_filename
        del first
        gc.collect()
        assert filename in linecache.cache
        del second
        gc.collect()
        assert filename not in linecache.cache
