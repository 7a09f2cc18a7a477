"""What the private Postfix is: its listeners, main.cf, master.cf and certificates.

Several smtpd listeners, each a different wiring of ``check_policy_service``
(`SERVICES`), point at two fixed policy "slots": a TCP port and a UNIX socket
path. Tests start whichever policy server they need on a slot. The settings
follow docs/postfix.md, with test-only changes marked: no DNS, delivery into
maildirs under the root, no outbound mail, XCLIENT from 127.0.0.1.

smtpd runs unchrooted, so the UNIX slot is an absolute path
(docs/protocol.md, Connections); docs/postfix.md shows the chrooted ``private/`` form.
"""

from __future__ import annotations

import pwd
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

HOSTNAME: Final = "mx.postgate.test"
DEFAULT_ACTION: Final = "451 4.3.5 Server configuration problem"
# An address a later Postfix restriction rejects, so DEFER_IF_REJECT has
# something to turn into a deferral (access(5)); see `SERVICES`.
LATER_REJECT_LOCALPART: Final = "later-reject"


@dataclass(frozen=True, slots=True)
class Service:
    """One smtpd listener: how it asks the policy service, and where.

    ``recipient`` is the smtpd_recipient_restrictions list; ``relay`` the
    smtpd_relay_restrictions list (empty: the recipient list carries the relay
    check); ``sender`` the smtpd_sender_restrictions list. ``policy`` is the
    check_policy_service argument used in the DATA and END-OF-DATA lists.
    """

    name: str
    policy: str
    recipient: str
    relay: str = ""
    sender: str = ""


# The relay check Postfix itself makes after postgate in the "gate" layout:
# postgate decides first (it may reject relaying with its own words), Postfix
# still refuses unauthorised relaying whatever postgate answered except OK.
_AFTER_POLICY: Final = (
    "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination, "
    "check_recipient_access $later_reject"
)
SERVICES: Final = (
    # postgate sees every recipient, relay attempts included (reference ruleset).
    Service("gate", "$policy_tcp", f"check_policy_service $policy_tcp, {_AFTER_POLICY}"),
    # The same over the UNIX socket.
    Service("unix", "$policy_unix", f"check_policy_service $policy_unix, {_AFTER_POLICY}"),
    # A one-second timeout, so a server that never answers is seen failing quickly.
    Service("short", "$policy_short", f"check_policy_service $policy_short, {_AFTER_POLICY}"),
    # Fail open: Postfix answers DUNNO for postgate when it cannot be reached.
    Service(
        "failopen",
        "$policy_failopen",
        f"check_policy_service $policy_failopen, {_AFTER_POLICY}",
    ),
    # The recommended layout: Postfix's relay check first, postgate after it.
    Service(
        "safe",
        "$policy_tcp",
        "check_policy_service $policy_tcp",
        relay="permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
    ),
    # postgate in smtpd_sender_restrictions: still asked at RCPT (smtpd_delay_reject),
    # but its rejects are worded, and their X.1.Y codes mapped, as sender rejects.
    Service(
        "sender",
        "$policy_tcp",
        "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
        sender="check_policy_service $policy_tcp",
    ),
)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the instance keeps its files; all under ``root``."""

    root: Path

    config: Path = field(init=False)
    queue: Path = field(init=False)
    data: Path = field(init=False)
    mail: Path = field(init=False)
    log: Path = field(init=False)
    policy_socket: Path = field(init=False)
    tls: Path = field(init=False)

    def __post_init__(self) -> None:
        for name, sub in (
            ("config", "etc"),
            ("queue", "spool"),
            ("data", "data"),
            ("mail", "mail"),
            ("log", "maillog"),
            ("policy_socket", "policy/postgate.sock"),
            ("tls", "tls"),
        ):
            object.__setattr__(self, name, self.root / sub)


def main_cf(layout: Layout, policy_port: int, local_domains: Sequence[str]) -> str:
    """The instance's main.cf: its own paths, local delivery, smtpd and policy settings."""
    params = {
        **_paths(layout),
        **_delivery(layout, local_domains),
        **_smtpd(layout),
        **_policy(layout, policy_port, local_domains),
    }
    return "".join(f"{key} = {value}\n" for key, value in params.items())


def _paths(layout: Layout) -> dict[str, object]:
    return {
        "compatibility_level": "3.6",
        "queue_directory": layout.queue,
        "data_directory": layout.data,
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        # maillog_file needs the postlog service (master.cf) and an allowed prefix.
        "maillog_file": layout.log,
        "maillog_file_prefixes": layout.root,
    }


