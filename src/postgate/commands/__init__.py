"""The ``postgate`` command line and the rule-testing tools behind it.

`cli` dispatches; `rule_tests` is ``replay``, ``diff`` and ``test``; `replay`
evaluates request files through the answer step; `ask` sends one request to a
running daemon; `codes` explains reply codes; `pytest_plugin` turns
``test_*.policy`` files into pytest items.
"""
