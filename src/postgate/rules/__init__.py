"""The rule engine: compile rules and lists once, decide each request.

Public surface: `compile_ruleset`, `Ruleset`, `Decision`, `Needs`. Nothing in
this package imports Twisted or does I/O per request; list files are read only
while compiling.
"""

from postgate.rules.compile import compile_ruleset
from postgate.rules.engine import Ruleset
from postgate.rules.model import DEFAULT_RULE, ON_ERROR_RULE, Decision, Needs

__all__ = ["DEFAULT_RULE", "ON_ERROR_RULE", "Decision", "Needs", "Ruleset", "compile_ruleset"]
