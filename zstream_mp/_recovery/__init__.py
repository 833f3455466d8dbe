"""The recovery wing: what the publisher keeps on disk, so nothing is lost on the way out."""
