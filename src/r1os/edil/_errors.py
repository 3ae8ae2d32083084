"""The one error type of EDIL: every refusal carries a machine word (`cause`) and the HTTP status."""

from __future__ import annotations

from r1os.errors import R1osError


class EdilError(R1osError):
    """A federated-learning job, data set, model or update cannot be used as given."""

    cause = "edil"
    status = 400
