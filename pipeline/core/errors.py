"""User-facing errors: one paragraph that names the thing, what was expected and what to do."""


class AtelierError(Exception):
    """A mistake in the input (params, data, names) that the user can fix.

    The stage CLI prints its message without a traceback and exits with `exit_code` (2).
    """

    exit_code = 2


class RegressionFound(AtelierError):
    """`diff --fail-on-regression`: a headline metric got worse beyond its tolerance."""

    exit_code = 1


class ParamsError(AtelierError):
    """`params.yaml` has an unknown key, a wrong type or an out-of-range value."""


class DataError(AtelierError):
    """A dataset could not be fetched, verified or read."""
