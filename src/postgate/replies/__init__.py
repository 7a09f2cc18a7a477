"""The answers postgate sends: actions valid by construction, named replies, code facts.

Bottom up, each module importing only those before it: `registry` (the code
tables), `text` (line limits, `ReplyError`), `templates` (``{placeholder}``
rendering, `sanitise`), `model` (`Action`, `Verb`, checks at construction),
`advice` (warnings), `parsing` (`parse_action`), `catalogue` (named replies);
`sent` reads lines as sent, apart from the model. Imports only the wire codec;
no Twisted, no rules.
"""
