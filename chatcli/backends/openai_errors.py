"""What went wrong talking to an OpenAI-compatible server, in one line that names the server and the fix."""

from __future__ import annotations

import openai


def describe(e: Exception, where: str, connect_timeout: float, read_timeout: float, after_retries: int = 0) -> str:
    """One line for an SDK error, a malformed event (ValueError) or anything else, about the server at WHERE."""
    if isinstance(e, openai.APITimeoutError):
        cause = e.__cause__ or e.__context__
        if "Connect" in type(cause).__name__ or "Pool" in type(cause).__name__:
            return f"{where}: no connection within {connect_timeout:g}s (connect timeout); is the server up?"
        return (f"{where}: the server sent nothing for {read_timeout:g}s (read timeout); "
                f"raise read_timeout in [backends.NAME] if the model is slow")
    if isinstance(e, openai.APIConnectionError):
        cause = e.__cause__ or e.__context__
        detail = f" ({cause})" if cause and str(cause) else ""
        return f"cannot reach {where}{detail}; is the server running? Check --base-url or CHATCLI_OPENAI_BASE_URL"
    if isinstance(e, openai.APIStatusError):
        body = e.body
        server = body.get("message") if isinstance(body, dict) and body.get("message") else None
        if server is None:
            server = body if isinstance(body, str) else (e.response.text[:300] if e.response is not None else str(e))
        msg = f"{where} answered HTTP {e.status_code}: {server}"
        if e.status_code in (401, 403):
            msg += "; check --api-key or OPENAI_API_KEY"
        elif e.status_code == 404:
            msg += "; check --model and that the base URL ends in /v1"
        if after_retries:
            msg += f" (gave up after {after_retries} retries)"
        return msg
    if isinstance(e, openai.APIError):  # an error event inside the stream
        return f"{where} reported an error mid-stream: {e.message}"
    if isinstance(e, ValueError):  # the SDK's json.loads of a data: line
        return f"{where} sent malformed server-sent events ({e}); is base_url an OpenAI-compatible /v1 endpoint?"
    return f"{where}: {type(e).__name__}: {e}"
