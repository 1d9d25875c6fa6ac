"""The domain's errors: one tree, mapped to HTML pages or JSON problems in one place (app/problems.py).

    DomainError                 every refusal the domain makes; `code` is stable, `status` the HTTP answer
    ├── ValidationError         the input is malformed or out of range (422)
    ├── Unauthorized            no credential, or a wrong or revoked one (401)
    ├── NotFound                no such thing in this program (404)
    ├── Conflict                the state forbids it (409)
    │   ├── AlreadyEnrolled     that email or phone already has a card
    │   ├── AlreadyVoided       a purchase can be voided once
    │   └── PointsAlreadySpent  a void would take the balance below zero
    ├── IdempotencyConflict     the same Idempotency-Key came with a different request (422)
    ├── RateLimited             too many attempts; `retry_after` says when to try again (429)
    ├── Forbidden               signed in, but this is not for your role or program (403)
    └── CardRefused             a scanned code is not a valid card of this program (422)
        ├── InvalidCardCode     malformed, tampered, truncated or signed by an unknown key
        ├── WrongProgram        a valid card of another program
        └── CardRevoked         revoked, or replaced by a reissued card
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "domain_error"
    status = 400
    title = "Request refused"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ValidationError(DomainError):
    code = "validation_error"
    status = 422
    title = "Invalid input"

    def __init__(self, detail: str, field: str | None = None, **extra: Any) -> None:
        if field is not None:
            extra["field"] = field
        super().__init__(detail, **extra)
        self.field = field


class Unauthorized(DomainError):
    code = "unauthorized"
    status = 401
    title = "Unauthorized"


class NotFound(DomainError):
    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(DomainError):
    code = "conflict"
    status = 409
    title = "Conflict"


class AlreadyEnrolled(Conflict):
    code = "already_enrolled"
    title = "Already enrolled"


class AlreadyVoided(Conflict):
    code = "already_voided"
    title = "Purchase already voided"


class PointsAlreadySpent(Conflict):
    code = "points_already_spent"
    title = "Points already spent"


class RateLimited(DomainError):
    code = "rate_limited"
    status = 429
    title = "Too many requests"


class Forbidden(DomainError):
    code = "forbidden"
    status = 403
    title = "Forbidden"


class IdempotencyConflict(DomainError):
    code = "idempotency_conflict"
    status = 422
    title = "Idempotency key reused with a different request"


class CardRefused(DomainError):
    code = "card_refused"
    status = 422
    title = "Card refused"
    # A short word for the till's screen: "invalid", "wrong program", "revoked".
    reason = "refused"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, reason=self.reason, **extra)


class InvalidCardCode(CardRefused):
    code = "invalid_code"
    title = "Invalid card code"
    reason = "invalid"


class WrongProgram(CardRefused):
    code = "wrong_program"
    title = "Card of another program"
    reason = "wrong program"


class CardRevoked(CardRefused):
    code = "revoked_card"
    title = "Card revoked"
    reason = "revoked"


# Rotating ("live") codes, for programs that turn them on (app/domain/rotating_codes.py). Also CardRefused:
#     CardRefused
#     ├── ExpiredCode           a live code older than one period either side: a screenshot or a photo
#     ├── CodeAlreadyUsed       a live code that was already scanned (by another till, or scanned twice)
#     └── RotatingCodeRequired  a static code shown to a program that takes live codes only


class ExpiredCode(CardRefused):
    code = "expired_code"
    title = "Expired code"
    reason = "expired code"


class CodeAlreadyUsed(CardRefused):
    code = "code_already_used"
    title = "Code already used"
    reason = "already used"


class RotatingCodeRequired(CardRefused):
    code = "rotating_code_required"
    title = "Live code required"
    reason = "live code required"
