"""Reliability and security battery cases written once and run on the fakes and real servers.

Each module holds mixin classes of tests that take a backend fixture; ``tests/unit`` subclasses
them with the in-memory fakes, ``tests/integration`` with the real adapters.
"""
