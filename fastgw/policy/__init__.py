"""Per-route request policies that run before a request is proxied (rate limits)."""
