"""Who may talk to a learner: the shared token, TLS, and the rule that a learner reachable from
other machines needs both (:mod:`robolearn.practice.link` uses it on both ends)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from robolearn_core.config import ConfigError


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost


@dataclass
class Security:
    """``token``: the shared secret every call carries (None: no check; allowed on loopback
    only). ``tls_cert``/``tls_key``: the learner's certificate and key (PEM files);
    ``tls_ca``: the certificate the actor trusts for the learner (PEM)."""

    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None

    def check_server(self, address: str) -> None:
        if not is_loopback(address) and not (self.token and self.tls_cert and self.tls_key):
            raise ConfigError(
                f"address: {address} is reachable from other machines; the learner binds there "
                "only with TLS and a shared token (tls_cert=PEM tls_key=PEM token=... or "
                "token_file=...): anyone who reaches an open port could feed it transitions")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key: give both (the learner's certificate and "
                              "its private key) or neither")

    def server_credentials(self) -> grpc.ServerCredentials | None:
        if not self.tls_cert:
            return None
        assert self.tls_key
        return grpc.ssl_server_credentials([(_read(self.tls_key, "tls_key"),
                                             _read(self.tls_cert, "tls_cert"))])

    def channel(self, address: str, options: list[tuple[str, Any]]) -> grpc.Channel:
        if self.tls_ca:
            creds = grpc.ssl_channel_credentials(root_certificates=_read(self.tls_ca, "tls_ca"))
            return grpc.secure_channel(address, creds, options=options)
        return grpc.insecure_channel(address, options=options)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc.strerror})") from None


def read_token(token: str | None, token_file: str | None) -> str | None:
    """The shared token from ``token`` or the first line of ``token_file`` (keeps it out of
    the process list and shell history)."""
    if token_file:
        lines = _read(token_file, "token_file").decode().splitlines()
        if not lines or not lines[0].strip():
            raise ConfigError(f"token_file: {token_file} is empty")
        return lines[0].strip()
    return token or None
