"""Where the Prism binary is: Beam's Go runner, run as a local process, never downloaded.

Beam's ``PrismRunner`` starts a ``prism`` binary as a subprocess (its job service on a free
port) and runs the SDK workers in this process (LOOPBACK). Without ``--prism_location`` Beam
would download a release zip; beam-rtbf always hands it a local binary instead:

    --prism_location=PATH          given: that file (a URL with a scheme is passed to Beam as is)
    otherwise, the first found of  ./.tools/bin/prism   (a checkout: scripts/test.sh builds it there)
                                   prism on $PATH       (go install with GOBIN on the PATH)
                                   ~/go/bin/prism       (go install's default GOBIN)

Missing, it is a user error naming the command that builds it at the SDK's version. With
``--job_endpoint`` the job goes to a Prism already running elsewhere and no binary is needed.
"""

from __future__ import annotations

import os
import shutil
from urllib.parse import urlparse

from apache_beam.version import __version__ as BEAM_VERSION

__all__ = ["GO_INSTALL", "find_prism", "prism_binary"]

GO_INSTALL = f"go install github.com/apache/beam/sdks/v2/go/cmd/prism@v{BEAM_VERSION}"
_CHECKOUT_BINARY = os.path.join(".tools", "bin", "prism")


def _candidates() -> list[str]:
    on_path = shutil.which("prism")
    found = [os.path.abspath(_CHECKOUT_BINARY), on_path, os.path.expanduser("~/go/bin/prism")]
    return [path for path in found if path]


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_prism() -> str | None:
    """The first Prism binary of the default places, or None."""
    return next((path for path in _candidates() if _executable(path)), None)


def prism_binary(location: str | None) -> str:
    """The binary ``PrismRunner`` starts (absolute), or ValueError in one line saying how to build it."""
    if location:
        if urlparse(location).scheme not in ("", "file"):
            return location  # gs://, https://...: Beam fetches it, as the user asked
        path = os.path.abspath(os.path.expanduser(location.removeprefix("file://")))
        if _executable(path):
            return path
        problem = "not an executable file" if os.path.exists(path) else "no such file"
        raise ValueError(f"--prism_location={location}: {problem}; build Prism with `GOBIN=DIR {GO_INSTALL}`")
    found = find_prism()
    if found is None:
        raise ValueError(
            f"no Prism binary (looked for ./{_CHECKOUT_BINARY}, prism on PATH, ~/go/bin/prism): "
            f"build it with `{GO_INSTALL}` (Go >= 1.26) or pass --prism_location=PATH"
        )
    return found
