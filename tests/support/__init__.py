"""Helpers shared by many test files (conftest.py keeps the fixtures): processes, plugins,
servers and fakes, hostile worker runtimes."""
