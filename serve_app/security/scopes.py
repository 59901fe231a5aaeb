"""Which routes need which scope: the one table every route is checked against.

Matching is by path prefix on whole segments ("/v1/jobs" covers "/v1/jobs/abc" but not
"/v1/jobsx"), for every method. A path the table does not name needs a valid key of any
scope: unknown routes answer 401 before 404, so they reveal nothing to strangers.
"""

from __future__ import annotations

from typing import Literal

Scope = Literal["generate", "edit", "chat", "jobs", "admin"]
SCOPES: tuple[Scope, ...] = ("generate", "edit", "chat", "jobs", "admin")

# Not scopes: what a route needs when no scope is named.
PUBLIC = "public"  # no key at all
ANY_KEY = "any-key"  # a valid key, whatever its scopes

Access = Literal["generate", "edit", "chat", "jobs", "admin", "public", "any-key"]

ROUTE_ACCESS: dict[str, Access] = {
    "/v1/images/generations": "generate",
    "/v1/images/edits": "edit",
    "/v1/chat": "chat",
    "/v1/multimodal": "chat",
    "/v1/jobs": "jobs",
    "/v1/batches": "jobs",
    "/v1/admin": "admin",
    "/v1/models": ANY_KEY,
    "/v1/loras": ANY_KEY,
    "/v1/templates": ANY_KEY,
    "/v1/styles": ANY_KEY,
    "/v1/health": PUBLIC,
    # Signed URLs carry their own expiring signature.
    "/files": PUBLIC,
    # Static pages: they call the API with the key a person types in, and grant nothing.
    "/docs": PUBLIC,
    "/console": PUBLIC,
    "/openapi.json": PUBLIC,
}


def required_access(path: str) -> Access:
    """The access the longest matching prefix in ROUTE_ACCESS asks for."""
    best = ""
    for prefix in ROUTE_ACCESS:
        if (path == prefix or path.startswith(prefix + "/")) and len(prefix) > len(best):
            best = prefix
    return ROUTE_ACCESS[best] if best else ANY_KEY


def route_path(scope: dict) -> str:
    """The path inside the application: Serve keeps the route prefix in `path` and
    also puts it in `root_path`."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path