def _delivery(layout: Layout, local_domains: Sequence[str]) -> dict[str, object]:
    """Local domains go to maildirs under the root; anything relayed is discarded."""
    nobody = pwd.getpwnam("nobody")
    return {
        "myhostname": HOSTNAME,
        "myorigin": "$myhostname",
        "mydestination": "",
        "alias_maps": "",
        "alias_database": "",
        "biff": "no",
        "smtp_dns_support_level": "disabled",
        "default_transport": "discard:no outbound mail from the test Postfix",
        "relay_transport": "$default_transport",
        "virtual_mailbox_domains": ", ".join(["$myhostname", *local_domains]),
        "virtual_mailbox_base": layout.mail,
        "virtual_mailbox_maps": "static:all/",
        "virtual_uid_maps": f"static:{nobody.pw_uid}",
        "virtual_gid_maps": f"static:{nobody.pw_gid}",
        "virtual_mailbox_limit": "0",
        # Above the reference ruleset's 10485760, so postgate's size rule is
        # reachable at END-OF-MESSAGE (docs/protocol.md, When Postfix asks; Postfix's
        # own limits, and one bug).
        "message_size_limit": "52428800",
    }


def _smtpd(layout: Layout) -> dict[str, object]:
    tls = layout.tls
    return {
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "all",  # XCLIENT refuses IPv6 addresses otherwise
        "mynetworks": "127.0.0.0/8",
        "smtpd_peername_lookup": "no",  # no DNS: XCLIENT supplies the names
        "smtpd_authorized_xclient_hosts": "127.0.0.1",
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": tls / "server.crt",
        "smtpd_tls_key_file": tls / "server.key",
        "smtpd_tls_ask_ccert": "yes",
        "smtpd_relay_restrictions": "",
    }


def _policy(layout: Layout, policy_port: int, local_domains: Sequence[str]) -> dict[str, object]:
    """docs/postfix.md, section 4 settings, and the endpoints the listeners refer to."""
    later = ", ".join(
        f"{{ {LATER_REJECT_LOCALPART}@{d} = REJECT rejected by a later Postfix restriction }}"
        for d in local_domains
    )
    return {
        "smtpd_policy_service_timeout": "10s",
        "smtpd_policy_service_max_idle": "300s",
        "smtpd_policy_service_max_ttl": "1000s",
        "smtpd_policy_service_request_limit": "0",
        "smtpd_policy_service_try_limit": "2",
        "smtpd_policy_service_retry_delay": "1s",
        "smtpd_policy_service_default_action": DEFAULT_ACTION,
        "policy_tcp": f"inet:127.0.0.1:{policy_port}",
        "policy_unix": f"unix:{layout.policy_socket}",
        "policy_failopen": "{ $policy_tcp, default_action=DUNNO }",
        "policy_short": "{ $policy_tcp, timeout=1s }",
        "later_reject": f"inline:{{ {later} }}",
    }


_MASTER_CF: Final = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
filtered  unix  -       n       n       -       -       virtual
  -o virtual_mailbox_maps=static:filtered/
"""


def master_cf(ports: dict[str, int]) -> str:
    """Every smtpd is unchrooted (column 5 ``n``): policy paths are absolute."""
    smtpds = [
        f"127.0.0.1:{ports[svc.name]} inet n - n - - smtpd\n"
        f"  -o syslog_name=postfix/{svc.name}\n"
        f"  -o smtpd_relay_restrictions=${svc.name}_relay\n"
        f"  -o smtpd_sender_restrictions=${svc.name}_sender\n"
        f"  -o smtpd_recipient_restrictions=${svc.name}_recipient\n"
        f"  -o smtpd_data_restrictions=${svc.name}_data\n"
        f"  -o smtpd_end_of_data_restrictions=${svc.name}_eod\n"
        for svc in SERVICES
    ]
    return _MASTER_CF + "".join(smtpds)


def service_params(service: Service) -> dict[str, str]:
    """main.cf parameters the master.cf ``-o`` overrides refer to (no spaces in master.cf)."""
    policy = f"check_policy_service {service.policy}"
    return {
        f"{service.name}_relay": service.relay,
        f"{service.name}_sender": service.sender,
        f"{service.name}_recipient": service.recipient,
        f"{service.name}_data": policy,
        f"{service.name}_eod": policy,
    }


def make_certificates(directory: Path) -> str:
    """Write a server and a client certificate; return the client's SHA-256 fingerprint.

    Postfix sends ``ccert_fingerprint`` even for an untrusted client
    certificate (docs/protocol.md, Attributes), as colon-separated upper-case hex.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for who in ("server", "client"):
        key, crt = directory / f"{who}.key", directory / f"{who}.crt"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                *("-keyout", str(key), "-out", str(crt), "-subj", f"/CN={who}.postgate.test"),
            ],
            capture_output=True,
            check=True,
        )
        key.chmod(0o644)
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", directory / "client.crt"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().partition("=")[2]
