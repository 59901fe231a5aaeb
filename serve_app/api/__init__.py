"""HTTP only: routers per feature, the middleware, the error envelope and the OpenAPI
document. What a request means lives in serve_app.service."""
