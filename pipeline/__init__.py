"""Atelier: stage logic for a reproducible Keras training pipeline.

Modules here are plain functions with typed parameters. They never import Prefect and never read
`params.yaml` or environment variables inside stage logic: `pipeline.__main__` parses the params
once and passes typed objects and paths in.
"""

__version__ = "0.1.0"
