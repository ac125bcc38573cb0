"""Type-check-only assignments of every adapter and fake to its port; mypy runs them."""
