"""Unit tests of the recovery wing (`zstream_mp/_recovery/`), one file per module."""
