"""Version names (`v0.1.0`, GTO's semver tags), stage names, and one registered version."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from pipeline.registry.errors import RegistryError

STAGES = ("staging", "prod")
FIRST_VERSION = (0, 1, 0)


@dataclass(frozen=True)
class Version:
    """One registered version: the tag `<artifact>@<version>` on `commit`."""

    artifact: str
    version: str
    commit: str
    created_at: datetime
    tag: str
    author: str
    message: str

    @property
    def model_md5(self) -> str | None:
        match = re.search(r"^model_md5: ([0-9a-f]{32})$", self.message, re.MULTILINE)
        return match.group(1) if match else None

    @classmethod
    def from_gto(cls, artifact: str, version) -> Version:
        """From a `gto` version of the registry's state; its latest registration is the tag."""
        registration = version.registrations[-1]
        return cls(
            artifact=artifact,
            version=version.version,
            commit=version.commit_hexsha,
            created_at=registration.created_at,
            tag=registration.tag,
            author=registration.author,
            message=registration.message,
        )

    @property
    def label(self) -> str:
        """`digits-classifier v0.1.0 (commit 1a2b3c4)`, for messages."""
        return f"{self.artifact} {self.version} (commit {self.commit[:7]})"


def parse_version(text: str) -> tuple[int, int, int]:
    """`v1.2.3` or `1.2.3` → (1, 2, 3); anything else is a `RegistryError`.

    A pre-release or build suffix (`v1.2.3-rc.1`, which `gto register` accepts) is ignored.
    """
    match = re.fullmatch(
        r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:[-+][0-9A-Za-z.+-]+)?", text.strip()
    )
    if not match:
        raise RegistryError(f"{text!r} is not a version: write it as v0.2.0 (major.minor.patch).")
    return int(match[1]), int(match[2]), int(match[3])


def format_version(parts: tuple[int, int, int]) -> str:
    return "v{}.{}.{}".format(*parts)


def next_version(latest: str | None) -> str:
    """The version a new registration gets: v0.1.0 first, then the next minor version."""
    if latest is None:
        return format_version(FIRST_VERSION)
    major, minor, _ = parse_version(latest)
    return format_version((major, minor + 1, 0))


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise RegistryError(f"Unknown stage {stage!r}: stages are {', '.join(STAGES)}.")
