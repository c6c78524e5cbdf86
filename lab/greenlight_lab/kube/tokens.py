"""Who a request to a lab cluster is, and ServiceAccount tokens for acting as someone else.

Authentication, as the lab API server does it (``authenticate``):
- no ``Authorization`` header, or ``Bearer lab`` (the token the lab's kubeconfig carries):
  the lab's admin, ``system:admin`` in ``system:masters``: everything is allowed, as before
  the lab learned RBAC;
- ``Bearer <token>`` issued by this cluster's TokenRequest (``serviceaccounts/<name>/token``)
  for a ServiceAccount that still exists (same uid), not expired and for the API server's
  audience: ``system:serviceaccount:<ns>:<name>``;
- anything else (a garbage token, another cluster's token, an expired one, one whose
  ServiceAccount was deleted, Basic auth): None, which the API answers 401 Unauthorized.

Tokens are JWTs (HS256 with a key per cluster, made at start and never written anywhere) with
the claims of a real bound ServiceAccount token (iss, sub, aud, exp, iat, nbf,
``kubernetes.io.serviceaccount``).

For tests that run a command as a ServiceAccount::

    from greenlight_lab.kube.tokens import service_account_kubeconfig
    config = service_account_kubeconfig({"lab-primary": url}, "apps", "deployer")
    path.write_text(json.dumps(config))     # KUBECONFIG=path: every call acts as the SA

It asks each cluster (as the lab admin) for a token over HTTP, so the ServiceAccount must exist
there first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from greenlight_lab.kube.rbac import ADMIN, UserInfo, service_account_user

Obj = dict[str, Any]
ADMIN_TOKEN = "lab"  # what the lab's kubeconfig sends (supervisor._kubeconfig)
AUDIENCE = "https://kubernetes.default.svc.cluster.local"
ISSUER = AUDIENCE
DEFAULT_EXPIRATION_S = 3600
MIN_EXPIRATION_S = 600
MAX_EXPIRATION_S = 2**32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Issued:
    token: str
    expires_at: float


class TokenIssuer:
    """Signs and checks the ServiceAccount tokens of one cluster."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self._key = secrets.token_bytes(32)

    def issue(
        self,
        namespace: str,
        name: str,
        uid: str,
        expiration_s: int = DEFAULT_EXPIRATION_S,
        audiences: tuple[str, ...] = (AUDIENCE,),
        now: float | None = None,
    ) -> Issued:
        at = int(time.time() if now is None else now)
        claims: Obj = {
            "aud": list(audiences),
            "exp": at + expiration_s,
            "iat": at,
            "nbf": at,
            "iss": ISSUER,
            "jti": secrets.token_hex(8),
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        }
        header = _b64(json.dumps({"alg": "HS256", "kid": self.cluster, "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = _b64(hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return Issued(f"{header}.{payload}.{signature}", float(claims["exp"]))

    def claims(self, token: str, now: float | None = None) -> Obj | None:
        """The claims of a token this issuer signed, valid now and for the API server; else None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        header, payload, signature = parts
        expected = _b64(hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, signature):
            return None
        try:
            claims = json.loads(_unb64(payload))
        except ValueError:
            return None
        at = time.time() if now is None else now
        if not isinstance(claims, dict) or not claims.get("nbf", 0) <= at < claims.get("exp", 0):
            return None
        if AUDIENCE not in (claims.get("aud") or []):
            return None
        return claims

    def authenticate(
        self, authorization: str | None, service_account_uid: Callable[[str, str], str | None]
    ) -> UserInfo | None:
        """The identity an ``Authorization`` header proves (see module docstring), or None.

        ``service_account_uid(namespace, name)`` answers the stored ServiceAccount's uid, or None.
        """
        if authorization is None or not authorization.strip():
            return ADMIN
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        if token == ADMIN_TOKEN:
            return ADMIN
        claims = self.claims(token)
        if claims is None:
            return None
        bound = claims.get("kubernetes.io") or {}
        namespace = bound.get("namespace") or ""
        sa = bound.get("serviceaccount") or {}
        name, uid = sa.get("name") or "", sa.get("uid") or ""
        if not namespace or not name or service_account_uid(namespace, name) != uid:
            return None
        return service_account_user(namespace, name, uid)


# --- a kubeconfig for a ServiceAccount --------------------------------------------------------


def request_token(
    server: str,
    namespace: str,
    service_account: str,
    *,
    expiration_seconds: int = DEFAULT_EXPIRATION_S,
    timeout_s: float = 10.0,
) -> str:
    """A token for ``namespace/service_account`` from the lab cluster at ``server`` (asked as the
    lab admin through TokenRequest). RuntimeError naming the cluster's answer when refused."""
    url = f"{server.rstrip('/')}/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": expiration_seconds},
    }
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("message", "")
        except ValueError:
            message = ""
        raise RuntimeError(
            f"TokenRequest for {namespace}/{service_account} at {server} failed: {e.code} {message}"
        ) from None
    return str(answer["status"]["token"])


def service_account_kubeconfig(
    servers: str | Mapping[str, str],
    namespace: str,
    service_account: str,
    *,
    expiration_seconds: int = DEFAULT_EXPIRATION_S,
) -> Obj:
    """A kubeconfig (as a dict; write it as JSON or YAML) whose every context acts as the
    ServiceAccount: ``servers`` is one lab cluster URL (context ``lab-primary``) or
    ``{context: url}``. Each context's namespace is the ServiceAccount's; the current context
    is the first."""
    by_context = {"lab-primary": servers} if isinstance(servers, str) else dict(servers)
    if not by_context:
        raise ValueError("no lab cluster given")
    user = f"system:serviceaccount:{namespace}:{service_account}"
    clusters, contexts, users = [], [], []
    for context, server in by_context.items():
        token = request_token(server, namespace, service_account, expiration_seconds=expiration_seconds)
        clusters.append({"name": context, "cluster": {"server": server}})
        users.append({"name": f"{user}@{context}", "user": {"token": token}})
        contexts.append(
            {
                "name": context,
                "context": {"cluster": context, "user": f"{user}@{context}", "namespace": namespace},
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "users": users,
        "contexts": contexts,
        "current-context": next(iter(by_context)),
    }
