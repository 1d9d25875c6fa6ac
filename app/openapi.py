"""The OpenAPI 3.1 description of /api/v1, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

_MONEY = {"type": "string", "pattern": r"^\d+(\.\d+)?$", "examples": ["12.50"]}
_CODES = ["invalid_json", "validation_error", "unauthorized", "not_found", "invalid_code", "wrong_program",
          "revoked_card", "already_enrolled", "already_voided", "points_already_spent", "idempotency_conflict",
          "payload_too_large", "method_not_allowed", "expired_code", "code_already_used", "rotating_code_required",
          "coupon_refused", "offer_refused", "conflict"]
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

# What the loyalty mechanics add to a quote and a committed purchase (app/domain/mechanics.py prices them).
_MECHANICS: dict[str, Any] = {
    "coupon_refusals": {"type": "array", "items": _ref("CouponRefusal"),
                        "description": "Coupons the rules refused, each with its reason; they take nothing off. "
                                       "Always empty on a committed purchase (it is refused instead)."},
    "notices": {"type": "array", "items": _ref("Notice"),
                "description": "What else the till should say: an offer that does not apply, no referral bonus "
                               "for a self-referral."},
    "reward_points": {"type": "integer", "description": "Points the catalogue reward chosen costs."},
    "stamps_added": {"type": "integer"},
    "vouchers_issued": {"type": "integer", "description": "Stamp-card vouchers this purchase completes."},
    "vouchers_used": {"type": "integer"},
    "cashback_earned": _MONEY,
    "cashback_redeemed": _MONEY,
    "bonuses": {"type": "array", "items": _ref("Bonus"),
                "description": "Bonuses this purchase pays the member (a referred member's first purchase). "
                               "The referrer's bonus is paid too but not shown: the till is not told who "
                               "referred the member."},
}
_MECHANICS_FIELDS = list(_MECHANICS)
_OFFER = {
    "type": "object",
    "required": ["id", "title", "discount"],
    "properties": {"id": {"type": "integer", "description": "What a quote's `offer_ids` takes."},
                   "title": {"type": "string"}, "detail": {"type": "string"},
                   "discount": {"type": "string", "examples": ["10%", "2.00"]}, "min_basket": _MONEY,
                   "ends_at": {"type": ["string", "null"], "format": "date-time"}},
}
_REWARD = {
    "type": "object",
    "required": ["id", "name", "points_cost"],
    "properties": {"id": {"type": "integer", "description": "What a quote's `reward_id` takes."},
                   "name": {"type": "string"}, "points_cost": {"type": "integer"}, "value": _MONEY},
}

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
            "refusals": {"type": "array", "items": {"type": "object"},
                         "description": "For `coupon_refused`: each refused coupon as in a quote's "
                                        "`coupon_refusals`. For `offer_refused`: each offer's `reason` "
                                        "(offer_expired, offer_not_yet_valid, offer_below_minimum, "
                                        "offer_unknown, offer_repeated) and `message`."},
        },
    },
    "CouponRefusal": {
        "type": "object",
        "required": ["code", "reason", "message"],
        "properties": {
            "code": {"type": "string", "description": "The code as compared: upper case, no spaces."},
            "reason": {"type": "string", "enum": ["unknown", "expired", "not_yet_valid", "below_minimum",
                                                  "already_used", "not_for_member", "not_stackable"]},
            "message": {"type": "string"},
            "shortfall": {**_MONEY, "description": "How far the basket is below the minimum (below_minimum)."},
        },
    },
    "Notice": {"type": "object", "required": ["code", "message"],
               "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
    "Bonus": {
        "type": "object",
        "required": ["kind", "label", "unit", "amount"],
        "properties": {
            "kind": {"type": "string", "enum": ["referral_referee"]},
            "label": {"type": "string"},
            "unit": {"type": "string", "enum": ["points", "stamps", "cashback"]},
            "amount": {"type": ["integer", "string"],
                       "description": "Points or stamps as an integer; cashback as a decimal string."},
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
            "offers": {"type": "array", "items": _OFFER,
                       "description": "After a scan: the offers the member may choose now. Empty elsewhere."},
            "stamps": {"type": "integer", "description": "Stamp programs (or a card holding a voucher)."},
            "vouchers": {"type": "integer", "description": "Stamp-card vouchers held; `use_voucher` spends one."},
            "cashback": {**_MONEY, "description": "Cashback programs (or a card holding some)."},
            "rewards": {"type": "array", "items": _REWARD,
                        "description": "After a scan, when the program has a rewards catalogue."},
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
            "coupon_codes": {"type": "array", "items": {"type": "string", "maxLength": 64}, "maxItems": 20,
                             "default": [],
                             "description": "Applied in the order given, after the tier discount, offers and "
                                            "second-visit discount. Compared upper case without spaces. A quote "
                                            "reports a refused code in `coupon_refusals`; a purchase naming one "
                                            "is refused with `coupon_refused` and commits nothing."},
            "redeem_points": {"type": "integer", "minimum": 0, "default": 0,
                              "description": "More than the card holds (after a reward) or the program's cap "
                                             "allows is refused (validation_error), on a quote too."},
            "offer_ids": {"type": "array", "items": {"type": "integer", "minimum": 1}, "maxItems": 20,
                          "default": [],
                          "description": "Offers the member chose, from the scan's `offers`. A quote reports one "
                                         "that does not apply in `notices`; a purchase naming one is refused "
                                         "with `offer_refused`."},
            "reward_id": {"type": ["integer", "null"], "minimum": 1, "default": None,
                          "description": "A catalogue reward, paid with points and taken off the basket first. "
                                         "Unknown, or more points than the card holds: validation_error."},
            "redeem_cashback": {**_MONEY, "default": "0",
                                "description": "Cashback to spend, like points: at most the card's cashback and "
                                               "the cap left after points; more is refused (validation_error)."},
            "use_voucher": {"type": "boolean", "default": False,
                            "description": "Spend one stamp-card voucher; refused when the card holds none."},
        },
    },
    "Line": {
        "type": "object",
        "required": ["kind", "label", "amount"],
        "properties": {"kind": {"type": "string"}, "label": {"type": "string"}, "amount": _MONEY},
    },
    "Quote": {
        "type": "object",
        "required": [*_PRICED_FIELDS, *_MECHANICS_FIELDS, "stamps_after", "vouchers_after", "cashback_after"],
        "properties": {
            **_PRICED,
            "points_after": {"type": "integer"},
            "tier_after": {"type": ["string", "null"]},
            **_MECHANICS,
            "stamps_after": {"type": "integer"},
            "vouchers_after": {"type": "integer"},
            "cashback_after": _MONEY,
            "card": _ref("CardSummary"),
        },
    },
    "Purchase": {
        "type": "object",
        "required": ["id", *_PRICED_FIELDS, "points", "tier", *_MECHANICS_FIELDS, "stamps", "vouchers",
                     "cashback"],
        "properties": {
            "id": {"type": "integer"},
            **_PRICED,
            "points": {"type": "integer", "description": "The balance right after this purchase."},
            "tier": {"type": ["string", "null"]},
            **_MECHANICS,
            "stamps": {"type": "integer", "description": "Stamps on the card right after this purchase."},
            "vouchers": {"type": "integer"},
            "cashback": {**_MONEY, "description": "The cashback balance right after this purchase."},
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
                    "stamps": {"type": "integer"},
                    "vouchers": {"type": "integer"},
                    "cashback": _MONEY,
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
    "StatsSummary": {
        "type": "object",
        "description": "Each figure is defined in docs/analytics.md. Shares are fractions (0.25 = 25 %), null "
                       "when there is nothing to divide by; money is a decimal string in `currency`.",
        "required": ["from", "to", "currency", "purchases", "revenue", "buyers", "purchase_frequency",
                     "repeat_purchase_rate", "churn", "points", "segments", "tiers"],
        "properties": {
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            "currency": {"type": "string"},
            "purchases": {"type": "integer"},
            "revenue": {"type": "string"},
            "discounts": {"type": "string"},
            "average_check": {"type": "object", "properties": {
                "before_discounts": {"type": ["string", "null"]},
                "after_discounts": {"type": ["string", "null"]},
            }},
            "buyers": {"type": "integer"},
            "new_buyers": {"type": "integer"},
            "returning_buyers": {"type": "integer"},
            "purchase_frequency": {"type": ["number", "null"]},
            "repeat_purchase_rate": {"type": ["number", "null"]},
            "churn": {"type": "object", "properties": {
                "days": {"type": "integer"}, "churned": {"type": "integer"}, "rate": {"type": ["number", "null"]},
            }},
            "points": {"type": "object", "properties": {
                "issued": {"type": "integer"}, "redeemed": {"type": "integer"}, "removed": {"type": "integer"},
                "redemption_rate": {"type": ["number", "null"]}, "outstanding": {"type": "integer"},
                "liability": {"type": "string"},
            }},
            "enrollments": {"type": "integer"},
            "members": {"type": "integer"},
            "tiers": {"type": "object", "additionalProperties": {"type": "integer"}},
            "segments": {"type": "object", "additionalProperties": {"type": "integer"}},
            "referrals": {"type": "object", "additionalProperties": {"type": "integer"}},
            "coupons": {"type": "array", "items": {"type": "object", "properties": {
                "code": {"type": "string"}, "uses": {"type": "integer"}, "discount": {"type": "string"},
                "revenue": {"type": "string"},
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
                "description": "Every line in the order applied (reward, voucher, tier, offers, second visit, "
                               "coupons, points, cashback), what the purchase earns, and every coupon or offer "
                               "the rules refuse with its reason. Writes nothing.",
                "requestBody": _body("PurchaseIn"),
                "responses": {"200": _json(_ref("Quote"), "The quote"), **_problems(400, 401, 422)},
            }},
            "/purchases": {"post": {
                "summary": "Commit a purchase (exactly its quote), once per Idempotency-Key",
                "description": "Priced again under the card's lock. A coupon or offer the rules refuse stops the "
                               "purchase (422 `coupon_refused` / `offer_refused`, nothing written): the cashier "
                               "saw the quote, and committing without the discount shown would charge the "
                               "customer more than they were told. A referred member's first purchase pays both "
                               "referral bonuses, once.",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": True,
                                "schema": {"type": "string", "maxLength": 255}}],
                "requestBody": _body("PurchaseIn"),
                "responses": {"201": _json(_ref("Purchase"), "Committed, or the replay of the first commit"),
                              **_problems(400, 401, 409, 422)},
            }},
            "/purchases/{id}/void": {"post": {
                "summary": "Undo exactly what a purchase did",
                "description": "Its points, cashback, stamps and vouchers, spend and tier, its coupon uses (the "
                               "codes may be used again), and the referral bonuses if it paid them, from both "
                               "cards; the referral then waits for the member's next first purchase. Refused "
                               "(409 `points_already_spent`) when the member or the referrer has already spent "
                               "what it would take back: void the later purchase first.",
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
            "/stats/summary": {"get": {
                "summary": "The program's key figures over a range of days",
                "description": "Sales, average check, buyers, purchase frequency, repeat purchase rate, churn, "
                               "points and liability, segments, tiers, referrals and coupons, as on the "
                               "manager's dashboard. The range is the last 90 days to today unless given.",
                "parameters": [
                    {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"}},
                    {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"}},
                ],
                "responses": {"200": _json(_ref("StatsSummary"), "Figures"), **_problems(401, 422)},
            }},
        },
    }
