"""Broker credentials for a deployment: a Mosquitto password file, an ACL, and the generated
passwords, so each client can do exactly its job and nothing more.

    slimedge fleet credentials --deploy DIR --out DIR [--tls] [--host NAME]

Users and what the ACL lets them do (topics from `slimedge.runtime.topics`):
- each device `<id>`: write its own features, heartbeat, status (its Will too) and ack; read
  its own update topic. Nothing of another device.
- `aggregator`: read every device's features, heartbeat and status; write the results topic;
  read its own update topic, write its ack and state topics (the fleet-wide switch).
- `controller` (pushes updates): write and read every device's update topic (push reads the
  retained offers to learn the last sequence issued); read acks, status, heartbeats and results.

Files written to --out: `passwd` (PBKDF2-SHA512, Mosquitto 2's `$7$` format, written here so
`mosquitto_passwd` is not needed), `acl`, `mosquitto.conf` (the lines to add to a broker's
config: password_file, acl_file, no anonymous clients, and with --tls the certificate lines),
`credentials.json` (mode 0600: user -> password and role, plus broker URLs per user), and with
--tls `ca.crt`, `server.crt`, `server.key` (a private CA for the broker; clients verify the
broker with ca.crt: `--ca-file`).

Mosquitto does not check SUBSCRIBE against the ACL; it filters delivery, so a device that
subscribes to another's topic simply receives nothing. A denied publish is dropped; under MQTT 5
the PUBACK says 0x87 (not authorized).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from slimedge.artifacts import atomic_file
from slimedge.errors import SlimEdgeError
from slimedge.runtime import topics

__all__ = ["AGGREGATOR_USER", "CONTROLLER_USER", "CredentialsError", "FleetCredentials",
           "acl_text", "add_credentials_options", "credentials", "password_hash",
           "write_credentials"]

AGGREGATOR_USER = "aggregator"
CONTROLLER_USER = "controller"
PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes
CREDENTIALS_NAME = "credentials.json"


class CredentialsError(SlimEdgeError):
    """A deployment whose device names cannot be broker users, or an output that exists."""


def password_hash(password: str, *, salt: bytes | None = None,
                  iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto 2's password file hash: `$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>`."""
    salt = secrets.token_bytes(12) if salt is None else salt
    dk = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, 64)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(dk).decode()}")


def acl_text(fleet: str, devices: list[str]) -> str:
    """The Mosquitto ACL for `fleet`: one `user` block per client (see the module docstring)."""
    lines = [f"# SlimEdge fleet {fleet}: every client may do its own job only", ""]
    for dev in devices:
        lines += [f"user {dev}"]
        lines += [f"topic write {t(fleet, dev)}"
                  for t in (topics.features, topics.heartbeat, topics.status, topics.ack)]
        lines += [f"topic read {topics.update(fleet, dev)}", ""]
    lines += [f"user {AGGREGATOR_USER}",
              f"topic read {topics.features_all(fleet)}",
              f"topic read {topics.heartbeat_all(fleet)}",
              f"topic read {topics.status_all(fleet)}",
              f"topic write {topics.results(fleet)}",
              # the fleet-wide switch: orders in; acknowledgments and its retained state out
              f"topic read {topics.aggregator_update(fleet)}",
              f"topic write {topics.aggregator_ack(fleet)}",
              f"topic write {topics.aggregator_state(fleet)}", ""]
    lines += [f"user {CONTROLLER_USER}",
              # readwrite: push reads the retained offers (the last sequence issued)
              f"topic readwrite {topics.PREFIX}/{fleet}/+/update",
              # the fleet-wide switch: its frame F comes from the aggregator's state (its
              # update and ack topics match the +/update and +/ack lines)
              f"topic read {topics.aggregator_state(fleet)}",
              f"topic read {topics.ack_all(fleet)}",
              f"topic read {topics.status_all(fleet)}",
              f"topic read {topics.heartbeat_all(fleet)}",
              f"topic read {topics.results(fleet)}", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class FleetCredentials:
    out: Path
    fleet: str
    deployment_id: str
    users: dict[str, dict[str, str]]  # name -> {"role", "password"}
    tls: bool

    @property
    def broker_config(self) -> list[str]:
        """mosquitto.conf lines (after the `listener` line) that enforce these credentials."""
        lines = [f"password_file {self.out / 'passwd'}", f"acl_file {self.out / 'acl'}",
                 "allow_anonymous false"]
        if self.tls:
            lines += [f"cafile {self.out / 'ca.crt'}", f"certfile {self.out / 'server.crt'}",
                      f"keyfile {self.out / 'server.key'}"]
        return lines

    def url(self, user: str, host: str, port: int) -> str:
        """The --broker URL with `user`'s credentials (mqtts:// under --tls)."""
        scheme = "mqtts" if self.tls else "mqtt"
        pw = quote(self.users[user]["password"], safe="")
        return f"{scheme}://{quote(user, safe='')}:{pw}@{host}:{port}"

    @classmethod
    def read(cls, out: str | os.PathLike) -> FleetCredentials:
        out = Path(out)
        try:
            doc = json.loads((out / CREDENTIALS_NAME).read_text())
            return cls(out, doc["fleet"], doc["deployment_id"], doc["users"], doc["tls"])
        except (OSError, ValueError, KeyError) as e:
            raise CredentialsError(f"{out / CREDENTIALS_NAME}: not readable credentials "
                                   f"({e})") from None


def _write_private(path: Path, data: str | bytes) -> None:
    with atomic_file(path, "wb") as fh:  # created 0600 by mkstemp
        fh.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, 0o600)


