"""Security helpers that the Gateway uses: the SSRF guard and the safe URL fetcher."""
