"""Adapter and server tests: the real bot server on 127.0.0.1, driven over HTTP."""
