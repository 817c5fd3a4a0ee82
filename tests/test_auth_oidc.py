"""`auth.mode: oidc` through the real server: bearer JWTs checked against an identity provider.

The identity provider is a small HTTP server in this process that publishes a discovery document
and a JWKS made of keys generated here, counts how often each was fetched, and lets a test swap
its keys (a rotation) or break it (down, a redirect, garbage). Tokens are signed with PyJWT, as a
provider signs them; forged ones are built by hand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.scripted_llm import Reply
from tests.support.server import RunningServer, start_server

AUDIENCE = "autobots-api"
REALM = "/realms/autobots"
JWKS_PATH = REALM + "/protocol/openid-connect/certs"
DISCOVERY_PATH = REALM + "/.well-known/openid-configuration"
MIN_REFRESH_S = 1.0  # the main server's auth.oidc.jwks_min_refresh_s
SLOW_REFRESH_S = 30.0  # the rate-limit server's


# the identity provider -----------------------------------------------------------------------


@dataclass
class SigningKey:
    kid: str
    private: Any
    alg: str
    declare_alg: bool = True  # whether the JWKS names the key's algorithm

    @classmethod
    def rsa(cls, kid: str | None = None, declare_alg: bool = True) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid or f"rsa-{uuid.uuid4().hex[:8]}", key, "RS256", declare_alg)

    @classmethod
    def ec(cls, curve: ec.EllipticCurve, alg: str, kid: str | None = None) -> SigningKey:
        key = ec.generate_private_key(curve)
        return cls(kid or f"ec-{uuid.uuid4().hex[:8]}", key, alg, declare_alg=False)

    def jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if isinstance(self.private, rsa.RSAPrivateKey) else ECAlgorithm
        entry = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        entry.update({"kid": self.kid, "use": "sig"})
        if self.declare_alg:
            entry["alg"] = self.alg
        return entry

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


# Entries a real JWKS may hold that must never sign anything here, and must not break the rest:
# a symmetric key, an encryption key, a curve PyJWT cannot load, a broken RSA key.
ODD_ENTRIES = [
    {"kty": "oct", "kid": "hmac-key", "k": base64.urlsafe_b64encode(b"shared-secret").decode().rstrip("=")},
    {"kty": "RSA", "kid": "enc-key", "use": "enc", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
    {"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": "aGVsbG8"},
    {"kty": "RSA", "kid": "broken", "n": "AQAB"},
    {"kty": "RSA", "kid": "hs-on-rsa", "alg": "HS256", "n": "AQAB", "e": "AQAB"},
    "not even an object",
]


class FakeIdP:
    """Discovery at REALM/.well-known/openid-configuration, the JWKS at JWKS_PATH."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = []
        self.extra: list[Any] = list(ODD_ENTRIES)
        self.fetches: Counter[str] = Counter()
        self.broken: str | None = None  # "down", "redirect", "garbage", "no-keys"
        self._lock = threading.Lock()
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with idp._lock:
                    idp.fetches[self.path] += 1
                    broken = idp.broken
                    jwks = {"keys": [k.jwk() for k in idp.keys] + idp.extra}
                if self.path == DISCOVERY_PATH:
                    self._send(
                        200, json.dumps({"issuer": idp.issuer, "jwks_uri": idp.url + JWKS_PATH}).encode()
                    )
                elif self.path != JWKS_PATH:
                    self._send(404, b"{}")
                elif broken == "down":
                    self._send(503, b"maintenance")
                elif broken == "redirect":
                    self.send_response(302)
                    self.send_header("Location", idp.url + "/elsewhere")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif broken == "garbage":
                    self._send(200, b"<html>not json</html>")
                elif broken == "no-keys":
                    self._send(200, b'{"keys": "none"}')
                else:
                    self._send(200, json.dumps(jwks).encode())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.issuer = self.url + REALM
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def publish(self, *keys: SigningKey) -> None:
        with self._lock:
            self.keys = list(keys)

    def count(self, path: str = JWKS_PATH) -> int:
        with self._lock:
            return self.fetches[path]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Keys:
    rsa: SigningKey  # RS256, declared in the JWKS
    rsa_bare: SigningKey  # RSA, no "alg" in the JWKS
    ec: SigningKey  # P-256, no "alg": ES256
    p384: SigningKey  # P-384, no "alg": ES384, which the server does not accept

    def all(self) -> list[SigningKey]:
        return [self.rsa, self.rsa_bare, self.ec, self.p384]


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        SigningKey.rsa(),
        SigningKey.rsa(declare_alg=False),
        SigningKey.ec(ec.SECP256R1(), "ES256"),
        SigningKey.ec(ec.SECP384R1(), "ES384"),
    )


