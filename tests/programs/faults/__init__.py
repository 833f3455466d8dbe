"""A publisher under injected faults, and the fault model's parent programs."""
