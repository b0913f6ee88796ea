"""Plumbing every group may use: the user-facing error, atomic file output, process groups and devices."""
