"""Operator tools: the `teamctl` command, the contract client it talks through, and `teamctl demo`.

Installed with the `teamctl` extra; no service imports it.
"""
