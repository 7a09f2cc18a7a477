"""Helpers the integration tests share: daemons, a private Postfix, SMTP and policy clients."""
