"""Incremental detokenization and stop strings (used in-process and by the detokenizer process)."""