def _tls_files(out: Path, hosts: list[str]) -> None:
    """A private CA and a server certificate for `hosts` (names or IP addresses)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    later = now + datetime.timedelta(days=365)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("SlimEdge fleet CA"))
          .issuer_name(name("SlimEdge fleet CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(later)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    alt = []
    for h in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder().subject_name(name(hosts[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(later)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    with atomic_file(out / "ca.crt", "wb") as fh:
        fh.write(ca.public_bytes(pem))
    with atomic_file(out / "server.crt", "wb") as fh:
        fh.write(cert.public_bytes(pem))
    _write_private(out / "server.key", key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(out / "ca.crt", 0o644)
    os.chmod(out / "server.crt", 0o644)


def write_credentials(deploy: str | os.PathLike, out: str | os.PathLike, *, tls: bool = False,
                      hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                      force: bool = False) -> FleetCredentials:
    """Generate passwords for every device of the deployment, the aggregator and the
    controller; write the files listed in the module docstring into `out`."""
    from slimedge.export import ExportError
    from slimedge.export.manifest import MANIFEST_NAME, DeploymentManifest

    deploy, out = Path(deploy), Path(out)
    try:
        m = DeploymentManifest.from_json((deploy / MANIFEST_NAME).read_bytes(),
                                         source=str(deploy / MANIFEST_NAME))
    except OSError as e:
        raise CredentialsError(f"{deploy / MANIFEST_NAME}: cannot read ({e.strerror})") \
            from None
    except ExportError as e:
        raise CredentialsError(str(e)) from None
    fleet = topics.fleet_name(m.deployment_id, m.created)
    devices = [d.device for d in m.devices]
    for dev in devices:
        topics.check_name("device", dev)
        if dev in (AGGREGATOR_USER, CONTROLLER_USER) or any(c in dev for c in " :\t\n"):
            raise CredentialsError(f"device {dev!r}: cannot be a broker user name (reserved "
                                   "or contains a space or ':')")
    if (out / CREDENTIALS_NAME).exists() and not force:
        raise CredentialsError(f"{out / CREDENTIALS_NAME}: exists; refusing to replace the "
                               "fleet's passwords (pass --force)")
    out.mkdir(parents=True, exist_ok=True)
    users = {dev: {"role": "device", "password": secrets.token_urlsafe(18)} for dev in devices}
    users[AGGREGATOR_USER] = {"role": "aggregator", "password": secrets.token_urlsafe(18)}
    users[CONTROLLER_USER] = {"role": "controller", "password": secrets.token_urlsafe(18)}
    _write_private(out / "passwd", "".join(f"{u}:{password_hash(v['password'])}\n"
                                           for u, v in users.items()))
    _write_private(out / "acl", acl_text(fleet, devices))
    if tls:
        _tls_files(out, list(hosts))
    creds = FleetCredentials(out, fleet, m.deployment_id, users, tls)
    _write_private(out / "mosquitto.conf", "\n".join(creds.broker_config) + "\n")
    _write_private(out / CREDENTIALS_NAME, json.dumps({
        "fleet": fleet, "deployment_id": m.deployment_id, "tls": tls,
        "ca_file": str(out / "ca.crt") if tls else None, "users": users,
    }, indent=2) + "\n")
    return creds


def add_credentials_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deploy", required=True, help="deployment directory (slimedge export)")
    p.add_argument("--out", required=True, help="folder for passwd, acl, credentials.json")
    p.add_argument("--tls", action="store_true",
                   help="also a private CA and a server certificate (mqtts://)")
    p.add_argument("--host", action="append", default=None, metavar="NAME",
                   help="broker host name or IP in the certificate (repeatable; default "
                        "127.0.0.1 and localhost)")
    p.add_argument("--force", action="store_true", help="replace existing credentials")


def credentials(args: argparse.Namespace) -> dict[str, Any]:
    hosts = tuple(args.host) if args.host else ("127.0.0.1", "localhost")
    c = write_credentials(args.deploy, args.out, tls=args.tls, hosts=hosts, force=args.force)
    files = ["passwd", "acl", "mosquitto.conf", CREDENTIALS_NAME]
    files += ["ca.crt", "server.crt", "server.key"] if c.tls else []
    return {"fleet": c.fleet, "deployment_id": c.deployment_id, "out": str(c.out),
            "users": {u: v["role"] for u, v in c.users.items()},
            "files": [str(c.out / f) for f in files], "broker_config": c.broker_config}
