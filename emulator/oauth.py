"""The emulator's OAuth 2.0 server: Authlib's AuthorizationServer with Mediaflow's three grants."""

from __future__ import annotations

import base64
import hmac
import time
from typing import Any, ClassVar
from urllib.parse import unquote

from authlib.common.security import generate_token
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge

from .config import Client, EmulatorConfig, User
from .store import AuthorizationCode, RefreshToken, Store


class OAuthClient(ClientMixin):
    """Authlib's view of one configured client."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @property
    def id(self) -> str:
        return self.client.id

    def get_client_id(self) -> str:
        return self.client.id

    def get_default_redirect_uri(self) -> str:
        return self.client.redirect_uris[0]

    def get_allowed_scope(self, scope: str | None) -> str:
        # Mediaflow documents no scopes: accept any, echo none.
        return ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.client.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return _same(client_secret, self.client.secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_post", "client_secret_basic")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.client.grants

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "refresh_token":
            return self.client.issue_refresh_token and "refresh_token" in self.client.grants
        return grant_type in self.client.grants


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


def _authenticate_basic(query_client: Any, request: OAuth2Request) -> OAuthClient | None:
    """client_secret_basic (RFC 6749 §2.3.1), tolerant of malformed headers."""
    scheme, _, value = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, _, secret = decoded.partition(":")
    client: OAuthClient | None = query_client(unquote(client_id))
    if client is not None and client.check_client_secret(unquote(secret)):
        return client
    return None


class EchoState:
    """Mediaflow echoes `state` in the token response when the request had one."""

    request: OAuth2Request

    def echo_state(self, result: tuple[int, dict[str, Any], Any]) -> tuple[int, dict[str, Any], Any]:
        status, token, headers = result
        state = self.request.form.get("state")
        if state:
            token["state"] = state
        return status, token, headers


class AuthorizationCodeGrant(EchoState, grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_post", "client_secret_basic"]
    server: MediaflowServer

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        self.server.store.save_code(
            AuthorizationCode(
                code=code,
                client_id=request.client.id,
                redirect_uri=request.payload.redirect_uri,
                scope=request.payload.scope or "",
                username=request.user.username,
                issued_at=time.time(),
                code_challenge=request.payload.data.get("code_challenge"),
                code_challenge_method=request.payload.data.get("code_challenge_method"),
            )
        )

    def query_authorization_code(self, code: str, client: OAuthClient) -> AuthorizationCode | None:
        return self.server.store.consume_code(code, client.client)

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        # Already spent by query_authorization_code; kept to recognise a replay.
        pass

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User | None:
        return self.server.config.user(authorization_code.username)

    def create_token_response(self) -> tuple[int, dict[str, Any], Any]:
        return self.echo_state(super().create_token_response())


class RefreshTokenGrant(EchoState, grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_post", "client_secret_basic"]
    server: MediaflowServer

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        return self.server.store.find_refresh_token(refresh_token)

    def authenticate_user(self, refresh_token: RefreshToken) -> User | None:
        return self.server.config.user(refresh_token.username)

    def issue_token(self, user: User, refresh_token: RefreshToken) -> dict[str, Any]:
        client: Client = self.request.client.client
        if client.rotate_refresh_tokens and not self.server.store.spend_refresh_token(refresh_token):
            raise InvalidGrantError("The refresh token was already used.")
        token: dict[str, Any] = self.generate_token(
            user=user, scope=refresh_token.get_scope(), include_refresh_token=client.rotate_refresh_tokens
        )
        if not client.rotate_refresh_tokens and client.empty_refresh_token_on_refresh:
            token["refresh_token"] = ""
        return token

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        # Spent in issue_token, before the new token exists, so two racing requests cannot both win.
        pass

    def create_token_response(self) -> tuple[int, dict[str, Any], Any]:
        return self.echo_state(super().create_token_response())


class PasswordGrant(EchoState, grants.ResourceOwnerPasswordCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_post", "client_secret_basic"]
    server: MediaflowServer

    def authenticate_user(self, username: str, password: str) -> User | None:
        user = self.server.config.authenticate(username, password)
        if user is None:
            # RFC 6749 §5.2: wrong resource-owner credentials are invalid_grant.
            raise InvalidGrantError("Wrong username or password.")
        return user

    def create_token_response(self) -> tuple[int, dict[str, Any], Any]:
        return self.echo_state(super().create_token_response())


class MediaflowServer(AuthorizationServer):
    """Authlib's server, wired to the emulator's config and in-memory store."""

    def __init__(self, config: EmulatorConfig, store: Store) -> None:
        super().__init__()
        self.config = config
        self.store = store
        self._clients = {c.id: OAuthClient(c) for c in config.clients}
        self.register_token_generator("default", self._generate_token)
        self.register_grant(AuthorizationCodeGrant, [CodeChallenge(required=False)])
        self.register_grant(RefreshTokenGrant)
        self.register_grant(PasswordGrant)
        # Authlib's and Werkzeug's Basic parsers raise on headers such as "Basic " or non-ASCII (a 500).
        self.register_client_auth_method("client_secret_basic", _authenticate_basic)

    def query_client(self, client_id: str) -> OAuthClient | None:
        return self._clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        client: Client = request.client.client
        refresh: RefreshToken | None = getattr(request, "refresh_token", None)
        if refresh is not None:
            family_id = refresh.family_id
            scope = refresh.scope
        else:
            family_id = self.store.new_family()
            code: AuthorizationCode | None = getattr(request, "authorization_code", None)
            scope = code.scope if code else (request.payload.scope or "")
            if code is not None:
                code.family_id = family_id
        self.store.save_tokens(token, client, request.user, family_id, scope)

    def _generate_token(
        self,
        grant_type: str,
        client: OAuthClient,
        user: User | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        generator = BearerTokenGenerator(
            lambda **_: generate_token(42),
            lambda **_: generate_token(48),
            lambda c, g: (c.client.refreshed_expires_in or c.client.expires_in) if g == "refresh_token"
            else c.client.expires_in,
        )
        token: dict[str, Any] = generator(
            grant_type, client, user, scope, expires_in, include_refresh_token and client.client.issue_refresh_token
        )
        return token

    def handle_error_response(self, request: OAuth2Request, error: OAuth2Error) -> Any:
        # The issue and RFC 6749 §5.2 allow 401 for every failed client authentication.
        if error.error == "invalid_client":
            error.status_code = 401
        return super().handle_error_response(request, error)
