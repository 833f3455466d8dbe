"""Fork, exit and signal programs and the worker bodies their children run."""
