"""The OpenAPI 3.1 description of /api/v1, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

_MONEY = {"type": "string", "pattern": r"^\d+(\.\d+)?$", "examples": ["12.50"]}
_CODES = ["invalid_json", "validation_error", "unauthorized", "not_found", "invalid_code", "wrong_program",
          "revoked_card", "already_enrolled", "already_voided", "points_already_spent", "idempotency_conflict",
          "payload_too_large", "method_not_allowed", "expired_code", "code_already_used", "rotating_code_required"]
# What a till sends as `code`: the QR's text exactly as read.
_SCANNED_CODE = {
    "type": "string",
    "description": "The QR's text exactly as read: the 120-character signed card code, or for a program with "
                   "rotating codes the live code `<signed card code>.<slot>.<6-digit TOTP>` (docs/card-code.md, "
                   "\"Rotating codes\"). A live code is taken by the first till that scans it; that till may quote "
                   "and buy with it for 10 minutes, others get `code_already_used`.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": "A problem (RFC 9457)",
                 "content": {"application/problem+json": {"schema": _ref("Problem")}}}
        for s in statuses
    }


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


# What a quote and a committed purchase both say: the committed purchase is exactly its quote.
_PRICED: dict[str, Any] = {
    "amount": _MONEY,
    "lines": {"type": "array", "items": _ref("Line")},
    "discount_total": _MONEY,
    "amount_due": _MONEY,
    "points_earned": {"type": "integer"},
    "points_redeemed": {"type": "integer"},
}
_PRICED_FIELDS = list(_PRICED)

_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string", "enum": _CODES},
            "field": {"type": "string"},
            "reason": {"type": "string", "description": "For refused cards: invalid, wrong program, revoked, "
                                                        "expired code, already used, live code required."},
            "recovery_url": {"type": "string", "format": "uri"},
        },
    },
    "EnrollmentIn": {
        "type": "object",
        "required": ["name"],
        "description": "At least one of email and phone is required.",
        "properties": {
            "name": {"type": "string", "maxLength": 100},
            "email": {"type": ["string", "null"], "format": "email"},
            "phone": {"type": ["string", "null"], "examples": ["+33 6 12 34 56 78"]},
            "marketing_consent": {"type": "boolean", "default": False},
            "referral_code": {"type": ["string", "null"]},
        },
    },
    "CardSummary": {
        "type": "object",
        "required": ["serial", "display_name", "tier", "points", "offers"],
        "properties": {
            "serial": {"type": "string"},
            "display_name": {"type": "string", "examples": ["Amina K."]},
            "tier": {"type": ["string", "null"]},
            "points": {"type": "integer"},
            "offers": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Enrollment": {
        "allOf": [
            _ref("CardSummary"),
            {
                "type": "object",
                "required": ["code", "card_url", "apple_pass_url", "google_save_url"],
                "properties": {
                    "code": {"type": "string", "description": "The signed card code (docs/card-code.md)."},
                    "card_url": {"type": "string", "format": "uri"},
                    "apple_pass_url": {"type": ["string", "null"], "format": "uri",
                                       "description": "The card as an Apple Wallet pass (.pkpass), always current; "
                                                      "null when the program uses rotating codes, which Apple "
                                                      "Wallet cannot show."},
                    "google_save_url": {"type": "string", "format": "uri",
                                        "description": "Redirects to Google's save page for the card."},
                },
            },
        ]
    },
    "ScanIn": {"type": "object", "required": ["code"], "properties": {"code": _SCANNED_CODE}},
    "PurchaseIn": {
        "type": "object",
        "required": ["code", "amount"],
        "properties": {
            "code": _SCANNED_CODE,
            "amount": {**_MONEY, "description": "Basket amount in the program currency, > 0, ≤ 10^9 minor units."},
            "coupon_codes": {"type": "array", "items": {"type": "string"}, "default": []},
            "redeem_points": {"type": "integer", "minimum": 0, "default": 0},
        },
    },
    "Line": {
        "type": "object",
        "required": ["kind", "label", "amount"],
        "properties": {"kind": {"type": "string"}, "label": {"type": "string"}, "amount": _MONEY},
    },
    "Quote": {
        "type": "object",
        "required": _PRICED_FIELDS,
        "properties": {
            **_PRICED,
            "points_after": {"type": "integer"},
            "tier_after": {"type": ["string", "null"]},
            "card": _ref("CardSummary"),
        },
    },
    "Purchase": {
        "type": "object",
        "required": ["id", *_PRICED_FIELDS, "points", "tier"],
        "properties": {
            "id": {"type": "integer"},
            **_PRICED,
            "points": {"type": "integer", "description": "The balance right after this purchase."},
            "tier": {"type": ["string", "null"]},
        },
    },
    "Void": {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "status": {"const": "voided"}, "points": {"type": "integer"},
                       "tier": {"type": ["string", "null"]}},
    },
    "CardDetail": {
        "allOf": [
            _ref("CardSummary"),
            {
                "type": "object",
                "properties": {
                    "status": {"type": "string", "enum": ["active", "revoked"]},
                    "lifetime_spend": _MONEY,
                    "ledger": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "integer"},
                        "kind": {"type": "string", "enum": ["earn", "bonus", "redeem", "void", "adjust"]},
                        "points": {"type": "integer"},
                        "purchase_id": {"type": ["integer", "null"]},
                        "note": {"type": "string"},
                        "created_at": {"type": "string", "format": "date-time"},
                    }}},
                },
            },
        ]
    },
    "EnrollmentStats": {
        "type": "object",
        "properties": {
            "period": {"type": "string", "enum": ["day", "week", "month"]},
            "total": {"type": "integer"},
            "series": {"type": "array", "items": {"type": "object", "properties": {
                "start": {"type": "string", "format": "date"},
                "count": {"type": "integer"},
                "by_channel": {"type": "object", "additionalProperties": {"type": "integer"}},
                "by_location": {"type": "object", "additionalProperties": {"type": "integer"}},
            }}},
        },
    },
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Loyalty card issuer API",
            "version": "1",
            "description": "For tills and point-of-sale software. Money is a decimal string in the program "
                           "currency. Errors are RFC 9457 problem objects with a stable `code`.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"apiKey": []}],
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                           "description": "An API key from `flask api-keys create`."}},
            "schemas": _SCHEMAS,
        },
        "paths": {
            "/enrollments": {"post": {
                "summary": "Enroll a customer and issue their card",
                "requestBody": _body("EnrollmentIn"),
                "responses": {"201": _json(_ref("Enrollment"), "The new card"),
                              **_problems(400, 401, 409, 422)},
            }},
            "/scans": {"post": {
                "summary": "Verify a scanned card code",
                "requestBody": _body("ScanIn"),
                "responses": {"200": _json(_ref("CardSummary"), "The card"), **_problems(400, 401, 422)},
            }},
            "/purchases/quote": {"post": {
                "summary": "Price a purchase without committing it",
                "requestBody": _body("PurchaseIn"),
                "responses": {"200": _json(_ref("Quote"), "The quote"), **_problems(400, 401, 422)},
            }},
            "/purchases": {"post": {
                "summary": "Commit a purchase (exactly its quote), once per Idempotency-Key",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": True,
                                "schema": {"type": "string", "maxLength": 255}}],
                "requestBody": _body("PurchaseIn"),
                "responses": {"201": _json(_ref("Purchase"), "Committed, or the replay of the first commit"),
                              **_problems(400, 401, 422)},
            }},
            "/purchases/{id}/void": {"post": {
                "summary": "Reverse a purchase's points and spend",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": _json(_ref("Void"), "Voided"), **_problems(401, 404, 409)},
            }},
            "/cards/{serial}": {"get": {
                "summary": "A card's balance, tier and ledger",
                "parameters": [{"name": "serial", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json(_ref("CardDetail"), "The card"), **_problems(401, 404)},
            }},
            "/stats/enrollments": {"get": {
                "summary": "Enrollment counts per period, by channel and location",
                "parameters": [{"name": "period", "in": "query",
                                "schema": {"type": "string", "enum": ["day", "week", "month"]}}],
                "responses": {"200": _json(_ref("EnrollmentStats"), "Counts"), **_problems(401, 422)},
            }},
        },
    }
