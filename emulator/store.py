"""In-memory, thread-safe records of codes and tokens, and the rules that bind them."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from .config import Client, User


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str | None
    scope: str
    username: str
    issued_at: float
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    used: bool = False
    family_id: str | None = None

    # Authlib's AuthorizationCodeMixin
    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class RefreshToken:
    """One refresh token; with rotation on, `rotated` marks it spent."""

    token: str
    client_id: str
    username: str
    family_id: str
    scope: str = ""
    rotated: bool = False

    # Authlib's TokenMixin, as far as the refresh grant uses it
    def check_client(self, client: Client) -> bool:
        return self.client_id == client.id

    def get_scope(self) -> str:
        return self.scope


@dataclass
class AccessToken:
    token: str
    client_id: str
    username: str
    family_id: str
    expires_at: float


@dataclass
class Family:
    """Every token descended from one grant (RFC 9700 §4.14.2 revokes them together)."""

    id: str
    revoked: bool = False
    access_tokens: set[str] = field(default_factory=set)
    refresh_tokens: set[str] = field(default_factory=set)


class Store:
    def __init__(self, code_lifetime: int) -> None:
        self.code_lifetime = code_lifetime
        self._lock = threading.RLock()
        self._codes: dict[str, AuthorizationCode] = {}
        self._access: dict[str, AccessToken] = {}
        self._refresh: dict[str, RefreshToken] = {}
        self._families: dict[str, Family] = {}
        self.reuse_detected = 0

    def save_code(self, code: AuthorizationCode) -> None:
        with self._lock:
            self._forget_old_codes()
            self._codes[code.code] = code

    def consume_code(self, code: str, client: Client) -> AuthorizationCode | None:
        """Return the code once; a replay revokes what the first use issued (RFC 6749 §4.1.2)."""
        with self._lock:
            record = self._codes.get(code)
            if record is None or record.client_id != client.id:
                return None
            if record.used:
                if record.family_id:
                    self._revoke_family(record.family_id)
                return None
            record.used = True
            if time.time() - record.issued_at > self.code_lifetime:
                return None
            return record

    def new_family(self) -> str:
        with self._lock:
            family = Family(secrets.token_hex(8))
            self._families[family.id] = family
            return family.id

    def save_tokens(self, token: dict[str, object], client: Client, user: User, family_id: str, scope: str) -> None:
        with self._lock:
            family = self._families[family_id]
            access = str(token["access_token"])
            expires_in = int(token.get("expires_in", client.expires_in))  # type: ignore[call-overload]
            self._access[access] = AccessToken(access, client.id, user.username, family_id, time.time() + expires_in)
            family.access_tokens.add(access)
            refresh = token.get("refresh_token")
            if refresh:
                self._refresh[str(refresh)] = RefreshToken(str(refresh), client.id, user.username, family_id, scope)
                family.refresh_tokens.add(str(refresh))

    def find_refresh_token(self, token: str) -> RefreshToken | None:
        """A usable refresh token; presenting a rotated one revokes its whole family."""
        with self._lock:
            record = self._refresh.get(token)
            if record is None or self._families[record.family_id].revoked:
                return None
            if record.rotated:
                self.reuse_detected += 1
                self._revoke_family(record.family_id)
                return None
            return record

    def spend_refresh_token(self, record: RefreshToken) -> bool:
        """Mark a refresh token rotated; False when a parallel request spent it first."""
        with self._lock:
            if record.rotated:
                self.reuse_detected += 1
                self._revoke_family(record.family_id)
                return False
            record.rotated = True
            return True

    def find_access_token(self, token: str) -> AccessToken | None:
        with self._lock:
            record = self._access.get(token)
            if record is None or self._families[record.family_id].revoked or record.expires_at <= time.time():
                return None
            return record

    def _revoke_family(self, family_id: str) -> None:
        self._families[family_id].revoked = True

    def _forget_old_codes(self) -> None:
        # Keep used codes for a while so a replay is still recognised and punished.
        horizon = time.time() - 10 * self.code_lifetime
        for code in [c for c, r in self._codes.items() if r.issued_at < horizon]:
            del self._codes[code]
