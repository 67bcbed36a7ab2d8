"""otpfast.net: asyncio glue around the sans-IO protocol (TLS listeners, clients, the
group-commit verifier). Submodules: server (serve_combined), keyserver (serve_keyserver),
distribution (serve_distribution), client (connect), tls, verifier (AsyncVerifier)."""
