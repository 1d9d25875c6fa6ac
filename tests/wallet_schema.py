"""Google's own description of the Wallet API, as the judge of what `passes.google` produces.

The discovery document `walletobjects.v1.json` ships inside google-api-python-client (a test dependency only,
under googleapiclient/discovery_cache/documents/). `validate("LoyaltyObject", body)` walks a JSON value against
the named schema and lists every problem:

- a field the schema does not declare (Google's strict parsing refuses those; lenient parsing drops them
  silently, which is worse);
- a JSON type other than the declared one: string, integer, number, boolean, array (via `items`), object
  (via `properties`, or a map via `additionalProperties`), following `$ref` to the named schema;
- an enum value not in the declared list;
- by default, a field or enum value the document marks deprecated (`deprecated`, `enumDeprecated`): new code
  should not start using what Google is retiring. `allow_deprecated=True` turns that off, e.g. for answers.

Numbers as Google's JSON parser (proto3 JSON mapping) reads them, decided this way:

- int64 / uint64 are declared `"type": "string"` in discovery (JavaScript loses precision past 2**53), and
  the parser accepts them as decimal strings or as JSON integers; both pass here, if in range.
- int32 / uint32 are declared `"type": "integer"`; a JSON integer in range passes. The parser would also take a
  quoted number, but the declared type is integer, so a string is reported: we send what is declared.
- double is `"type": "number"`: any finite JSON number (int or float, never bool).
- byte is base64 text; it must decode.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

DOCUMENT_NAME = "walletobjects.v1.json"

_INTEGER_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_DECIMAL = re.compile(r"-?[0-9]+")


def discovery_document_path() -> Path:
    """Where the installed google-api-python-client keeps the Wallet API's discovery document.

    Found through the package's location without importing it, so none of its import-time code runs here.
    """
    spec = importlib.util.find_spec("googleapiclient")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("google-api-python-client is not installed: pip install -e '.[test]'")
    for location in spec.submodule_search_locations:
        path = Path(location) / "discovery_cache" / "documents" / DOCUMENT_NAME
        if path.is_file():
            return path
    raise RuntimeError(f"{DOCUMENT_NAME} is missing from the installed google-api-python-client")


@lru_cache(maxsize=1)
def discovery_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(discovery_document_path().read_text(encoding="utf-8"))
    return document


def walletobjects_schemas() -> dict[str, Any]:
    """The document's named schemas ("LoyaltyClass", "LoyaltyObject", "Barcode", ...)."""
    schemas: dict[str, Any] = discovery_document()["schemas"]
    return schemas


def validate(resource: str, value: Any, *, allow_deprecated: bool = False) -> list[str]:
    """Every problem of `value` as an instance of the schema named `resource`, each as "path: what is wrong"."""
    schemas = walletobjects_schemas()
    if resource not in schemas:
        raise KeyError(f"{resource!r} is not a schema of {DOCUMENT_NAME}")
    problems: list[str] = []
    _check(schemas, {"$ref": resource}, value, resource, problems, allow_deprecated)
    return problems


def assert_valid(resource: str, value: Any, *, allow_deprecated: bool = False) -> None:
    """Fail with the whole list of problems when `value` is not a valid `resource`."""
    problems = validate(resource, value, allow_deprecated=allow_deprecated)
    if problems:
        raise AssertionError(f"not a valid {resource} per {DOCUMENT_NAME}:\n  " + "\n  ".join(problems))


def _check(
    schemas: dict[str, Any],
    schema: dict[str, Any],
    value: Any,
    path: str,
    problems: list[str],
    allow_deprecated: bool,
) -> None:
    while "$ref" in schema:
        schema = schemas[schema["$ref"]]
    kind = schema.get("type")
    if kind == "any":
        return
    if kind == "object":
        _check_object(schemas, schema, value, path, problems, allow_deprecated)
    elif kind == "array":
        if not isinstance(value, list):
            problems.append(f"{path}: expected an array, got {_json_type(value)}")
            return
        for index, item in enumerate(value):
            _check(schemas, schema["items"], item, f"{path}[{index}]", problems, allow_deprecated)
    elif kind == "string":
        _check_string(schema, value, path, problems, allow_deprecated)
    elif kind == "integer":
        _check_integer(schema.get("format"), value, path, problems)
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            problems.append(f"{path}: expected a finite number, got {_json_type(value)}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{path}: expected a boolean, got {_json_type(value)}")
    else:
        problems.append(f"{path}: the schema has a type this validator does not know: {kind!r}")


def _check_object(
    schemas: dict[str, Any],
    schema: dict[str, Any],
    value: Any,
    path: str,
    problems: list[str],
    allow_deprecated: bool,
) -> None:
    if not isinstance(value, dict):
        problems.append(f"{path}: expected an object, got {_json_type(value)}")
        return
    properties: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        here = f"{path}.{key}"
        if key in properties:
            declared = properties[key]
            if declared.get("deprecated") and not allow_deprecated:
                problems.append(f"{here}: deprecated field")
            _check(schemas, declared, item, here, problems, allow_deprecated)
        elif isinstance(extra, dict):
            _check(schemas, extra, item, f"{path}[{key!r}]", problems, allow_deprecated)
        else:
            problems.append(f"{here}: unknown field (not in the {_schema_name(schema)} schema)")


def _check_string(
    schema: dict[str, Any], value: Any, path: str, problems: list[str], allow_deprecated: bool
) -> None:
    fmt = schema.get("format")
    if fmt in ("int64", "uint64"):
        _check_integer(fmt, value, path, problems, strings_too=True)
        return
    if not isinstance(value, str):
        problems.append(f"{path}: expected a string, got {_json_type(value)}")
        return
    if fmt == "byte" and not _is_base64(value):
        problems.append(f"{path}: expected base64 bytes, got {value!r}")
    enum = schema.get("enum")
    if enum is not None:
        if value not in enum:
            problems.append(f"{path}: {value!r} is not one of {enum}")
        elif not allow_deprecated:
            deprecated = schema.get("enumDeprecated") or [False] * len(enum)
            if deprecated[enum.index(value)]:
                problems.append(f"{path}: {value!r} is a deprecated enum value")


def _check_integer(fmt: str | None, value: Any, path: str, problems: list[str], *, strings_too: bool = False) -> None:
    number: int
    if isinstance(value, bool):
        problems.append(f"{path}: expected an integer ({fmt}), got a boolean")
        return
    if isinstance(value, int):
        number = value
    elif strings_too and isinstance(value, str) and _DECIMAL.fullmatch(value):
        number = int(value)
    else:
        wanted = f"an integer ({fmt}) as a JSON number or decimal string" if strings_too else f"an integer ({fmt})"
        problems.append(f"{path}: expected {wanted}, got {_json_type(value)} {value!r}")
        return
    low, high = _INTEGER_RANGES.get(fmt or "int32", _INTEGER_RANGES["int64"])
    if not low <= number <= high:
        problems.append(f"{path}: {number} is out of range for {fmt}")


def _is_base64(text: str) -> bool:
    # Google writes standard base64 and reads the URL-safe alphabet too.
    padded = text + "=" * (-len(text) % 4)
    for altchars in (None, b"-_"):
        try:
            base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        return True
    return False


def _schema_name(schema: dict[str, Any]) -> str:
    return str(schema.get("id", "inline"))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
