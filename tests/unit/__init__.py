"""Unit tests, one file per core module: fast, isolated, no server and no network."""
