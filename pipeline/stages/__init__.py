"""One module per `dvc.yaml` stage (download … select), plus the metric diff."""
