"""Reusable test servers and helpers (real peers on loopback, never mocks of the code under test)."""
