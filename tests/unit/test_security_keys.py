"""Key format and hashing, the route→scope table, loopback checks and the security config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.config import AuthConfig, CorsConfig, GatewayConfig, RateLimitConfig
from serve_app.security.keys import KeyHasher, Principal, new_key, prefix_of
from serve_app.security.loopback import check_anonymous_bind, is_loopback
from serve_app.security.scopes import ANY_KEY, PUBLIC, ROUTE_ACCESS, required_access, route_path


def test_a_new_key_carries_its_public_prefix_and_hashes_with_the_pepper():
    prefix, key = new_key()
    assert key.startswith(f"sk-{prefix}-") and prefix_of(key) == prefix
    hasher = KeyHasher(b"pepper-of-sixteen-bytes")
    digest = hasher.digest(key)
    assert key not in digest and len(digest) == 64
    assert hasher.matches(key, digest)
    assert not hasher.matches(key[:-1] + ("A" if key[-1] != "A" else "B"), digest)
    # Another pepper gives another digest: a stolen table alone checks no guesses.
    assert KeyHasher(b"another-pepper-sixteen").digest(key) != digest


@pytest.mark.parametrize(
    "text", ["", "sk-", "Bearer x", "sk-SHORT-abc", "sk-abcdefghijkl-tooshort", "x" * 500]
)
def test_malformed_keys_have_no_prefix(text):
    assert prefix_of(text) is None


def test_a_short_pepper_is_refused():
    with pytest.raises(ValueError):
        KeyHasher(b"short")


def test_principal_checks_scopes_and_models():
    limited = Principal("acme", "p", frozenset({"generate"}), frozenset({"sd-tiny"}))
    assert limited.has_scope("generate") and not limited.has_scope("edit")
    assert limited.allows_model("sd-tiny") and not limited.allows_model("z-image-tiny")
    assert Principal("acme", "p", frozenset({"edit"}), None).allows_model("anything")


@pytest.mark.parametrize(
    ("path", "access"),
    [
        ("/v1/images/generations", "generate"),
        ("/v1/images/edits", "edit"),
        ("/v1/chat/completions", "chat"),
        ("/v1/jobs", "jobs"),
        ("/v1/jobs/job_123", "jobs"),
        ("/v1/jobs/job_123/cancel", "jobs"),
        ("/v1/batches", "jobs"),
        ("/v1/batches/b_1", "jobs"),
        ("/v1/admin/keys", "admin"),
        ("/v1/models", ANY_KEY),
        ("/v1/models/sd-tiny", ANY_KEY),
        ("/v1/templates", ANY_KEY),
        ("/v1/styles", ANY_KEY),
        ("/v1/health", PUBLIC),
        ("/files/abc.png", PUBLIC),
        ("/docs", PUBLIC),
        ("/openapi.json", PUBLIC),
        # Not in the table: a key is needed, so unknown routes tell strangers nothing.
        ("/v1/unknown", ANY_KEY),
        ("/v1/jobsx", ANY_KEY),
        ("/", ANY_KEY),
    ],
)
def test_every_route_maps_to_its_scope(path, access):
    assert required_access(path) == access


def test_the_table_covers_the_jobs_routes_for_every_scope_and_public_route():
    assert ROUTE_ACCESS["/v1/jobs"] == ROUTE_ACCESS["/v1/batches"] == "jobs"
    assert {"generate", "edit", "chat", "jobs", "admin"} <= set(ROUTE_ACCESS.values())


def test_route_path_strips_the_serve_route_prefix():
    assert route_path({"path": "/secure/v1/models", "root_path": "/secure"}) == "/v1/models"
    assert route_path({"path": "/v1/models", "root_path": ""}) == "/v1/models"
    assert route_path({"path": "/secure", "root_path": "/secure"}) == "/"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
        ("example.com", False),
        ("", False),
        (None, False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_anonymous_mode_refuses_a_public_bind():
    check_anonymous_bind("127.0.0.1")
    with pytest.raises(RuntimeError, match="0.0.0.0"):
        check_anonymous_bind("0.0.0.0")


def test_auth_off_must_be_said_explicitly():
    with pytest.raises(ValidationError, match="allow_anonymous_on_loopback"):
        AuthConfig(enabled=False)
    assert not AuthConfig(enabled=False, allow_anonymous_on_loopback=True).enabled
    with pytest.raises(ValidationError, match="database_url"):
        AuthConfig(database_url="mysql://x/y")


def test_cors_refuses_a_wildcard_with_credentials_and_non_origins():
    with pytest.raises(ValidationError, match="credentials"):
        CorsConfig(allow_origins=["*"], allow_credentials=True)
    with pytest.raises(ValidationError, match="not an origin"):
        CorsConfig(allow_origins=["https://app.example.com/path"])
    assert CorsConfig(allow_origins=["https://app.example.com"], allow_credentials=True)


def test_tenant_overrides_and_route_timeouts():
    limits = RateLimitConfig(
        requests_per_minute=100, max_concurrent=5, tenants={"big": {"requests_per_minute": 900}}
    )
    assert limits.limits_for("big") == (900, 5)
    assert limits.limits_for("small") == (100, 5)
    gateway = GatewayConfig(request_timeout_s=60, route_timeouts_s={"/v1/models": 5, "/v1": 30})
    assert gateway.timeout_for("/v1/models/x") == 5
    assert gateway.timeout_for("/v1/images/generations") == 30
    assert gateway.timeout_for("/files/a.png") == 60


@pytest.mark.parametrize("name", ["local.yaml", "production.yaml"])
def test_the_gateway_deadline_fires_before_the_proxy_timeout(name):
    """So that a slow request ends as a 504 in the envelope, not as the proxy's bare 408."""
    from pathlib import Path

    import yaml

    from serve_app.config import AppConfig

    serve_config = yaml.safe_load((Path(__file__).parents[2] / "configs" / name).read_text())
    gateway = AppConfig.model_validate(serve_config["applications"][0]["args"]).gateway
    longest = max([gateway.request_timeout_s, *gateway.route_timeouts_s.values()])
    assert longest < serve_config["http_options"]["request_timeout_s"]
    assert gateway.model_timeout_s < gateway.request_timeout_s
