"""Where the repository keeps its systemd units, for the tests that read or run them."""

from __future__ import annotations

from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[3]
UNIT_DIR: Final = REPO / "systemd"
SERVICE: Final = "postgate.service"
