"""Errors shared by the roles."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration file or setting is invalid; the message names the file and the key."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}: {problem}")
        self.file = file
        self.key = key
        self.problem = problem
