"""The guards' rules on their own, with a hand-driven clock: tokens, JWTs, buckets, suspensions, breakers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from mcptrace._errors import AuthError, ConfigError
from mcptrace.guards import (
    BreakerOpenError,
    BreakerPolicy,
    Breakers,
    JwtVerifier,
    Limit,
    LimitPolicy,
    MemoryBackend,
    RateLimiter,
    TokenStore,
)
from mcptrace.telemetry._context import DownstreamCall
from tests.jwt_keys import AUDIENCE, ISSUER, Issuer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run(coro_fn, *args):  # type: ignore[no-untyped-def]
    return anyio.run(coro_fn, *args)


class TestTokenStore:
    def test_tokens_are_stored_only_as_hashes(self, tmp_path: Path) -> None:
        store = TokenStore(tmp_path / "tokens.json")
        token = store.add("agent-1", tenant="acme")
        assert token.startswith("mct_")
        assert token not in (tmp_path / "tokens.json").read_text()
        assert oct((tmp_path / "tokens.json").stat().st_mode & 0o777) == "0o600"
        identity = store.authenticate(token)
        assert (identity.caller_id, identity.tenant, identity.tools) == ("agent-1", "acme", None)

    def test_unknown_and_expired_tokens_are_refused(self, tmp_path: Path) -> None:
        wall = [1_000_000.0]
        store = TokenStore(tmp_path / "t.json", wall_clock=lambda: wall[0])
        token = store.add("a", tenant="acme", ttl_seconds=60)
        store.authenticate(token)
        with pytest.raises(AuthError, match="invalid"):
            store.authenticate(token + "x")
        wall[0] += 61
        with pytest.raises(AuthError, match="expired"):
            store.authenticate(token)

    def test_a_revocation_by_another_process_is_seen_after_the_reload_interval(self, tmp_path: Path) -> None:
        clock = Clock()
        serving = TokenStore(tmp_path / "t.json", reload_interval=0.25, clock=clock)
        token = TokenStore(tmp_path / "t.json").add("a", tenant="acme")
        clock.advance(0.3)
        serving.authenticate(token)
        TokenStore(tmp_path / "t.json").revoke("a")
        clock.advance(0.3)
        with pytest.raises(AuthError):
            serving.authenticate(token)

    def test_a_corrupt_file_keeps_the_last_good_table(self, tmp_path: Path) -> None:
        clock = Clock()
        path = tmp_path / "t.json"
        serving = TokenStore(path, clock=clock)
        token = TokenStore(path).add("a", tenant="acme")
        clock.advance(1)
        serving.authenticate(token)
        path.write_text("{not json")
        clock.advance(1)
        assert serving.authenticate(token).caller_id == "a"
        assert serving.reload_errors == 1

    def test_allowed_tools_are_part_of_the_identity(self, tmp_path: Path) -> None:
        store = TokenStore(tmp_path / "t.json")
        identity = store.authenticate(store.add("a", tenant="acme", tools=["ping"]))
        assert identity.allows("ping") and not identity.allows("run_report")


class TestJwt:
    @pytest.fixture
    def issuer(self) -> Issuer:
        return Issuer()

    @pytest.fixture
    def verifier(self, issuer: Issuer, tmp_path: Path) -> JwtVerifier:
        return JwtVerifier(str(issuer.write_jwks(tmp_path / "jwks.json")), issuer=ISSUER, audience=AUDIENCE)

    def test_a_valid_token_gives_caller_and_tenant_from_its_claims(
        self, issuer: Issuer, verifier: JwtVerifier
    ) -> None:
        identity = run(verifier.authenticate, issuer.token(sub="agent-9", tenant="globex"))
        assert (identity.caller_id, identity.tenant) == ("agent-9", "globex")

    @pytest.mark.parametrize(
        ("claims", "reason"),
        [
            ({"ttl": -10}, "token expired"),
            ({"aud": "https://someone-else"}, "wrong audience"),
            ({"iss": "https://evil.test"}, "wrong issuer"),
            ({"tenant": None}, "no 'tenant' claim"),
        ],
    )
    def test_bad_claims_are_refused(
        self,
        issuer: Issuer,
        verifier: JwtVerifier,
        claims: dict[str, object],
        reason: str,
    ) -> None:
        with pytest.raises(AuthError, match=reason):
            run(verifier.authenticate, issuer.token(**claims))  # type: ignore[arg-type]

    def test_a_token_signed_by_another_key_is_refused(self, verifier: JwtVerifier) -> None:
        with pytest.raises(AuthError, match="bad signature"):
            run(verifier.authenticate, Issuer(kid="k1").token())

    def test_garbage_is_refused_not_crashed_on(self, verifier: JwtVerifier) -> None:
        with pytest.raises(AuthError, match="malformed"):
            run(verifier.authenticate, "a.b.c")

    def test_claim_names_are_configurable(self, issuer: Issuer, tmp_path: Path) -> None:
        verifier = JwtVerifier(
            str(issuer.write_jwks(tmp_path / "k.json")),
            issuer=ISSUER,
            audience=AUDIENCE,
            caller_claim="client_id",
            tenant_claim="org",
        )
        identity = run(verifier.authenticate, issuer.token(client_id="svc-3", org="initech"))
        assert (identity.caller_id, identity.tenant) == ("svc-3", "initech")

    def test_issuer_and_audience_are_required(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError):
            JwtVerifier(str(Issuer().write_jwks(tmp_path / "k.json")), issuer=None, audience=AUDIENCE)


def limiter(clock: Clock, **policy: object) -> RateLimiter:
    defaults: dict[str, object] = dict(
        caller=Limit(10, 5),
        tools={"run_report": Limit(0.5, 2)},
        default_tool=Limit(100, 100),
        suspend_after=5,
        suspend_window=10,
        suspend_seconds=30,
    )
    defaults.update(policy)
    return RateLimiter(LimitPolicy(**defaults), backend=MemoryBackend(clock=clock))  # type: ignore[arg-type]


class TestRateLimits:
    def test_retry_after_is_the_real_time_until_a_token(self) -> None:
        clock = Clock()
        lim = limiter(clock)
        assert run(lim.check, "a", "run_report").allowed
        assert run(lim.check, "a", "run_report").allowed
        refused = run(lim.check, "a", "run_report")
        assert (refused.allowed, refused.scope, refused.retry_after_ms) == (False, "tool", 2000)
        clock.advance(1.5)
        assert run(lim.check, "a", "run_report").retry_after_ms == 500
        clock.advance(0.5)
        assert run(lim.check, "a", "run_report").allowed

    def test_the_caller_bucket_limits_every_tool_together(self) -> None:
        clock = Clock()
        lim = limiter(clock)
        for _ in range(5):
            assert run(lim.check, "a", "ping").allowed
        refused = run(lim.check, "a", "get_config")
        assert (refused.scope, refused.retry_after_ms) == ("caller", 100)
        assert run(lim.check, "b", "ping").allowed  # another caller has its own bucket

    def test_a_refused_call_consumes_nothing(self) -> None:
        clock = Clock()
        lim = limiter(clock)
        run(lim.check, "a", "run_report")
        run(lim.check, "a", "run_report")
        for _ in range(3):
            assert not run(lim.check, "a", "run_report").allowed
        clock.advance(2)
        assert run(lim.check, "a", "run_report").allowed

    def test_repeated_violations_suspend_and_the_suspension_lifts_by_itself(self) -> None:
        clock = Clock()
        lim = limiter(clock)
        for _ in range(5):
            run(lim.check, "a", "ping")
        decisions = [run(lim.check, "a", "ping") for _ in range(5)]
        assert [d.scope for d in decisions] == ["caller"] * 4 + ["suspended"]
        assert decisions[-1].suspended_now and decisions[-1].retry_after_ms == 30_000
        clock.advance(20)  # buckets are full again, but the caller is still suspended
        assert run(lim.check, "a", "ping").retry_after_ms == 10_000
        assert run(lim.check, "b", "ping").allowed
        clock.advance(10)
        assert run(lim.check, "a", "ping").allowed
        assert lim.stats.suspensions == 1
        assert lim.stats.rate_limited == {"caller": 4, "suspended": 2}

    def test_violations_outside_the_window_do_not_add_up(self) -> None:
        clock = Clock()
        lim = limiter(clock, caller=Limit(0.1, 1))
        for _ in range(10):
            run(lim.check, "a")
            assert run(lim.check, "a").scope == "caller"
            clock.advance(10)
        assert lim.stats.suspensions == 0

    def test_policy_strings(self) -> None:
        policy = LimitPolicy.parse(
            caller="5/10",
            tools="ping=100/200, run_report=0.1/5,*=2/4",
            suspend_after=3,
            suspend_window=1,
            suspend_seconds=2,
        )
        assert policy.for_tool("ping") == Limit(100, 200)
        assert policy.for_tool("search_database") == Limit(2, 4)
        for bad in ("fast", "0/5", "5"):
            with pytest.raises(ConfigError):
                LimitPolicy.parse(caller=bad, tools="", suspend_after=3, suspend_window=1, suspend_seconds=2)

    def test_a_backend_that_fails_lets_requests_through_and_counts_it(self) -> None:
        class Broken(MemoryBackend):
            async def decide(self, *args: object) -> object:  # type: ignore[override]
                raise ConnectionError("down")

        lim = RateLimiter(LimitPolicy(), backend=Broken())
        assert run(lim.check, "a", "ping").allowed
        assert lim.stats.backend_errors == 1


class TestBreaker:
    def make(self, clock: Clock) -> tuple[Breakers, list[tuple[str, str, str]]]:
        seen: list[tuple[str, str, str]] = []
        policy = BreakerPolicy(failure_rate=0.5, min_calls=4, window=10, cooldown=5)
        return Breakers(policy, clock=clock, on_transition=lambda *t: seen.append(t)), seen

    def call(self, breakers: Breakers, ok: bool) -> None:
        call = DownstreamCall("upstream", None)
        with breakers.guard("upstream", call):
            if not ok:
                call.fail("HTTP 503")

    def test_opens_on_error_rate_then_half_opens_and_closes_on_success(self) -> None:
        clock = Clock()
        breakers, seen = self.make(clock)
        for ok in (True, False, True, False):
            self.call(breakers, ok)
        assert breakers.states() == {"upstream": "open"}
        with pytest.raises(BreakerOpenError) as refused:
            self.call(breakers, True)
        assert refused.value.retry_after == pytest.approx(5)
        clock.advance(5)
        assert breakers.states() == {"upstream": "half_open"}
        self.call(breakers, True)
        assert breakers.states() == {"upstream": "closed"}
        assert [t[2] for t in seen] == ["open", "half_open", "closed"]

    def test_a_failed_trial_reopens_and_only_one_trial_runs_at_a_time(self) -> None:
        clock = Clock()
        breakers, _ = self.make(clock)
        for _ in range(4):
            self.call(breakers, False)
        clock.advance(5)
        breaker = breakers.get("upstream")
        assert breaker.admit() and not breaker.admit()
        breaker.record(False)
        assert breaker.state == "open"

    def test_too_few_calls_never_open_it(self) -> None:
        clock = Clock()
        breakers, _ = self.make(clock)
        for _ in range(3):
            self.call(breakers, False)
            clock.advance(4)
        assert breakers.states() == {"upstream": "closed"}

    def test_exceptions_count_as_failures(self) -> None:
        clock = Clock()
        breakers, _ = self.make(clock)
        for _ in range(4):
            with pytest.raises(TimeoutError), breakers.guard("sqlite", DownstreamCall("sqlite", None)):
                raise TimeoutError
        assert breakers.states()["sqlite"] == "open"


def test_out_of_the_box_forty_rapid_run_report_calls_trip_the_limit() -> None:
    from mcptrace._config import Config

    config = Config()
    policy = LimitPolicy.from_config(config)
    lim = RateLimiter(policy, backend=MemoryBackend(clock=Clock()))
    decisions = [run(lim.check, "agent", "run_report") for _ in range(40)]
    assert sum(d.allowed for d in decisions) == 5
    assert (
        policy.for_tool("ping").burst
        > policy.for_tool("search_database").burst
        > policy.for_tool("run_report").burst
    )


class TestJwksUrl:
    """Keys published over HTTP (a real server on loopback), including a key rotation."""

    @pytest.fixture
    def published(self) -> Iterator[tuple[str, dict[str, bytes]]]:
        import http.server
        import threading

        documents: dict[str, bytes] = {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = documents["jwks"]
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", documents
        finally:
            server.shutdown()
            thread.join(5)

    def test_keys_are_fetched_and_a_rotated_key_is_picked_up(
        self, published: tuple[str, dict[str, bytes]]
    ) -> None:
        import json

        url, documents = published
        old, new = Issuer(kid="2025"), Issuer(kid="2026")
        documents["jwks"] = json.dumps(old.jwks()).encode()
        clock = Clock()
        verifier = JwtVerifier(url, issuer=ISSUER, audience=AUDIENCE, refetch_interval=30, clock=clock)
        assert run(verifier.authenticate, old.token(sub="a")).caller_id == "a"
        documents["jwks"] = json.dumps({"keys": old.jwks()["keys"] + new.jwks()["keys"]}).encode()
        with pytest.raises(AuthError, match="unknown signing key"):
            run(verifier.authenticate, new.token(sub="b"))  # refetches are spaced out
        clock.advance(31)
        assert run(verifier.authenticate, new.token(sub="b")).caller_id == "b"


def test_the_challenge_never_echoes_an_odd_host_header() -> None:
    from mcptrace.guards._auth import resource_url

    def url(host: bytes) -> str:
        return resource_url({"headers": [(b"host", host)], "server": ("127.0.0.1", 8765)}, "/m")

    assert url(b"mcp.example:443") == "http://mcp.example:443/m"
    assert url(b'evil", error="x') == "http://127.0.0.1:8765/m"
