"""Security: API keys and scopes, tenant quotas, request deadlines, the SSRF guard and the
safe URL fetcher."""
