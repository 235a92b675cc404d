"""Edge authentication's machinery, below the policies that use it
(fastgw/policy/auth.py): verification keys (keys.py), the JWKS fetcher that
keeps them fresh (jwks.py, over fetch.py), token verification with its
per-worker cache (jwt_verify.py) and API key lookup (api_keys.py)."""
