"""Tests of gateway.calaim and the CalAIM data under profiles/."""
