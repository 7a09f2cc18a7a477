"""Old import path, kept only for modules this split could not edit.

``record/blocks.py``, ``record/recorder.py``, ``daemon/server.py``,
``commands/replay.py`` and the server and record unit tests, all being changed
elsewhere, still read these five names from here; once they import from the
modules below, delete this one.
"""

from __future__ import annotations

from postgate.replies.model import DUNNO, Action
from postgate.replies.parsing import parse_action
from postgate.replies.templates import ELLIPSIS, sanitise

__all__ = ["DUNNO", "ELLIPSIS", "Action", "parse_action", "sanitise"]
