"""Carts: anonymous (a token) and signed-in (one open cart per user), merged at sign-in."""
