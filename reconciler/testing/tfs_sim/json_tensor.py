"""REST request bodies as TFS reads them: ``util/json_tensor.cc`` (rapidjson), texts verbatim.

- :func:`parse_json` is ``ParseJson``: an empty body, a parse error (rapidjson's message and
  offset; text after the first value is ignored, ``kParseStopWhenDoneFlag``; NaN/Infinity
  allowed) or a body that is not an object is INVALID_ARGUMENT;
- :func:`request_signature_name` is ``FillSignature``;
- :func:`predict_inputs` is ``FillPredictRequestFromJson`` after the signature's inputs were
  found: ``instances`` (row format) or ``inputs`` (columnar) turned into one dense tensor per
  named input, checked against the input's dtype (``AddValueToTensor``), the instances against
  each other (``AddInstanceItem``: equal size and shape) and the nesting
  (``FillTensorProto``);
- :func:`debug_string` is ``JsonValueToDebugString``: rapidjson's PrettyWriter with single-line
  arrays, cut once 256 bytes are written;
- :func:`error_json` is ``MakeJsonFromStatus``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from reconciler.testing.tfs_sim.errors import Code, TfsError

MAX_DEBUG_BYTES = 256

# tensorflow/core/framework/types.cc DataTypeString, by DataType number.
DTYPE_STRINGS: dict[int, str] = {
    1: "float",
    2: "double",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    7: "string",
    8: "complex64",
    9: "int64",
    10: "bool",
    14: "bfloat16",
    17: "uint16",
    18: "complex128",
    19: "half",
    20: "resource",
    21: "variant",
    22: "uint32",
    23: "uint64",
}
DT_STRING = 7
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def invalid(message: str) -> TfsError:
    return TfsError(Code.INVALID_ARGUMENT, message)


# --- rapidjson's writer, for error messages -------------------------------------------------


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return ""  # rapidjson's Writer refuses to write these: the output stops here
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\b\f\n\r\t":
            out.append({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class _Limited:
    """PrettyWriter (indent 4, ``kFormatSingleLineArray``) behind ``JsonWriterWithLimit``."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit
        self.stopped = False

    def put(self, text: str) -> bool:
        if self.stopped or self.size >= self.limit:
            self.stopped = True
            return False
        self.parts.append(text)
        self.size += len(text.encode())
        return True

    def value(self, val: Any, depth: int, prefix: str) -> bool:
        if isinstance(val, dict):
            if not self.put(prefix + "{"):
                return False
            items = list(val.items())
            for i, (key, item) in enumerate(items):
                sep = ("," if i else "") + "\n" + "    " * (depth + 1)
                if not self.put(sep + _string(str(key))):
                    return False
                if not self.value(item, depth + 1, ": "):
                    return False
            return self.put(("\n" + "    " * depth if items else "") + "}")
        if isinstance(val, list):
            if not self.put(prefix + "["):
                return False
            for i, item in enumerate(val):
                if not self.value(item, depth + 1, ", " if i else ""):
                    return False
            return self.put("]")
        if val is None:
            return self.put(prefix + "null")
        if isinstance(val, str):
            return self.put(prefix + _string(val))
        text = _number(val)
        return bool(text) and self.put(prefix + text)


def debug_string(val: Any) -> str:
    """``JsonValueToDebugString``."""
    writer = _Limited(MAX_DEBUG_BYTES)
    writer.value(val, 0, "")
    return "".join(writer.parts)


def error_json(message: str) -> str:
    """``MakeJsonFromStatus``: ``{"error": MESSAGE}`` by rapidjson's PrettyWriter."""
    return "{\n    " + _string("error") + ": " + _string(message) + "\n}"


def json_type(val: Any) -> str:
    """``JsonTypeString``."""
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


# --- parsing ----------------------------------------------------------------------------------

