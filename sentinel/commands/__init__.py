"""Subcommands of the ``sentinel`` CLI, one module each."""
