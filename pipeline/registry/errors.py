"""The registry's refusals. Each message names the artifact and version, the file or rule that
decided, and what to do; the CLI prints it without a traceback and exits with status 2."""

from __future__ import annotations

from pipeline.core.errors import AtelierError


class RegistryError(AtelierError):
    """The registry refused a command; the message says why and what to do."""


class NothingToRegister(RegistryError):
    """The champion at HEAD is already the latest version (or HEAD is already registered)."""


class FilesUnavailable(RegistryError):
    """A version's files could not be read from the DVC cache or the default remote."""


class FilesMismatch(RegistryError):
    """A version's files do not hash to what `dvc.lock` recorded at the version's commit.

    Whatever the files say (a card's metrics, a model's weights) is not what was registered,
    so nothing is decided on them: no tag is written and no file is handed out.
    """
