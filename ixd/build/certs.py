"""The Dask cluster's own certificate authority and its members' TLS certificates
(`ixd cluster-certs`, with the `cryptography` library).

Dask's TLS is mutual (every connection shows a certificate, and each side checks the other's
against the cluster's CA) and checks no host names: a certificate signed by the CA is the
whole of admission. So the CA's key stays with the administrator, each member gets a
certificate and key of its own (the scheduler, each ixd, each ix-worker), and a member is
shut out again by making a new CA. Keys are ECDSA P-256; every leaf certificate may serve
and connect (Dask's workers and scheduler do both).

    DIR/ca.pem, DIR/ca.key                      the CA (its key: the administrator's only)
    DIR/scheduler.pem, DIR/scheduler.key        `dask scheduler --tls-cert/--tls-key`
    DIR/ixd-NAME.pem, DIR/ixd-NAME.key          `ixd --tls-cert/--tls-key`
    DIR/worker-NAME.pem, DIR/worker-NAME.key    `ix-worker --tls-cert/--tls-key`
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ixd.wire.errors import IxError

#: how long certificates are valid by default (days)
DEFAULT_DAYS = 5 * 365
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass(frozen=True)
class Member:
    """A certificate to make: its file stem (`ixd-a`) and its common name."""

    stem: str
    common_name: str
    hosts: tuple[str, ...] = ()


def members(ixds: Sequence[str], workers: Sequence[str],
            scheduler_hosts: Sequence[str] = ()) -> list[Member]:
    """The certificates `ixd cluster-certs` makes (names checked: IxError)."""
    for name in (*ixds, *workers):
        if not _NAME.fullmatch(name):
            raise IxError(f"member name {name!r}: letters, digits, '.', '_' and '-' only")
    return [Member("scheduler", "ix-scheduler", tuple(scheduler_hosts)),
            *(Member(f"ixd-{n}", f"ix-ixd-{n}") for n in ixds),
            *(Member(f"worker-{n}", f"ix-worker-{n}") for n in workers)]


def make_certificates(folder: Path, wanted: Sequence[Member], days: int = DEFAULT_DAYS
                      ) -> list[Path]:
    """Make the CA in `folder` unless it is there (then it signs), and a certificate and
    key for each member whose files do not exist yet; the paths written. Keys are 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=days)
    ca_cert_path, ca_key_path = folder / "ca.pem", folder / "ca.key"

    def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        data = key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        written.append(path)

    def write_cert(path: Path, cert: x509.Certificate) -> None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        written.append(path)

    if ca_cert_path.exists() != ca_key_path.exists():
        raise IxError(f"{folder} holds half a CA (ca.pem and ca.key go together)")
    if ca_cert_path.exists():
        try:
            ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
            loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        except (OSError, ValueError, TypeError) as exc:
            raise IxError(f"cannot read the CA in {folder}: {exc}") from exc
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise IxError(f"{ca_key_path} is not an EC key made by ixd cluster-certs")
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ix cluster CA")])
        ca_cert = (x509.CertificateBuilder()
                   .subject_name(ca_name).issuer_name(ca_name)
                   .public_key(ca_key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(until)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(
                       digital_signature=False, content_commitment=False,
                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                       key_cert_sign=True, crl_sign=True, encipher_only=False,
                       decipher_only=False), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        write_key(ca_key_path, ca_key)
        write_cert(ca_cert_path, ca_cert)

    for member in wanted:
        cert_path, key_path = folder / f"{member.stem}.pem", folder / f"{member.stem}.key"
        if cert_path.exists() or key_path.exists():
            if member.stem == "scheduler" and cert_path.exists() and key_path.exists():
                continue  # made before, with the CA
            raise IxError(f"{cert_path} exists: not overwritten (remove it to make a new one)")
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(member.common_name)]
        for host in member.hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                            member.common_name)]))
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(until)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .sign(ca_key, hashes.SHA256()))
        write_key(key_path, key)
        write_cert(cert_path, cert)
    return written
