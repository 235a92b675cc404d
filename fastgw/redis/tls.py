"""The SSLContext for TLS to Redis (`rediss://`, `redis.tls`).

Verification is on unless `insecure_skip_verify: true`: the server's
certificate must chain to `ca_file` (else the system trust store) and name
the host (`server_name`, else the URL's host; an IP address is checked
against the certificate's IP SANs). `cert_file` + `key_file` present a
client certificate (Redis `tls-auth-clients yes`).

The config reader builds one context when the config is loaded, so a bad
file is a config error naming its key; each worker builds its own for its
client.
"""
from __future__ import annotations

import ssl

from fastgw.config.model import RedisTls


class TlsSetupError(Exception):
    """A file of `redis.tls` could not be used; `.key` names which."""

    def __init__(self, key: str, problem: str):
        super().__init__(problem)
        self.key = key
        self.problem = problem


def _no_passphrase() -> bytes:
    # An encrypted key file would otherwise make OpenSSL prompt on the terminal.
    raise ValueError("the key file is encrypted; give an unencrypted key")


def client_context(tls: RedisTls) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # TLS 1.2+, hostname check, CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif tls.ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.ca_file)
        except (OSError, ssl.SSLError, ValueError) as error:
            raise TlsSetupError("ca_file", f"cannot load {tls.ca_file}: {_reason(error)}") from None
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls.cert_file is not None:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
        except (OSError, ssl.SSLError, ValueError) as error:
            raise TlsSetupError("cert_file", f"cannot load the client certificate {tls.cert_file} with key "
                                f"{tls.key_file}: {_reason(error)}") from None
    return context


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError) and error.reason:
        return error.reason.lower().replace("_", " ")
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__
