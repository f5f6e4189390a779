"""An upstream as a dialect addresses it: where it is and with which key; pure data.

`upstream.Upstream` makes one from its settings (the URL's `user:password@` taken out first);
a dialect turns it into the `Address` its requests go to (`dialects.Dialect.address`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .providers import Profile, resolve


@dataclass(frozen=True)
class Address:
    """Where one kind of request goes: a URL and the headers that say who sends it."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    """Without `user:password@` (those go as HTTP Basic auth, added by the transport)."""
    host: str
    """Named in error messages: never with the URL's credentials."""
    api_key: str = field(default="", repr=False)
    provider: str | None = None
    api_version: str | None = None
    """Azure's `api-version` for its deployment URLs."""

    @property
    def profile(self) -> Profile:
        """The provider's rules, as far as they hold for every model."""
        return resolve(self.provider, self.base_url, "")
