"""Tiny models for the tests and the bench; never imported by the library."""
