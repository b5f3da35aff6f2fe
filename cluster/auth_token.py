"""The Ray cluster token for `potstill submit/logs/stop`, found where Ray itself looks, never shown.

    token = find_token(token_file=None)    # --token-file, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token
    headers = token.headers() if token else {}

Ray 2.52+ clusters with token authentication (RAY_AUTH_MODE=token; KubeRay's
`authOptions.mode: token`) refuse Jobs API calls without
`Authorization: Bearer <token>`. The order is Ray's own (its C++
AuthenticationTokenLoader: RAY_AUTH_TOKEN, then the file RAY_AUTH_TOKEN_PATH
names, then ~/.ray/auth_token), after an explicit --token-file. The value is
sent as a header only: its repr, the errors and the summaries name where it
came from, never what it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")


class TokenError(ValueError):
    """A token source that is named but unusable (missing or empty file)."""


@dataclass(frozen=True)
class AuthToken:
    """A cluster token and where it came from; the value never appears in repr or str."""

    source: str
    _value: str = field(repr=False)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._value}"}

    def __str__(self) -> str:
        return f"token from {self.source}"


def _read(path: Path, what: str) -> AuthToken:
    path = path.expanduser()
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TokenError(f"{what}: cannot read the token file {str(path)!r} ({exc.strerror}); check the path") from None
    if not value:
        raise TokenError(f"{what}: the token file {str(path)!r} is empty; write the cluster's token into it")
    return AuthToken(f"{what} ({path})", value)


def find_token(token_file: str | None = None) -> AuthToken | None:
    """The token to send, or None when no source has one (a cluster without token auth needs none)."""
    if token_file:
        return _read(Path(token_file), "--token-file")
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return AuthToken("RAY_AUTH_TOKEN", os.environ["RAY_AUTH_TOKEN"].strip())
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return _read(Path(os.environ["RAY_AUTH_TOKEN_PATH"]), "RAY_AUTH_TOKEN_PATH")
    default = DEFAULT_TOKEN_PATH.expanduser()
    if default.is_file() and default.read_text(encoding="utf-8").strip():
        return _read(default, "Ray's default token file")
    return None
