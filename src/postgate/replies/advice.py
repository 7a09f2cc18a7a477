"""Warnings for actions that are valid but probably not what was meant.

Non-standard basic codes, codes the seed table misreads, and enhanced codes
Postfix rewrites or that mean success; each warning names what to write
instead. Used by `parsing` for every action read and by ``postgate codes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from postgate.replies import registry

if TYPE_CHECKING:
    from postgate.replies.model import Action


def advise(action: Action) -> tuple[str, ...]:
    """Warnings for actions that are valid but probably not what was meant."""
    found: list[str] = []
    if action.code is not None:
        found += _advise_code(action.code, action.dsn)
    if action.dsn is not None:
        found += advise_dsn(action.dsn)
    return tuple(found)


def _advise_code(code: int, dsn: str | None) -> list[str]:
    known = registry.basic(code)
    if not registry.is_standard(code):
        return [_non_standard(code, dsn, known)]
    seed = registry.seed_reading(code)
    if seed is not None and seed.verdict is registry.Verdict.WRONG:
        return [f"{code} is often misread: {seed.correction} Use '{seed.use[0]}' for that."]
    return []


def _non_standard(code: int, dsn: str | None, known: registry.BasicCode | None) -> str:
    klass = code // 100
    lines = known.pairings if known else ()
    same = [line for line in lines if line.split()[1] == dsn]
    line = (same or list(lines) or [f"{klass}50 {dsn or f'{klass}.7.1'} Access denied"])[0]
    basic_code, pairing_dsn = line.split()[:2]
    example = f", e.g. '{line}'"
    if dsn is not None and pairing_dsn != dsn:  # keep the detail the author chose
        pairing_dsn, example = dsn, ""
    why = f" ({known.meaning})" if known else ""
    kind = "permanent" if klass == 5 else "temporary"
    return (
        f"{code} is not a standard SMTP reply code: no SMTP RFC defines it{why}; clients "
        f"see only a {kind} failure of unknown meaning. Use '{basic_code} {pairing_dsn}' "
        f"instead{example}."
    )


def advise_dsn(dsn: str) -> list[str]:
    """Context-free notes on a valid enhanced code (also used by ``postgate codes``)."""
    entry = registry.enhanced(dsn)
    if entry is None:
        return []
    klass = int(dsn[0])
    found: list[str] = []
    if entry.subject == 1 and entry.detail > 8:
        found.append(
            f"Postfix rewrites {dsn} in a policy reply to {klass}.1.0 in sender/recipient "
            f"restrictions and {klass}.0.0 elsewhere (smtpd_dsn_fix, docs/protocol.md): "
            "the client never sees it."
        )
    if "deprecated" in entry.title.lower():
        found.append(f"{dsn} is deprecated: {entry.description}")
    if entry.success_only:
        found.append(f"{dsn} means '{entry.title}', a success detail; it is odd in a failure.")
    if entry.key == "X.5.3" and klass == 5:
        found.append("too many recipients is temporary: RFC 5321 §4.5.3.1.10 wants 452 4.5.3.")
    return found


__all__ = ["advise", "advise_dsn"]
