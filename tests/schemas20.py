"""Twenty JSON Schemas for the structured-output tests: nested objects, arrays, enums, numbers with ranges, required
and optional fields, strings with patterns, $ref, anyOf, const, prefixItems.

Every string has a maxLength or a bounded pattern, every array a maxItems, every number a multipleOf (a number's
fraction is as unbounded as a string: SmolLM2 at temperature 1 once wrote 300 digits of a probability; powers of two,
since jsonschema checks multipleOf in floating point and finds 0.47 no multiple of 0.01), every object
additionalProperties false:
a random model (or a small one at temperature 1) then always reaches the end of the document in a few hundred
tokens. Without those bounds the mask still keeps the JSON valid, but a random model writes one endless string (its
closing quote is one token among hundreds) and only max_tokens stops it.
"""

from __future__ import annotations


def obj(properties: dict, required: list[str] | None = None) -> dict:
    """A closed object: these properties only, REQUIRED (all, when None) among them."""
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required,
            "additionalProperties": False}


def text(n: int = 12, **more) -> dict:
    return {"type": "string", "maxLength": n, **more}


def integer(lo: int, hi: int) -> dict:
    return {"type": "integer", "minimum": lo, "maximum": hi}


SCHEMAS: dict[str, dict] = {
    "person": obj({"name": text(16), "age": integer(0, 120)}),
    "color": obj({"color": {"enum": ["red", "green", "blue"]}}),
    "address": obj({"name": text(), "address": obj({"city": text(), "zip": {"type": "string", "pattern": "^[0-9]{5}$"}})}),
    "scores": obj({"scores": {"type": "array", "items": integer(0, 100), "minItems": 1, "maxItems": 4}}),
    "optional": obj({"title": text(), "done": {"type": "boolean"}, "note": text(8)}, required=["title"]),
    "temperature": obj({"celsius": {"type": "number", "minimum": -50, "maximum": 50, "multipleOf": 0.5}}),
    "probability": obj({"p": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "multipleOf": 0.125}}),
    "code": obj({"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"}}),
    "order": obj({"lines": {"type": "array", "maxItems": 3,
                            "items": obj({"sku": {"type": "string", "pattern": "^[a-z]{2,6}$"}, "qty": integer(1, 9)})}}),
    "nullable": obj({"ok": {"type": "boolean"}, "note": {"type": ["string", "null"], "maxLength": 10}}),
    "const": obj({"version": {"const": 2}, "kind": {"const": "report"}, "body": text(10)}),
    "levels": obj({"level": {"enum": [1, 2, 3]}, "mode": {"enum": ["fast", "slow", None]}}),
    "deep": obj({"a": obj({"b": obj({"c": integer(0, 9), "d": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2}})})}),
    "lengths": obj({"word": text(8, minLength=3), "initial": {"type": "string", "minLength": 1, "maxLength": 1}}),
    "any_of": obj({"value": {"anyOf": [integer(0, 9), text(5)]}}),
    "date": obj({"date": {"type": "string",
                          "pattern": "^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"}}),
    "tags": obj({"tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3}}, required=[]),
    "refs": {"$defs": {"point": obj({"x": integer(-9, 9), "y": integer(-9, 9)})},
             **obj({"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}})},
    "rgb": obj({"rgb": {"type": "array", "prefixItems": [integer(0, 255)] * 3, "items": False, "minItems": 3}}),
    "account": obj({"id": integer(1, 99999), "email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.(com|org)$"},
                    "roles": {"type": "array", "items": {"enum": ["admin", "user"]}, "maxItems": 2},
                    "active": {"type": "boolean"}}, required=["id", "email"]),
}
assert len(SCHEMAS) == 20
