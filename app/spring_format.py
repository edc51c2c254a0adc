"""Spring Batch 5.2's formats for the job repository rows it shares with this service.

JOB_KEY is `DefaultJobKeyGenerator`'s MD5; execution contexts are
`DefaultExecutionContextSerializer`'s base64 of a Java-serialized
`java.util.HashMap<String, Object>`. Both services find each other's instances and
read each other's contexts (docs/contracts.md, "Sharing the job repository").
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import struct
from collections.abc import Sequence
from typing import Any

from javaobj.v2.main import loads as java_loads

from app.model import JobParameter

# Spring reads SERIALIZED_CONTEXT when it is set: a context past SHORT_CONTEXT's 2,500
# characters goes there whole, and SHORT_CONTEXT keeps a prefix (JdbcExecutionContextDao).
SHORT_CONTEXT_LIMIT = 2500
UNDECODABLE = "undecodable context"

STRING = "java.lang.String"
LOCAL_DATE = "java.time.LocalDate"
INTEGER = "java.lang.Integer"
LONG = "java.lang.Long"

# The Java types the old service may have given a parameter this service types as the key:
# its code is not at hand, and JobParametersBuilder offers addLong but no addInteger.
_TYPES_SPRING_MAY_HAVE_USED = {
    LOCAL_DATE: (LOCAL_DATE, STRING),
    INTEGER: (INTEGER, LONG, STRING),
}


def job_key(parameters: Sequence[JobParameter]) -> str:
    """Spring's JOB_KEY: MD5 of `name=` + JobParameter.toString() + `;` for each
    identifying parameter, in name order (Java's String order: UTF-16 code units)."""
    text = "".join(
        f"{p.name}={{value={p.value}, type=class {p.type}, identifying=true}};"
        for p in sorted(parameters, key=lambda p: p.name.encode("utf-16-be"))
        if p.identifying
    )
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def legacy_job_key(parameters: Sequence[JobParameter]) -> str:
    """The key this service wrote before it shared Spring's: `name=value;` in name order."""
    ordered = sorted(parameters, key=lambda p: p.name)
    text = "".join(f"{p.name}={p.value};" for p in ordered if p.identifying)
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def instance_keys(parameters: Sequence[JobParameter]) -> list[str]:
    """The keys the instance of these parameters may be recorded under, this service's own
    first: Spring's with each Java type the old service may have used, then the legacy key."""
    choices = [
        [
            JobParameter(p.name, kind, p.value, p.identifying)
            for kind in _TYPES_SPRING_MAY_HAVE_USED.get(p.type, (p.type,))
        ]
        for p in parameters
    ]
    keys = [job_key(variant) for variant in itertools.product(*choices)]
    keys.append(legacy_job_key(parameters))
    return list(dict.fromkeys(keys))


# ---- execution contexts -----------------------------------------------------------


def encode_context(context: dict[str, Any]) -> tuple[str, str | None]:
    """(SHORT_CONTEXT, SERIALIZED_CONTEXT) as Spring's JdbcExecutionContextDao stores the
    context. Python str, int, bool, list and dict become String, Long, Boolean, ArrayList
    and HashMap; None values are left out (Spring's ExecutionContext.put removes the key)."""
    stream = _JavaStream()
    stream.hash_map({k: v for k, v in context.items() if v is not None})
    text = base64.b64encode(stream.to_bytes()).decode("ascii")
    if len(text) <= SHORT_CONTEXT_LIMIT:
        return text, None
    return text[: SHORT_CONTEXT_LIMIT - 8] + " ...", text


def written_as_json(short: str | None, serialized: str | None) -> bool:
    """Whether the context is the JSON this service wrote before it wrote Spring's format:
    one Spring can read neither, nor copy into a step of its own."""
    return (serialized or short or "").lstrip().startswith("{")


def decode_context(short: str | None, serialized: str | None) -> dict[str, Any]:
    """A context as Spring writes it (Java-serialized map, base64) or as this service wrote
    it before (JSON). One neither can read is `{UNDECODABLE: reason}`: no checkpoint."""
    text = serialized or short
    if not text:
        return {}
    try:
        if written_as_json(short, serialized):
            decoded = json.loads(text)
        else:
            decoded = _python(java_loads(base64.b64decode(text, validate=True)))
    except Exception as exc:  # a parser's any failure on foreign bytes: shown, never raised
        return {UNDECODABLE: f"{type(exc).__name__}: {exc}"[:200]}
    if not isinstance(decoded, dict):
        return {UNDECODABLE: f"not a map but {type(decoded).__name__}"}
    return decoded


def _python(value: Any) -> Any:
    """javaobj's reading as plain values: maps, lists, strings, numbers, booleans (boxed
    ones hold theirs in `value`); any other object as its class name."""
    if isinstance(value, dict):
        return {str(k): _python(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_python(v) for v in value]
    raw = getattr(value, "value", value)
    if raw is None or isinstance(raw, bool | int | float | str):
        return raw
    classdesc = getattr(value, "classdesc", None)
    return f"<{classdesc.name if classdesc is not None else type(value).__name__}>"


# class name -> (serialVersionUID, flags, fields as (type code, name), superclass)
_JAVA_CLASSES: dict[str, tuple[int, int, tuple[tuple[str, str], ...], str | None]] = {
    "java.util.HashMap": (
        0x0507DAC1C31660D1,
        0x03,
        (("F", "loadFactor"), ("I", "threshold")),
        None,
    ),
    "java.util.ArrayList": (0x7881D21D99C7619D, 0x03, (("I", "size"),), None),
    "java.lang.Number": (-0x79536AE2F46B1F75, 0x02, (), None),
    LONG: (0x3B8BE490CC8F23DF, 0x02, (("J", "value"),), "java.lang.Number"),
    "java.lang.Boolean": (-0x32DF8D7F2A630512, 0x02, (("Z", "value"),), None),
}


class _JavaStream:
    """Java's object serialization (the stream ObjectOutputStream writes) of a HashMap with
    String keys and String, Long, Boolean, ArrayList or HashMap values. Written here, as
    javaobj-py3's writer for Python 3.11 (v1) writes plain UTF-8, not Java's modified
    UTF-8, and no long strings; the tests read the result back with javaobj and a JDK."""

    _MAGIC = b"\xac\xed\x00\x05"
    _BASE_HANDLE = 0x7E0000

    def __init__(self) -> None:
        self._out = bytearray(self._MAGIC)
        self._handles: dict[str, int] = {}
        self._next_handle = self._BASE_HANDLE

    def to_bytes(self) -> bytes:
        return bytes(self._out)

    def _handle(self) -> int:
        self._next_handle += 1
        return self._next_handle - 1

    def _utf(self, text: str, *, long_tag: bool = False) -> None:
        data = _modified_utf8(text)
        self._out += struct.pack(">Q" if long_tag else ">H", len(data)) + data

    def _class(self, name: str) -> None:
        if name in self._handles:
            self._out += struct.pack(">BI", 0x71, self._handles[name])  # TC_REFERENCE
            return
        uid, flags, fields, superclass = _JAVA_CLASSES[name]
        self._out.append(0x72)  # TC_CLASSDESC
        self._handles[name] = self._handle()
        self._utf(name)
        self._out += struct.pack(">qBH", uid, flags, len(fields))
        for code, field in fields:
            self._out += code.encode("ascii")
            self._utf(field)
        self._out.append(0x78)  # TC_ENDBLOCKDATA: no class annotations
        if superclass is None:
            self._out.append(0x70)  # TC_NULL
        else:
            self._class(superclass)

    def _object(self, name: str, values: bytes) -> None:
        self._out.append(0x73)  # TC_OBJECT
        self._class(name)
        self._handle()
        self._out += values

    def value(self, value: Any) -> None:
        if isinstance(value, str):
            data = _modified_utf8(value)
            self._handle()
            if len(data) <= 0xFFFF:
                self._out += b"\x74" + struct.pack(">H", len(data)) + data  # TC_STRING
            else:
                self._out += b"\x7c" + struct.pack(">Q", len(data)) + data  # TC_LONGSTRING
        elif isinstance(value, bool):
            self._object("java.lang.Boolean", struct.pack(">?", value))
        elif isinstance(value, int):
            self._object(LONG, struct.pack(">q", value))
        elif isinstance(value, dict):
            self.hash_map(value)
        elif isinstance(value, list):
            # ArrayList.writeObject: its size field, the size again as block data, each element
            self._object("java.util.ArrayList", struct.pack(">i", len(value)))
            self._out += b"\x77\x04" + struct.pack(">i", len(value))
            for element in value:
                self.value(element)
            self._out.append(0x78)  # TC_ENDBLOCKDATA
        else:
            raise TypeError(f"no Java type for a context value of type {type(value).__name__}")

    def hash_map(self, entries: dict[str, Any]) -> None:
        """HashMap.writeObject: its fields, then capacity and size as block data, then
        each key and value; sized as `new HashMap()` grown to hold them."""
        capacity = 16
        while len(entries) > capacity * 3 // 4:
            capacity *= 2
        threshold = capacity * 3 // 4 if entries else 0
        self._object("java.util.HashMap", struct.pack(">fi", 0.75, threshold))
        self._out += b"\x77\x08" + struct.pack(">ii", capacity, len(entries))  # TC_BLOCKDATA
        for key, value in entries.items():
            self.value(str(key))
            self.value(value)
        self._out.append(0x78)  # TC_ENDBLOCKDATA


def _modified_utf8(text: str) -> bytes:
    """Java's modified UTF-8 (DataOutput.writeUTF): UTF-16 code units, U+0000 as two bytes."""
    units = text.encode("utf-16-be", "surrogatepass")
    return b"".join(_unit_utf8(u) for (u,) in struct.iter_unpack(">H", units))


def _unit_utf8(unit: int) -> bytes:
    if 0 < unit < 0x80:
        return bytes((unit,))
    if unit < 0x800:
        return bytes((0xC0 | unit >> 6, 0x80 | unit & 0x3F))
    return bytes((0xE0 | unit >> 12, 0x80 | unit >> 6 & 0x3F, 0x80 | unit & 0x3F))
