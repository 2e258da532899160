"""The one error type a request can end with, shared by the gateway and the model
replicas (it crosses Serve's handle calls, so it lives in an importable module)."""

from __future__ import annotations


class APIError(Exception):
    """An HTTP error in OpenAI's shape: status, message, the field at fault, and a type."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(status, message, param, kind)  # args: picklable across processes
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def __str__(self) -> str:
        return self.message
