"""Thin Ray Serve deployments. Each holds serve_app objects; none imports another:
serve_app.graph passes handles in."""