_PARSE_ERRORS = (
    ("Expecting value", "Invalid value."),
    ("Expecting property name enclosed in double quotes", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid control character", "Invalid encoding in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid \\uXXXX escape", "Incorrect hex digit after \\u escape in string."),
)


def _parse_error_text(error: json.JSONDecodeError) -> str:
    if error.msg == "Expecting ',' delimiter":
        before = error.doc[: error.pos].rstrip()
        opener = _innermost_open(before)
        return (
            "Missing a comma or '}' after an object member."
            if opener == "{"
            else "Missing a comma or ']' after an array element."
        )
    for python, rapidjson in _PARSE_ERRORS:
        if error.msg.startswith(python):
            return rapidjson
    return "Invalid value."


def _innermost_open(text: str) -> str:
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


_LEADING_SPACE = re.compile(r"[ \t\n\r]*")


def parse_json(body: bytes) -> dict[str, Any]:
    """``ParseJson``: the request body as a JSON object."""
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    text = body.decode("utf-8", errors="replace")
    start = _LEADING_SPACE.match(text)
    offset = start.end() if start else 0
    if offset == len(text):
        raise invalid(f"JSON Parse error: The document is empty. at offset: {len(text.encode())}")
    try:
        doc, _ = json.JSONDecoder().raw_decode(text, offset)
    except json.JSONDecodeError as e:
        raise invalid(
            f"JSON Parse error: {_parse_error_text(e)} at offset: {len(text[: e.pos].encode())}"
        ) from e
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {debug_string(doc)} Is not object")
    return doc


def request_signature_name(doc: dict[str, Any]) -> str:
    """``FillSignature``: the optional ``signature_name``."""
    if "signature_name" not in doc:
        return ""
    name = doc["signature_name"]
    if not isinstance(name, str):
        raise invalid(
            f"JSON Value: {debug_string(doc)} not formatted correctly. 'signature_name' key "
            "must be a string value."
        )
    return name


# --- tensors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DenseTensor:
    """A tensor filled from JSON: its dtype, shape and values in row-major order."""

    dtype: int
    shape: tuple[int, ...]
    values: tuple[Any, ...]


def _type_error(val: Any, dtype: int) -> TfsError:
    return invalid(
        f"JSON Value: {debug_string(val)} Type: {json_type(val)} is not of expected type: "
        f"{DTYPE_STRINGS.get(dtype, str(dtype))}"
    )


def _is_int(val: Any, low: int, high: int) -> bool:
    return isinstance(val, int) and not isinstance(val, bool) and low <= val <= high


def _value(val: Any, dtype: int) -> Any:
    """``AddValueToTensor``."""
    number = isinstance(val, int | float) and not isinstance(val, bool)
    if dtype in (1, 2):
        if not number:
            raise _type_error(val, dtype)
        return float(val)
    if dtype in (3, 4, 5, 6):
        if not _is_int(val, *_INT32):
            raise _type_error(val, dtype)
        return val
    if dtype == DT_STRING:
        if not isinstance(val, str):
            raise _type_error(val, dtype)
        return val.encode()
    if dtype == 9:
        if not _is_int(val, *_INT64):
            raise _type_error(val, dtype)
        return val
    if dtype == 10:
        if not isinstance(val, bool):
            raise _type_error(val, dtype)
        return val
    if dtype == 22:
        if not _is_int(val, 0, 2**32 - 1):
            raise _type_error(val, dtype)
        return val
    if dtype == 23:
        if not _is_int(val, 0, 2**64 - 1):
            raise _type_error(val, dtype)
        return val
    raise TfsError(
        Code.UNIMPLEMENTED,
        f"Conversion of JSON Value: {debug_string(val)} to type: "
        f"{DTYPE_STRINGS.get(dtype, str(dtype))}",
    )


def _is_base64(val: Any) -> bool:
    return isinstance(val, dict) and len(val) == 1 and isinstance(val.get("b64"), str)


def _dense_shape(val: Any) -> tuple[int, ...]:
    """``GetDenseTensorShape``: sizes along the first element of each level."""
    shape: list[int] = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return tuple(shape)


def _fill(val: Any, level: int, dtype: int, shape: tuple[int, ...], out: list[Any]) -> None:
    """``FillTensorProto``."""
    rank = len(shape)
    if not isinstance(val, list):
        if level != rank:
            raise invalid(
                f"JSON Value: {debug_string(val)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {rank}"
            )
        if isinstance(val, dict):
            if dtype != DT_STRING:
                raise _type_error(val, dtype)
            if not _is_base64(val):
                raise invalid(
                    f"JSON Value: {debug_string(val)} not formatted correctly for base64 data"
                )
            try:
                out.append(base64.b64decode(val["b64"], validate=False))
            except (binascii.Error, ValueError) as e:
                raise invalid("Unable to base64 decode") from e
            return
        out.append(_value(val, dtype))
        return
    if level >= rank:
        raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(val) != shape[level]:
        raise invalid(
            f"Encountered list at unexpected size: {len(val)} at level: {level} expected size: "
            f"{shape[level]}"
        )
    for item in val:
        _fill(item, level + 1, dtype, shape, out)


def _tensor(val: Any, dtype: int) -> DenseTensor:
    shape = _dense_shape(val)
    values: list[Any] = []
    _fill(val, 0, dtype, shape, values)
    return DenseTensor(dtype, shape, tuple(values))


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _status_text(error: TfsError) -> str:
    return f"{error.code.name}: {error.message}"


def _instances(items: list[Any], inputs: dict[str, int]) -> dict[str, DenseTensor]:
    """``FillTensorMapFromInstancesList``; ``inputs`` maps input names to dtypes."""
    if not isinstance(items[0], dict) and len(inputs) > 1:
        raise invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )

    def is_object(val: Any) -> bool:
        return isinstance(val, dict) and not _is_base64(val)

    objects = is_object(items[0])
    names = sorted(inputs)
    rows: dict[str, list[DenseTensor]] = {}

    def add(val: Any, name: str) -> None:
        """``AddInstanceItem``."""
        if name not in inputs:
            raise invalid(f"JSON object: does not have named input: {name}")
        tensor = _tensor(val, inputs[name])
        seen = rows.setdefault(name, [])
        if seen and len(seen[0].values) != len(tensor.values):
            raise invalid(
                f"Expecting tensor size: {len(seen[0].values)} but got: {len(tensor.values)}"
            )
        if seen and seen[0].shape != tensor.shape:
            raise invalid(
                f"Expecting shape {_shape_text(seen[0].shape)} but got: {_shape_text(tensor.shape)}"
            )
        seen.append(tensor)

    for count, elem in enumerate(items):
        if objects:
            if not is_object(elem):
                raise invalid(f"Expecting object but got list at item {count} of input list")
            for key, val in elem.items():
                try:
                    add(val, key)
                except TfsError as e:
                    raise invalid(
                        f"Failed to process element: {count} key: {key} of 'instances' list. "
                        f"Error: {_status_text(e)}"
                    ) from e
            if sorted(elem) != names:
                raise invalid(
                    f"Failed to process element: {count} of 'instances' list. JSON object: "
                    f"{debug_string(elem)} keys must be equal to: {','.join(names)}"
                )
        else:
            if is_object(elem):
                raise invalid(f"Expecting value/list but got object at item {count} of input list")
            try:
                add(elem, names[0])
            except TfsError as e:
                raise invalid(
                    f"Failed to process element: {count} of 'instances' list. Error: "
                    f"{_status_text(e)}"
                ) from e
    return {
        name: DenseTensor(
            inputs[name],
            (len(items), *tensors[0].shape),
            tuple(v for t in tensors for v in t.values),
        )
        for name, tensors in rows.items()
    }


