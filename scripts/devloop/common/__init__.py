"""Shared helpers every subsystem imports, and that import nothing else of devloop: errors and
exit codes, logging, local ports, statistics."""
