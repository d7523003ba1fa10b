"""X-Forwarded-* from the reverse proxy only: a client that reaches gunicorn directly cannot claim
another address (the login rate limit is per address) or https.

werkzeug's ProxyFix trusts whoever sends the headers; this wraps it so that it applies only to
requests whose peer is one of `ops.proxy_addresses`, and strips the headers from any other request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix


class TrustedProxyFix:
    def __init__(self, app: Any, *, hops: int, addresses: Iterable[str]) -> None:
        self.app = app
        self.fixed = ProxyFix(app, x_for=hops, x_proto=hops, x_host=hops)
        self.networks = [ipaddress.ip_network(a, strict=False) for a in addresses]

    def is_trusted(self, remote_addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(remote_addr)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.is_trusted(environ.get("REMOTE_ADDR", "")):
            return self.fixed(environ, start_response)
        for key in [k for k in environ if k.startswith("HTTP_X_FORWARDED_") or k == "HTTP_FORWARDED"]:
            del environ[key]
        return self.app(environ, start_response)
