"""Credentials: API keys, OIDC bearer tokens, and the `auth.*` settings.

A leaf package: it imports nothing from the app. Who a request is, and whose data it may touch,
is decided by `services/identity.py` with these pieces.
"""