@pytest.fixture(scope="module")
def idp(keys: Keys) -> Iterator[FakeIdP]:
    provider = FakeIdP()
    provider.publish(*keys.all())
    yield provider
    provider.stop()


def oidc_env(llm_server: Any, issuer: str, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm_server.base_url,
        "AUTOBOTS_AUTH__MODE": "oidc",
        "AUTOBOTS_AUTH__OIDC__ISSUER": issuer,
        "AUTOBOTS_AUTH__OIDC__AUDIENCE": AUDIENCE,
        # These tests send floods of bad tokens from one address on purpose (the JWKS refetch
        # limit): the request rate limit, which counts failed sign-ins, would answer 429 first.
        "AUTOBOTS_LIMITS__PER_USER__REQUESTS_PER_MINUTE": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def srv(llm_server, idp, tmp_path_factory) -> Iterator[RunningServer]:
    """The JWKS found through discovery; Keycloak's admin role; a 1 s refetch limit."""
    env = oidc_env(
        llm_server,
        idp.issuer,
        AUTOBOTS_AUTH__OIDC__ADMIN_CLAIM="realm_access.roles",
        AUTOBOTS_AUTH__OIDC__JWKS_MIN_REFRESH_S=str(MIN_REFRESH_S),
    )
    server = start_server(tmp_path_factory.mktemp("oidc"), env=env)
    yield server
    server.stop()


# tokens and requests -------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(issuer: str, sub: str | None = "alice", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": issuer, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    if sub is not None:
        claims["sub"] = sub
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def sign(key: SigningKey, claims: dict[str, Any], alg: str | None = None, kid: str | None = None) -> str:
    return jwt.encode(claims, key.private, algorithm=alg or key.alg, headers={"kid": kid or key.kid})


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def signed_raw(key: SigningKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """An RS256 signature over a header PyJWT would refuse to write."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input.encode(), key.private)
    return f"{signing_input}.{b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call(
    server: RunningServer, method: str, path: str, token: str | None = None, **kwargs: Any
) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers.update(bearer(token))
    return requests.request(method, server.url + path, headers=headers, timeout=60, **kwargs)


def clean(r: requests.Response, status: int, *secrets: str) -> dict[str, Any]:
    """The status wanted, a JSON envelope, and nothing leaked: no traceback, no token."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert "Traceback" not in r.text and 'File "' not in r.text
    for secret in secrets:
        assert secret not in r.text
    body = r.json()
    assert isinstance(body, dict) and body["status"] is (status < 400), body
    return body


def rejected(r: requests.Response, *secrets: str) -> dict[str, Any]:
    body = clean(r, 401, *secrets)
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers
    return body


def flow() -> dict[str, Any]:
    return wf.autonomous(wf.assistant())


def ask(server: RunningServer, token: str | None, text: str, **message: Any) -> requests.Response:
    body = {"message": {"role": "user", "content": text, **message}, "flow_config": flow()}
    return call(server, "POST", "/api/messages", token, json=body)


def new_sub(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def no_new_tracebacks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test sent, the server it used logged no traceback meanwhile."""
    names = ("srv", "slow_srv", "cache_srv")
    servers = [request.getfixturevalue(n) for n in names if n in request.fixturenames]
    marks = [len(server.log()) for server in servers]
    yield
    for server, mark in zip(servers, marks, strict=True):
        new = server.log()[mark:]
        assert "Traceback" not in new, new[-3000:]


# a valid token -------------------------------------------------------------------------------


def test_a_valid_token_signs_the_user_in(srv, idp, keys, llm):
    sub = new_sub("alice")
    token = sign(keys.rsa, claims_for(idp.issuer, sub))
    assert clean(call(srv, "GET", "/api/sessions", token), 200)["data"] == []
    assert idp.count(DISCOVERY_PATH) == 1  # the JWKS was found through discovery, once

    llm.queue("The answer is 42. TERMINATE")
    body = clean(ask(srv, token, "what is the answer?"), 200)
    assert body["data"]["user_id"] == sub and body["data"]["content"] == "The answer is 42."
    sid = body["metadata"]["session_id"]
    sessions = clean(call(srv, "GET", "/api/sessions", token), 200)["data"]
    assert [(s["session_id"], s["user_id"]) for s in sessions] == [(sid, sub)]
    msgs = clean(call(srv, "GET", "/api/messages", token, params={"session_id": sid}), 200)["data"]
    assert [(m["role"], m["user_id"]) for m in msgs] == [("user", sub), ("assistant", sub)]

    me = clean(call(srv, "GET", "/api/me", token), 200)["data"]
    assert (me["user_id"], me["is_admin"], me["auth_mode"]) == (sub, False, "oidc")
    info = clean(call(srv, "GET", "/api/auth", token), 200)["data"]
    assert info["mode"] == "oidc" and info["user"] == {"user_id": sub, "is_admin": False}
    # naming yourself is fine
    assert clean(call(srv, "GET", "/api/sessions", token, params={"user_id": sub}), 200)["data"] == sessions
    assert idp.count(DISCOVERY_PATH) == 1


def test_an_es256_token_and_clock_skew_within_the_leeway_are_accepted(srv, idp, keys):
    sub = new_sub("ec")
    me = clean(call(srv, "GET", "/api/me", sign(keys.ec, claims_for(idp.issuer, sub))), 200)["data"]
    assert me["user_id"] == sub
    now = int(time.time())
    skewed = claims_for(idp.issuer, sub, exp=now - 5, nbf=now + 5, iat=now + 5)
    assert clean(call(srv, "GET", "/api/me", sign(keys.rsa, skewed)), 200)["data"]["user_id"] == sub
    # the audience may be a list holding ours
    listed = claims_for(idp.issuer, sub, aud=["account", AUDIENCE])
    assert clean(call(srv, "GET", "/api/me", sign(keys.rsa, listed)), 200)["data"]["user_id"] == sub


def test_an_expiry_beyond_the_year_9999_is_not_a_500(srv, idp, keys):
    token = sign(keys.rsa, claims_for(idp.issuer, new_sub("forever"), exp=10**20))
    clean(call(srv, "GET", "/api/me", token), 200)
    r = call(srv, "POST", "/api/auth/session", token)
    clean(r, 200)
    assert 0 < int(SimpleCookie(r.headers["Set-Cookie"])["autobots_session"]["max-age"]) <= 43_200


# bad credentials -----------------------------------------------------------------------------


def test_no_credentials_is_401_with_www_authenticate(srv):
    for path in ("/api/sessions", "/api/me", "/api/runs/nope"):
        rejected(call(srv, "GET", path))
    rejected(call(srv, "POST", "/api/messages", json={"message": {"role": "user", "content": "hi"}}))
    rejected(call(srv, "GET", "/api/sessions", headers={"Authorization": "Bearer    "}))
    rejected(call(srv, "GET", "/api/sessions", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"}))
    # public endpoints still answer
    clean(call(srv, "GET", "/api/health"), 200)
    assert clean(call(srv, "GET", "/api/auth"), 200)["data"] == {
        "mode": "oidc",
        "user": None,
        "default_user_id": None,
    }


def forgeries(issuer: str, keys: Keys) -> dict[str, str]:
    """Tokens that must all be refused, by name."""
    now = int(time.time())
    good = claims_for(issuer, "mallory")
    stranger = SigningKey.rsa(kid=keys.rsa.kid)  # a key the provider does not publish, same kid
    valid = sign(keys.rsa, good)
    head, payload, signature = valid.split(".")
    tampered = b64(json.dumps({**good, "sub": "admin", "realm_access": {"roles": ["admin"]}}).encode())
    hs_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': keys.rsa.kid}).encode())}.{b64(json.dumps(good).encode())}"
    hs_signature = hmac.new(keys.rsa.public_pem(), hs_input.encode(), hashlib.sha256).digest()
    oct_input = (
        f"{b64(json.dumps({'alg': 'HS256', 'kid': 'hmac-key'}).encode())}.{b64(json.dumps(good).encode())}"
    )
    return {
        "expired": sign(keys.rsa, claims_for(issuer, "mallory", iat=now - 3600, exp=now - 120)),
        "not yet valid": sign(keys.rsa, claims_for(issuer, "mallory", nbf=now + 300)),
        "issued in the future": sign(keys.rsa, claims_for(issuer, "mallory", iat=now + 600)),
        "no expiry": sign(keys.rsa, claims_for(issuer, "mallory", exp=None)),
        "expiry not a number": sign(keys.rsa, claims_for(issuer, "mallory", exp="tomorrow")),
        "wrong audience": sign(keys.rsa, claims_for(issuer, "mallory", aud="someone-else")),
        "no audience": sign(keys.rsa, claims_for(issuer, "mallory", aud=None)),
        "wrong issuer": sign(keys.rsa, claims_for("https://evil.example/realms/autobots", "mallory")),
        "issuer with a trailing slash": sign(keys.rsa, claims_for(issuer + "/", "mallory")),
        "no issuer": sign(keys.rsa, claims_for(issuer, "mallory", iss=None)),
        "a key not in the JWKS (known kid)": sign(stranger, good),
        "a key not in the JWKS (unknown kid)": sign(SigningKey.rsa(), good),
        "no kid": jwt.encode(good, keys.rsa.private, algorithm="RS256"),
        "kid not a string": signed_raw(keys.rsa, {"alg": "RS256", "kid": [keys.rsa.kid]}, good),
        "tampered payload": f"{head}.{tampered}.{signature}",
        "signature of another token": f"{head}.{payload}.{sign(keys.rsa, {**good, 'x': 1}).split('.')[2]}",
        "signature stripped": f"{head}.{payload}.",
        "alg none": unsigned({"alg": "none", "typ": "JWT"}, good),
        "alg none with a kid": unsigned({"alg": "none", "typ": "JWT", "kid": keys.rsa.kid}, good),
        "alg None": unsigned({"alg": "None", "kid": keys.rsa.kid}, good),
        "alg not a string": unsigned({"alg": ["RS256"], "kid": keys.rsa.kid}, good, b"x"),
        "HS256 with the public key as secret": f"{hs_input}.{b64(hs_signature)}",
        "HS256 with the JWKS's oct key": f"{oct_input}.{b64(hmac.new(b'shared-secret', oct_input.encode(), hashlib.sha256).digest())}",
        "RS256 pointed at an EC key": sign(keys.rsa, good, kid=keys.ec.kid),
        "ES256 pointed at an RSA key (alg declared)": sign(keys.ec, good, kid=keys.rsa.kid),
        "ES256 pointed at an RSA key (no alg)": sign(keys.ec, good, kid=keys.rsa_bare.kid),
        "ES256 pointed at a P-384 key": sign(keys.ec, good, kid=keys.p384.kid),
        "ES384 (not allowed) by its own P-384 key": sign(keys.p384, good),
        "PS256 (not allowed) by a published RSA key": sign(keys.rsa_bare, good, alg="PS256"),
        "RS256 pointed at a broken JWKS entry": sign(keys.rsa, good, kid="broken"),
        "RS256 pointed at an encryption key": sign(keys.rsa, good, kid="enc-key"),
        "no sub": sign(keys.rsa, claims_for(issuer, None)),
        "sub not a string": signed_raw(
            keys.rsa, {"alg": "RS256", "kid": keys.rsa.kid}, {**good, "sub": 12345}
        ),
        "empty sub": sign(keys.rsa, claims_for(issuer, "")),
        "overlong sub": sign(keys.rsa, claims_for(issuer, "x" * 201)),
        "garbage": "not-a-jwt",
        "three dots of garbage": "a.b.c",
        "latin-1 garbage": "caf\xe9.\xff\xfe.%%%",
        "header not an object": f"{b64(b'[1]')}.{payload}.{signature}",
        "header not base64": f"!!!.{payload}.{signature}",
        "payload not json": f"{head}.{b64(b'not json')}.{signature}",
        "a long token": "x" * 6000,
    }


def test_every_bad_token_is_401_never_500(srv, idp, keys):
    tokens = forgeries(idp.issuer, keys)
    assert len(tokens) > 40
    for name, token in tokens.items():
        for method, path, kwargs in (
            ("GET", "/api/sessions", {}),
            ("POST", "/api/messages", {"json": {"message": {"role": "user", "content": "hi"}}}),
            ("POST", "/api/auth/session", {}),
        ):
            r = call(srv, method, path, token, **kwargs)
            assert r.status_code == 401, (name, path, r.status_code, r.text[:300])
            rejected(r, token)
            assert "Set-Cookie" not in r.headers, name
    # the valid twin of these is accepted: the server is not simply refusing everyone
    clean(call(srv, "GET", "/api/sessions", sign(keys.rsa, claims_for(idp.issuer, "mallory"))), 200)


def test_the_reason_is_given_without_quoting_the_token(srv, idp, keys):
    now = int(time.time())
    expired = sign(keys.rsa, claims_for(idp.issuer, "bob", exp=now - 120))
    assert "expired" in rejected(call(srv, "GET", "/api/me", expired), expired)["message"]
    other = sign(keys.rsa, claims_for(idp.issuer, "bob", aud="other"))
    assert "audience" in rejected(call(srv, "GET", "/api/me", other), other)["message"]
    long_alg = unsigned({"alg": "none" + "A" * 500}, claims_for(idp.issuer, "bob"))
    assert "A" * 100 not in rejected(call(srv, "GET", "/api/me", long_alg), long_alg)["message"]


# two users and an admin ----------------------------------------------------------------------


def test_users_see_only_their_own_data_and_an_admin_may_name_anyone(srv, idp, keys, llm):
    alice, bob, root = new_sub("alice"), new_sub("bob"), new_sub("root")
    a = sign(keys.rsa, claims_for(idp.issuer, alice, realm_access={"roles": ["user"]}))
    b = sign(keys.ec, claims_for(idp.issuer, bob, roles=["admin"]))  # an admin role in the wrong claim
    admin = sign(keys.rsa, claims_for(idp.issuer, root, realm_access={"roles": ["user", "admin"]}))

    llm.queue("Paris. TERMINATE")
    asked = clean(ask(srv, a, "capital of France?"), 200)
    sid = asked["metadata"]["session_id"]
    llm.queue(Reply("slowly... TERMINATE", delay=4))
    started = call(
        srv,
        "POST",
        "/api/runs",
        a,
        json={"message": {"role": "user", "content": "slow"}, "flow_config": flow()},
    )
    run_id = clean(started, 202)["data"]["run_id"]
    assert clean(call(srv, "GET", f"/api/runs/{run_id}", a), 200)["data"]["status"] in ("queued", "running")

    # bob: alice's things answer exactly as missing ones
    answers: dict[str, set[str]] = {}
    for real, made_up in ((sid, str(uuid.uuid4())), (run_id, "no-such-run")):
        for ref in (real, made_up):
            requests_for = [("GET", "/api/messages", {"params": {"session_id": ref}})]
            if real == run_id:
                requests_for = [
                    ("GET", f"/api/runs/{ref}", {}),
                    ("GET", f"/api/runs/{ref}/events", {}),
                    ("POST", f"/api/runs/{ref}/cancel", {}),
                    ("POST", f"/api/runs/{ref}/input", {"json": {"text": "x"}}),
                ]
            for method, path, kwargs in requests_for:
                message = clean(call(srv, method, path, b, **kwargs), 404)["message"]
                answers.setdefault(path.replace(ref, "ID"), set()).add(message.replace(ref, "ID"))
    assert all(len(m) == 1 for m in answers.values()), answers  # not even the wording tells them apart
    assert clean(call(srv, "GET", "/api/sessions", b), 200)["data"] == []
    r = call(
        srv, "POST", "/api/messages/delete", b, json={"msg_id": asked["data"]["msg_id"], "session_id": sid}
    )
    clean(r, 404)

    # bob naming alice: 403, and nothing happens
    named = {"user_id": alice}
    clean(call(srv, "GET", "/api/sessions", b, params=named), 403)
    clean(call(srv, "GET", "/api/messages", b, params={**named, "session_id": sid}), 403)
    clean(call(srv, "GET", f"/api/runs/{run_id}", b, params=named), 403)
    clean(call(srv, "POST", f"/api/runs/{run_id}/cancel", b, params=named), 403)
    clean(call(srv, "GET", "/api/me", b, params=named), 403)
    clean(ask(srv, b, "pretend to be alice", user_id=alice, session_id=sid), 403)
    clean(call(srv, "POST", "/api/cleardb", b, json={"user_id": alice, "session_id": sid}), 403)
    assert clean(call(srv, "GET", "/api/me", b), 200)["data"]["is_admin"] is False

    # alice's run was untouched by all that; she can cancel it herself
    assert clean(call(srv, "GET", f"/api/runs/{run_id}", a), 200)["data"]["status"] in ("queued", "running")
    assert clean(call(srv, "POST", f"/api/runs/{run_id}/cancel", a), 200)["data"]["status"] == "cancelled"
    msgs = clean(call(srv, "GET", "/api/messages", a, params={"session_id": sid}), 200)["data"]
    assert [m["content"] for m in msgs] == ["capital of France?", "Paris."]

    # the admin acts for alice by naming her, and is herself otherwise
    me = clean(call(srv, "GET", "/api/me", admin), 200)["data"]
    assert (me["user_id"], me["is_admin"]) == (root, True)
    assert clean(call(srv, "GET", "/api/sessions", admin), 200)["data"] == []
    listed = clean(call(srv, "GET", "/api/sessions", admin, params=named), 200)["data"]
    assert sid in [s["session_id"] for s in listed] and {s["user_id"] for s in listed} == {alice}
    read = clean(call(srv, "GET", "/api/messages", admin, params={**named, "session_id": sid}), 200)["data"]
    assert [m["content"] for m in read] == [m["content"] for m in msgs]
    assert (
        clean(call(srv, "GET", f"/api/runs/{run_id}", admin, params=named), 200)["data"]["status"]
        == "cancelled"
    )
    clean(call(srv, "GET", f"/api/runs/{run_id}", admin), 404)  # not the admin's own run


# key rotation and the JWKS refetch limit -----------------------------------------------------


def wait_past_refresh_limit() -> None:
    time.sleep(MIN_REFRESH_S + 0.2)


def test_a_rotated_key_is_fetched_once_and_a_dropped_key_stops_working(srv, idp, keys):
    sub = new_sub("rotating")
    clean(call(srv, "GET", "/api/me", sign(keys.rsa, claims_for(idp.issuer, sub))), 200)
    wait_past_refresh_limit()

    first = SigningKey.rsa(kid="rotated-1")
    idp.publish(*keys.all(), first)
    before = idp.count()
    token = sign(first, claims_for(idp.issuer, sub))
    assert clean(call(srv, "GET", "/api/me", token), 200)["data"]["user_id"] == sub
    assert idp.count() == before + 1
    for _ in range(5):  # now cached: no more fetches
        clean(call(srv, "GET", "/api/me", token), 200)
    assert idp.count() == before + 1

    # the next rotation drops "rotated-1": once the set is refetched, its tokens are refused
    wait_past_refresh_limit()
    second = SigningKey.ec(ec.SECP256R1(), "ES256", kid="rotated-2")
    idp.publish(*keys.all(), second)
    clean(call(srv, "GET", "/api/me", sign(second, claims_for(idp.issuer, sub))), 200)
    assert idp.count() == before + 2
    rejected(call(srv, "GET", "/api/me", token), token)
    clean(call(srv, "GET", "/api/me", sign(keys.rsa, claims_for(idp.issuer, sub))), 200)
    assert idp.count(DISCOVERY_PATH) == 1
    idp.publish(*keys.all())


def flood(server: RunningServer, issuer: str, key: SigningKey, seconds: float, threads: int = 8) -> int:
    """Tokens with made-up kids, as fast as `threads` clients can send them for `seconds`."""
    deadline = time.monotonic() + seconds

    def one_client() -> int:
        sent = 0
        with requests.Session() as http:
            while time.monotonic() < deadline:
                token = sign(key, claims_for(issuer, "flooder"), kid=uuid.uuid4().hex)
                r = http.get(server.url + "/api/sessions", headers=bearer(token), timeout=30)
                assert r.status_code == 401, (r.status_code, r.text[:300])
                sent += 1
        return sent

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(lambda _: one_client(), range(threads)))


def test_unknown_kids_refetch_at_most_once_per_min_refresh(srv, idp, keys):
    clean(call(srv, "GET", "/api/me", sign(keys.rsa, claims_for(idp.issuer, "flooder"))), 200)
    wait_past_refresh_limit()
    before = idp.count()
    started = time.monotonic()
    sent = flood(srv, idp.issuer, keys.rsa, seconds=2.5)
    elapsed = time.monotonic() - started
    fetched = idp.count() - before
    assert sent > 50, sent
    assert 1 <= fetched <= int(elapsed / MIN_REFRESH_S) + 1, (fetched, elapsed, sent)
    # the known key still works at once, without a fetch
    count = idp.count()
    clean(call(srv, "GET", "/api/me", sign(keys.rsa, claims_for(idp.issuer, "flooder"))), 200)
    assert idp.count() == count


@pytest.mark.parametrize("failure", ["down", "redirect", "garbage", "no-keys"])
def test_a_provider_that_cannot_be_read_is_401_and_cached_keys_still_work(srv, idp, keys, failure):
    sub = new_sub("outage")
    clean(call(srv, "GET", "/api/me", sign(keys.rsa, claims_for(idp.issuer, sub))), 200)
    wait_past_refresh_limit()
    idp.broken = failure
    try:
        before = idp.count()
        unknown = sign(SigningKey.rsa(), claims_for(idp.issuer, sub))
        body = rejected(call(srv, "GET", "/api/me", unknown), unknown)
        assert idp.count() == before + 1, "the provider was asked"
        assert "<html>" not in body["message"]
        assert idp.count("/elsewhere") == 0  # a redirect is not followed
        clean(call(srv, "GET", "/api/me", sign(keys.ec, claims_for(idp.issuer, sub))), 200)
    finally:
        idp.broken = None


@pytest.fixture(scope="module")
def slow_idp(keys: Keys) -> Iterator[FakeIdP]:
    provider = FakeIdP()
    provider.publish(keys.rsa)
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def slow_srv(llm_server, slow_idp, tmp_path_factory) -> Iterator[RunningServer]:
    """The JWKS URL configured (no discovery); a 30 s refetch limit; admin is a `roles` entry."""
    env = oidc_env(
        llm_server,
        slow_idp.issuer,
        AUTOBOTS_AUTH__OIDC__JWKS_URL=slow_idp.url + JWKS_PATH,
        AUTOBOTS_AUTH__OIDC__JWKS_MIN_REFRESH_S=str(SLOW_REFRESH_S),
        AUTOBOTS_AUTH__OIDC__ADMIN_CLAIM="roles",
    )
    server = start_server(tmp_path_factory.mktemp("oidc-slow"), env=env)
    yield server
    server.stop()


def test_a_flood_of_made_up_kids_fetches_nothing_within_the_limit(slow_srv, slow_idp, keys):
    assert slow_idp.count() == 0  # nothing is fetched before a token needs it
    token = sign(keys.rsa, claims_for(slow_idp.issuer, "first", roles=["admin"]))
    assert clean(call(slow_srv, "GET", "/api/me", token), 200)["data"]["is_admin"] is True
    assert slow_idp.count() == 1 and slow_idp.count(DISCOVERY_PATH) == 0
    sent = flood(slow_srv, slow_idp.issuer, keys.rsa, seconds=2.0)
    assert sent > 50 and slow_idp.count() == 1, (sent, slow_idp.count())
    clean(call(slow_srv, "GET", "/api/me", token), 200)
    assert slow_idp.count() == 1


CACHE_S = 2.0


@pytest.fixture(scope="module")
def cache_idp(keys: Keys) -> Iterator[FakeIdP]:
    provider = FakeIdP()
    provider.publish(keys.rsa, keys.ec)
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def cache_srv(llm_server, cache_idp, tmp_path_factory) -> Iterator[RunningServer]:
    """The key set is kept only CACHE_S seconds."""
    env = oidc_env(
        llm_server,
        cache_idp.issuer,
        AUTOBOTS_AUTH__OIDC__JWKS_URL=cache_idp.url + JWKS_PATH,
        AUTOBOTS_AUTH__OIDC__JWKS_CACHE_S=str(CACHE_S),
        AUTOBOTS_AUTH__OIDC__JWKS_MIN_REFRESH_S="60",
    )
    server = start_server(tmp_path_factory.mktemp("oidc-cache"), env=env)
    yield server
    server.stop()


def test_an_expired_key_cache_survives_an_outage_and_drops_revoked_keys(cache_srv, cache_idp, keys):
    rsa_token = sign(keys.rsa, claims_for(cache_idp.issuer, new_sub("cached")))
    ec_token = sign(keys.ec, claims_for(cache_idp.issuer, new_sub("cached")))
    clean(call(cache_srv, "GET", "/api/me", rsa_token), 200)
    assert cache_idp.count() == 1

    # the cache expires while the provider is down: its keys still check the tokens they signed
    cache_idp.broken = "down"
    time.sleep(CACHE_S + 0.3)
    try:
        clean(call(cache_srv, "GET", "/api/me", rsa_token), 200)
        assert cache_idp.count() == 2  # it did try
        clean(call(cache_srv, "GET", "/api/me", ec_token), 200)
    finally:
        cache_idp.broken = None

    # the provider revokes the EC key: once the cache expires, tokens it signed are refused,
    # although their kid was known and no unknown kid asked for a refetch
    cache_idp.publish(keys.rsa)
    clean(call(cache_srv, "GET", "/api/me", ec_token), 200)  # cached for now
    time.sleep(CACHE_S + 0.3)
    rejected(call(cache_srv, "GET", "/api/me", ec_token), ec_token)
    assert cache_idp.count() == 3
    clean(call(cache_srv, "GET", "/api/me", rsa_token), 200)


# the page's sign-in ------------------------------------------------------------------------------


def session_cookie(r: requests.Response) -> tuple[str, int]:
    morsel = SimpleCookie(r.headers["Set-Cookie"])["autobots_session"]
    assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    return morsel.value, int(morsel["max-age"])


def test_signing_the_page_in_with_a_jwt_sets_a_cookie_that_ends_with_the_token(srv, idp, keys, llm):
    sub = new_sub("page")
    token = sign(keys.rsa, claims_for(idp.issuer, sub, exp=int(time.time()) + 120))
    r = call(srv, "POST", "/api/auth/session", token)
    assert clean(r, 200, token)["data"]["user"] == {"user_id": sub, "is_admin": False}
    cookie, max_age = session_cookie(r)
    assert 100 <= max_age <= 120, max_age
    assert cookie not in token and token not in r.headers["Set-Cookie"]

    jar = {"Cookie": f"autobots_session={cookie}"}
    same = {**jar, "Origin": srv.url}
    assert clean(call(srv, "GET", "/api/me", headers=jar), 200)["data"]["user_id"] == sub
    assert clean(call(srv, "GET", "/api/sessions", headers=jar), 200)["data"] == []
    llm.queue("Hi from the page. TERMINATE")
    body = {"message": {"role": "user", "content": "hello"}, "flow_config": flow()}
    asked = clean(call(srv, "POST", "/api/messages", headers=same, json=body), 200)
    assert asked["data"]["user_id"] == sub
    listed = clean(call(srv, "GET", "/api/sessions", headers=jar), 200)["data"]
    assert [s["user_id"] for s in listed] == [sub]
    # the cookie is only good from this server's own page, and never signs the page in again
    clean(call(srv, "POST", "/api/messages", headers=jar, json=body), 403)
    clean(call(srv, "POST", "/api/messages", headers={**jar, "Origin": "http://127.0.0.1:1"}, json=body), 403)
    clean(call(srv, "GET", "/api/me", headers={**jar, "Sec-Fetch-Site": "cross-site"}), 403)
    rejected(call(srv, "POST", "/api/auth/session", headers=same))
    rejected(call(srv, "GET", "/api/me", headers={"Cookie": "autobots_session=made-up"}))

    # signing out ends it at once
    clean(call(srv, "DELETE", "/api/auth/session", headers=same), 200)
    rejected(call(srv, "GET", "/api/me", headers=jar))


def test_the_cookie_of_a_short_lived_token_expires_with_it(srv, idp, keys):
    sub = new_sub("brief")
    token = sign(keys.ec, claims_for(idp.issuer, sub, exp=int(time.time()) + 3))
    r = call(srv, "POST", "/api/auth/session", token)
    clean(r, 200)
    cookie, max_age = session_cookie(r)
    assert 1 <= max_age <= 3, max_age
    jar = {"Cookie": f"autobots_session={cookie}"}
    assert clean(call(srv, "GET", "/api/me", headers=jar), 200)["data"]["user_id"] == sub
    time.sleep(3.5)
    rejected(call(srv, "GET", "/api/me", headers=jar))
