"""Subcommands of ``leaf``; every public module here is discovered by :mod:`leaf.cli`."""
