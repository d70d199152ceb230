"""How Tandem labels a reply: where it ran, how sure the local model was, how fast, and why."""

from __future__ import annotations

from typing import Any


def describe_reply(
    *,
    route: str | None,
    provider: str | None,
    model: str | None,
    confidence: float | None,
    tok_s: float | None,
    reason: str | None,
    status: str = "complete",
) -> str:
    """The line above an assistant reply: where it ran, how sure the local model was (local replies
    only), how fast, why."""
    where = {"cloud": "☁ cloud", "hybrid": "⇄ hybrid"}.get(route or "", "⌂ local")
    parts = [where]
    if route in ("cloud", "hybrid"):
        source = " ".join(part for part in (provider, model) if part)
    else:
        source = f"{model} ({provider})" if model and provider else (model or provider or "")
    if source:
        parts.append(source)
    if confidence is not None and route != "cloud":
        # The score is the local model's: on a cloud reply it would read as the cloud's (a draft
        # cut short scores 1.00); the reason says why the turn went to the cloud.
        parts.append(f"confidence {confidence:.2f}")
    if tok_s:
        parts.append(f"{tok_s:.1f} tok/s")
    if status != "complete":
        parts.append(status)
    if reason:
        parts.append(reason)
    return " · ".join(parts)


def describe_result(result: Any) -> str:
    """describe_reply for a finished turn (app.turns.TurnResult): the label the CLI and chat show."""
    return describe_reply(
        route=result.route,
        provider=result.provider,
        model=result.model,
        confidence=result.confidence,
        tok_s=result.tok_s,
        reason=result.reason,
        status=result.status,
    )
