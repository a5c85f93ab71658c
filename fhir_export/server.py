"""Where a FHIR server is and how to sign in to it. Credentials given in a URL's user-info
(`http://user:pass@host/fhir`) or as a bearer token are sent with every request, but only the bare
base URL is ever printed or written, so logs and summaries never carry a password."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import httpx

TOKEN_VARIABLE = "TRAJSIM_FHIR_TOKEN"  # bearer token, when not given with --token


class ServerAddressError(ValueError):
    """A server address that is not an http(s) FHIR base URL."""


@dataclass(frozen=True)
class FhirServer:
    """A FHIR base URL without credentials (`base`, safe to show) and what to send to sign in."""

    base: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    auth: httpx.BasicAuth | None = field(default=None, repr=False)


def fhir_server(address: str, token: str | None = None) -> FhirServer:
    """Split an address into its shown base URL and its credentials; a token (argument or the
    TRAJSIM_FHIR_TOKEN variable) is sent as `Authorization: Bearer`."""
    try:
        url = httpx.URL(address.rstrip("/"))
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        shown = address if url is None else str(url.copy_with(username=None, password=None))
        raise ServerAddressError(f"{shown}: the server must be an http:// or https:// FHIR base URL")
    auth = httpx.BasicAuth(url.username, url.password) if url.username or url.password else None
    token = token or os.environ.get(TOKEN_VARIABLE)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return FhirServer(str(url.copy_with(username=None, password=None)), headers, auth)
