"""Backends of the frontend language: an HTTP endpoint and a local server process."""
