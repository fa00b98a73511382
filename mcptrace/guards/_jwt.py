"""OAuth 2.0 access tokens as JWTs, checked against the issuer's published keys (JWKS).

Each token's signature, `exp`, `aud` and `iss` are verified on every request.
Keys come from a JWKS file (re-read when it changes) or an http(s) URL (cached,
refetched when a token names a key id we have not seen, at most every
`refetch_interval` seconds so a flood of forged key ids cannot hammer the issuer).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson

from mcptrace._errors import AuthError, ConfigError
from mcptrace._hashing import text_hash
from mcptrace.guards._identity import Identity

_FAILURES: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.MissingRequiredClaimError, "missing required claim"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.DecodeError, "malformed token"),
)


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


class JwtVerifier:
    def __init__(
        self,
        jwks: str,
        *,
        issuer: str | None,
        audience: str | None,
        caller_claim: str = "sub",
        tenant_claim: str = "tenant",
        leeway: float = 0.0,
        cache_seconds: float = 300.0,
        refetch_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not issuer or not audience:
            raise ConfigError("JWT auth needs both an issuer (--issuer) and an audience (--audience)")
        self.source = jwks
        self.is_url = jwks.startswith(("https://", "http://"))
        self.issuer = issuer
        self.audience = audience
        self.caller_claim = caller_claim
        self.tenant_claim = tenant_claim
        self.leeway = leeway
        self.cache_seconds = cache_seconds
        self.refetch_interval = refetch_interval
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._loaded_at = float("-inf")
        self._file_signature: tuple[int, int] | None = None
        if not self.is_url:
            self._load_file(force=True)

    async def authenticate(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        key = await self._key_for(header.get("kid"))
        if key is None:
            raise AuthError("unknown signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            reason = next((text for kind, text in _FAILURES if isinstance(exc, kind)), "invalid token")
            raise AuthError(reason) from None
        caller, tenant = claims.get(self.caller_claim), claims.get(self.tenant_claim)
        if not isinstance(caller, str) or not caller:
            raise AuthError(f"token has no {self.caller_claim!r} claim")
        if not isinstance(tenant, str) or not tenant:
            raise AuthError(f"token has no {self.tenant_claim!r} claim")
        jti = claims.get("jti")
        revocation_key = "jwt:" + (str(jti) if jti else text_hash(token, length=16))
        # Whom sessions belong to: the subject at its issuer (a refreshed token keeps its sessions).
        subject = claims.get("sub")
        principal = f"jwt:{claims['iss']}|{subject if isinstance(subject, str) and subject else caller}"
        return Identity(caller, tenant, None, revocation_key, principal)

    async def _key_for(self, kid: str | None) -> jwt.PyJWK | None:
        if self.is_url:
            age = self._clock() - self._loaded_at
            if age > self.cache_seconds or (kid not in self._keys and age > self.refetch_interval):
                await self._fetch()
        else:
            self._load_file()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        self._loaded_at = self._clock()
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.get(self.source)
                response.raise_for_status()
                self._keys = _parse(response.content)
        except (httpx.HTTPError, ConfigError):
            pass  # keep the keys we had; tokens signed by unknown keys are refused

    def _load_file(self, *, force: bool = False) -> None:
        try:
            st = os.stat(self.source)
        except OSError as exc:
            if force:
                raise ConfigError(f"JWKS file {self.source} is unreadable: {exc}") from None
            return
        signature = (st.st_mtime_ns, st.st_size)
        if signature == self._file_signature:
            return
        try:
            keys = _parse(Path(self.source).read_bytes())
        except (OSError, ConfigError):
            if force:
                raise
            return
        self._keys, self._file_signature = keys, signature


def _parse(raw: bytes) -> dict[str | None, jwt.PyJWK]:
    try:
        data = orjson.loads(raw)
        keyset = jwt.PyJWKSet.from_dict(data)
    except (orjson.JSONDecodeError, jwt.PyJWTError, TypeError, KeyError) as exc:
        raise ConfigError(f"not a usable JWKS document: {exc}") from None
    return {k.key_id: k for k in keyset.keys}
