"""postgate: a Postfix SMTP access policy delegation daemon."""

__version__ = "0.1.0"
