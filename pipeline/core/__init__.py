"""The bottom layer: errors, atomic files, paths, YAML 1.2, metric directions, locks, logging."""