def _inputs(val: Any, inputs: dict[str, int]) -> dict[str, DenseTensor]:
    """``FillTensorMapFromInputsMap``."""
    names = sorted(inputs)
    if not isinstance(val, dict) or _is_base64(val):
        if len(inputs) > 1:
            raise invalid(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        return {names[0]: _tensor(val, inputs[names[0]])}
    tensors: dict[str, DenseTensor] = {}
    for name in names:
        if name not in val:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _tensor(val[name], inputs[name])
    return tensors


def predict_inputs(
    doc: dict[str, Any], signature_name: str, inputs: dict[str, int]
) -> tuple[str, dict[str, DenseTensor]]:
    """``FillPredictRequestFromJson`` once the signature's inputs (name -> dtype) are known:
    the format ("row" or "columnar") and the input tensors."""
    if not inputs:
        raise invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    if "instances" in doc:
        if "inputs" in doc:
            raise invalid(
                f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of "
                "'inputs' or 'instances' keys to exist "
            )
        items = doc["instances"]
        if not isinstance(items, list):
            raise invalid(
                f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an list/array"
            )
        if not items:
            raise invalid(f"JSON Value: {debug_string(doc)} No values in 'instances' array")
        return "row", _instances(items, inputs)
    if "inputs" in doc:
        return "columnar", _inputs(doc["inputs"], inputs)
    raise invalid("Missing 'inputs' or 'instances' key")


def classify_regress_examples(doc: dict[str, Any]) -> list[Any]:
    """``FillClassifyRegressRequestFromJson``'s checks: the optional ``context`` first (an
    Example, read by ``MakeExampleFromJsonObject``), then the ``examples`` key."""
    if "context" in doc and not isinstance(doc["context"], dict):
        raise invalid(f"Example must be JSON object but got JSON {json_type(doc['context'])}")
    if "examples" not in doc:
        raise invalid(
            f"JSON Value: {debug_string(doc)} When method is classify, key 'examples' is "
            "expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid(
            f"JSON Value: {debug_string(doc)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise invalid(f"JSON Value: {debug_string(doc)} 'examples' value is an empty array")
    for example in examples:
        if not isinstance(example, dict):
            raise invalid(f"Example must be JSON object but got JSON {json_type(example)}")
    return examples
