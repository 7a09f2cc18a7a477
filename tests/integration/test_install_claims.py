"""What docs/install.md quotes from systemd-analyze is what it prints here (Debian 12)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.integration.support.needs import need

REPO = Path(__file__).resolve().parents[2]
INSTALL_DOC = REPO / "docs" / "install.md"


def test_quoted_security_score_is_what_systemd_analyze_prints() -> None:
    """The offline review's overall exposure and its word, as the page states them."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        need("systemd-analyze is not installed (apt-get install systemd)")
        return
    quoted = re.search(r"gives \*\*(\d+\.\d+ [A-Z]+)\*\*", INSTALL_DOC.read_text())
    assert quoted is not None
    done = subprocess.run(
        [analyze, "security", "--offline=true", str(REPO / "systemd" / "postgate.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    printed = re.search(r"Overall exposure level for \S+: (\d+\.\d+ [A-Z]+)", done.stdout)
    assert printed is not None, done.stdout + done.stderr
    assert printed[1] == quoted[1]
