"""Tests of gateway.search."""
