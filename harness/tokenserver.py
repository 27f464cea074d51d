"""A Bearer token server for the registry's `auth: token` mode, in a thread on loopback.

It checks Basic credentials on `GET /token?service=..&scope=repository:NAME:ACTIONS`, grants
what the user may have (users may pull and push everything here), and counts what it served so
tests can prove token reuse. It also answers the OAuth2 form of the same request, `POST /token`
with `grant_type=password` (username, password) or `grant_type=refresh_token`, which containerd
(the containerd image store of Docker 28/29) uses when it has credentials. Like the token
servers of OAuth2 registries, it hands out a refresh token to a `GET` with
`offline_token=true` (what `docker login` asks for), which Docker then keeps as the identity
token. `realm_query` puts a query into the realm URL and requires it on every request;
`get_allowed=False` makes it a POST-only server (405 to GET).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVICE = "harness-registry"
ISSUER = "harness-issuer"


def _key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """libtrust's key id: base32 of the first 240 bits of SHA-256(DER SPKI), in groups of 4."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


class TokenServer:
    def __init__(self, root: Path, users: dict[str, str], lifetime: int = 300,
                 realm_query: str = "", get_allowed: bool = True) -> None:
        self.root = root
        self.users = users
        self.lifetime = lifetime
        self.realm_query = realm_query
        self.get_allowed = get_allowed
        self.issued: list[tuple[str, tuple[str, ...]]] = []
        # Every request: (method, grant or "basic"/"anonymous", client_id, its URL query).
        self.requests: list[tuple[str, str, str, dict[str, list[str]]]] = []
        self.tokens: list[str] = []  # every token handed out (tests grep outputs for them)
        self.refused = 0
        self._refresh: dict[str, str] = {}  # refresh token -> user (OAuth2 access_type=offline)
        self._lock = threading.Lock()
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._kid = _key_id(self._key.public_key())
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token" + (
            f"?{realm_query}" if realm_query else "")
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> TokenServer:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "token-cert.pem").write_bytes(self._certificate())
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def registry_settings(self) -> dict[str, str]:
        return {"realm": self.realm, "service": SERVICE, "issuer": ISSUER,
                "rootcertbundle": str(self.root / "token-cert.pem")}

    def _certificate(self) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "harness-token-signer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=3650))
                .sign(self._key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM)

    def token(self, user: str, scopes: list[str]) -> str:
        now = int(time.time())
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        claims = {"iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + self.lifetime,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self._kid})

    def _authenticate(self, header: str | None) -> str | None:
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user if self.users.get(user) == password else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                user = server._authenticate(self.headers.get("Authorization"))
                kind = "basic" if self.headers.get("Authorization") else "anonymous"
                if not self._note("GET", kind, (query.get("client_id") or [""])[0], query):
                    return
                if not server.get_allowed:
                    self._answer(405, {"error": "use POST"})
                    return
                if user is None and self.headers.get("Authorization"):
                    with server._lock:
                        server.refused += 1
                    self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                    return
                scopes = query.get("scope", []) if user else []
                token = server.token(user or "", scopes)
                body: dict[str, Any] = {
                    "token": token, "access_token": token, "expires_in": server.lifetime,
                    "issued_at": datetime.datetime.now(datetime.UTC).isoformat()}
                with server._lock:
                    server.issued.append((user or "", tuple(scopes)))
                    server.tokens.append(token)
                    if user and query.get("offline_token") == ["true"]:
                        body["refresh_token"] = uuid.uuid4().hex
                        server._refresh[body["refresh_token"]] = user
                self._answer(200, body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode(errors="replace"))

                def field(name: str) -> str:
                    return (form.get(name) or [""])[0]

                grant = field("grant_type")
                if not self._note("POST", grant, field("client_id"),
                                  parse_qs(urlsplit(self.path).query)):
                    return
                if grant == "password":
                    user: str | None = field("username")
                    if server.users.get(user or "") != field("password"):
                        user = None
                elif grant == "refresh_token":
                    with server._lock:
                        user = server._refresh.get(field("refresh_token"))
                else:
                    self._answer(400, {"error": "unsupported_grant_type"})
                    return
                if user is None:
                    with server._lock:
                        server.refused += 1
                    self._answer(401, {"error": "invalid_grant"})
                    return
                scopes = [scope for value in form.get("scope", []) for scope in value.split()]
                token = server.token(user, scopes)
                body: dict[str, Any] = {
                    "access_token": token, "scope": " ".join(scopes),
                    "expires_in": server.lifetime,
                    "issued_at": datetime.datetime.now(datetime.UTC).isoformat()}
                with server._lock:
                    server.issued.append((user, tuple(scopes)))
                    server.tokens.append(token)
                    if field("access_type") == "offline":
                        body["refresh_token"] = uuid.uuid4().hex
                        server._refresh[body["refresh_token"]] = user
                self._answer(200, body)

            def _note(self, method: str, grant: str, client: str,
                      query: dict[str, list[str]]) -> bool:
                """Record the request; False (and 400 sent) without the realm's own query."""
                with server._lock:
                    server.requests.append((method, grant, client, query))
                wanted = parse_qs(server.realm_query)
                if any(query.get(name) != value for name, value in wanted.items()):
                    self._answer(400, {"error": "invalid_request", "details": "no tenant"})
                    return False
                return True

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
