"""What stands in front of every route: who the caller is (API keys, browser tokens), CORS, per-tenant
rate limits, and ``POST /api/uploads`` that trades a key for a browser token."""
