"""Checking requests against a vendor spec (Swagger 2.0 or OpenAPI 3), for the loopback fakes.

`Spec` finds the operation for a method and path, checks query parameters (declared, typed, given
once, required ones present), required header parameters and JSON bodies against the schema
(unknown fields, wrong types, bad date-times). A problem raises `Reject`; a fake appends it to its
`violations` and answers it as the vendor would, so every test can assert `violations == []`.

Vendor quirks are options, not special cases in the checker: `ignore_case` for APIs whose JSON
binding ignores the case of field names (Autotask's swagger is PascalCase, its JSON camelCase);
`lenient` for schemas the vendor declares one way and accepts another (Autotask's filter `value`).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Reject(Exception):
    def __init__(self, status: int, message: str, *, violation: bool = True) -> None:
        super().__init__(message)
        self.status, self.violation = status, violation


# Non-standard parameter types some specs use (Halo: "int", "bool", "List<int>").
_TYPE_ALIASES = {"int": "integer", "bool": "boolean", "long": "integer", "double": "number"}


class Spec:
    def __init__(
        self, path: Path, *, ignore_case: bool = False, lenient: frozenset[str] = frozenset()
    ) -> None:
        self.doc = json.loads(path.read_text(encoding="utf-8"))
        self.is_swagger = "swagger" in self.doc
        self.ignore_case = ignore_case
        self.lenient = lenient
        self._ops = [
            (re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", p) + "$"), p, ops)
            for p, ops in sorted(self.doc["paths"].items(), key=lambda kv: kv[0].count("{"))
        ]

    # -- lookups -----------------------------------------------------------------------------------

    def schema(self, name: str) -> dict[str, Any]:
        table = self.doc["definitions"] if self.is_swagger else self.doc["components"]["schemas"]
        return table[name]

    def properties(self, name: str) -> dict[str, str]:
        """Field name as the API takes it -> as declared (lower-cased keys when `ignore_case`)."""
        props = self.schema(name).get("properties", {})
        return {(k.lower() if self.ignore_case else k): k for k in props}

    def field_schema(self, model: str, field_name: str) -> dict[str, Any] | None:
        declared = self.properties(model).get(field_name.lower() if self.ignore_case else field_name)
        return None if declared is None else self.schema(model)["properties"][declared]

    # -- checks ------------------------------------------------------------------------------------

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any], dict[str, str]]:
        for regex, template, ops in self._ops:
            match = regex.match(path)
            if match and method.lower() in ops:
                op = ops[method.lower()]
                for p in self._params(op, "path"):
                    if self._type(p) == "integer" and not match.group(p["name"]).lstrip("-").isdigit():
                        raise Reject(400, f"path parameter {p['name']} must be an integer")
                return template, op, match.groupdict()
        raise Reject(400, f"no operation {method} {path} in the spec")

    def check_query(self, op: dict[str, Any], query: dict[str, list[str]]) -> None:
        declared = {p["name"]: p for p in self._params(op, "query")}
        for name, values in query.items():
            if name not in declared:
                raise Reject(400, f"query parameter {name!r} is not declared")
            if len(values) > 1:
                raise Reject(400, f"query parameter {name!r} given {len(values)} times")
            problem = _type_problem(self._type(declared[name]), values[0])
            if problem:
                raise Reject(400, f"query parameter {name}: {problem}")
        missing = [n for n, p in declared.items() if p.get("required") and n not in query]
        if missing:
            raise Reject(400, f"missing required query parameter(s) {', '.join(missing)}")

    def check_headers(self, op: dict[str, Any], headers: dict[str, str]) -> None:
        missing = [
            p["name"]
            for p in self._params(op, "header")
            if p.get("required") and not headers.get(p["name"].lower())
        ]
        if missing:
            raise Reject(400, f"missing required header(s) {', '.join(missing)}")

    def check_body(self, op: dict[str, Any], headers: dict[str, str], body: bytes) -> Any:
        if "application/json" not in headers.get("content-type", ""):
            raise Reject(400, "request body must be application/json")
        try:
            data = json.loads(body, parse_float=Decimal)  # Decimal keeps the literal for type checks
        except ValueError:
            raise Reject(400, "request body is not JSON") from None
        problems: list[str] = []
        self.validate(data, self._body_schema(op), "body", problems)
        if problems:
            raise Reject(400, "; ".join(problems))
        return data

    def validate(self, value: Any, schema: dict[str, Any], where: str, problems: list[str]) -> None:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            if name in self.lenient:
                return
            schema = self.schema(name)
        if value is None:
            # Swagger 2 has no nullable; .NET-backed APIs (Autotask) take null for any field.
            if (
                not self.is_swagger
                and not schema.get("nullable")
                and schema.get("type") not in (None, "object")
            ):
                problems.append(f"{where} may not be null")
            return
        kind = schema.get("type", "object")
        ok = {
            "string": isinstance(value, str),
            "boolean": isinstance(value, bool),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | Decimal) and not isinstance(value, bool),
            "array": isinstance(value, list),
            "object": isinstance(value, dict),
        }.get(kind, True)
        if not ok:
            problems.append(f"{where} must be {kind}, got {type(value).__name__}")
            return
        if kind == "string":
            if schema.get("format") == "date-time" and not _parses(value):
                problems.append(f"{where} is not a date-time")
            if "enum" in schema and value not in schema["enum"]:
                problems.append(f"{where} must be one of {schema['enum']}")
        elif kind == "array":
            for i, item in enumerate(value):
                self.validate(item, schema.get("items", {}), f"{where}[{i}]", problems)
        elif kind == "object" and "properties" in schema:
            props = schema["properties"]
            names = {(k.lower() if self.ignore_case else k): k for k in props}
            for key, item in value.items():
                declared = names.get(key.lower() if self.ignore_case else key)
                if declared is None:
                    problems.append(f"{where}.{key} is not a field of the schema")
                else:
                    self.validate(item, props[declared], f"{where}.{key}", problems)
            given = {(k.lower() if self.ignore_case else k) for k in value}
            problems.extend(
                f"{where}.{k} is required"
                for k in schema.get("required", [])
                if (k.lower() if self.ignore_case else k) not in given
            )

    # -- helpers -----------------------------------------------------------------------------------

    def _params(self, op: dict[str, Any], where: str) -> list[dict[str, Any]]:
        return [p for p in op.get("parameters", []) if p.get("in") == where]

    def _type(self, param: dict[str, Any]) -> str:
        raw = param.get("type") if self.is_swagger else (param.get("schema") or {}).get("type")
        return _TYPE_ALIASES.get(str(raw), str(raw))

    def _body_schema(self, op: dict[str, Any]) -> dict[str, Any]:
        if self.is_swagger:
            body = [p for p in op.get("parameters", []) if p.get("in") == "body"]
            if not body:
                raise Reject(400, "this operation takes no body")
            return body[0]["schema"]
        content = (op.get("requestBody") or {}).get("content") or {}
        if "application/json" not in content:
            raise Reject(400, "this operation takes no JSON body")
        return content["application/json"]["schema"]


def _type_problem(kind: str, value: str) -> str | None:
    if kind == "integer" and not value.lstrip("-").isdigit():
        return f"must be an integer, got {value!r}"
    if kind == "boolean" and value not in ("true", "false"):
        return f"must be true or false, got {value!r}"
    if kind == "number":
        try:
            Decimal(value)
        except ArithmeticError:
            return f"must be a number, got {value!r}"
    if kind == "List<int>" and not all(v.strip().lstrip("-").isdigit() for v in value.split(",")):
        return f"must be comma-separated integers, got {value!r}"
    return None


def _parses(text: str) -> bool:
    if "T" not in text:
        return False
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


@dataclass
class Failure:
    status: int
    retry_after: float | str | None  # a str is sent as it is
    times: int
    method: str | None = None
    path: str | None = None  # a prefix of the request path
    after: bool = False  # carry the request out and lose only the response

    def applies(self, method: str, path: str) -> bool:
        return self.method in (None, method) and (self.path is None or path.startswith(self.path))


class Failures:
    """`fail_next` for a fake: the next matching requests get `status` (with Retry-After)."""

    def __init__(self) -> None:
        self._items: list[Failure] = []
        self._lock = threading.Lock()

    def add(self, failure: Failure) -> None:
        with self._lock:
            self._items.append(failure)

    def take(self, method: str, path: str) -> Failure | None:
        with self._lock:
            found = next((f for f in self._items if f.applies(method, path)), None)
            if found is not None:
                found.times -= 1
                if found.times <= 0:
                    self._items.remove(found)
            return found


Handle = Callable[[str, str, dict[str, str], bytes], tuple[int, dict[str, str], Any]]


class LoopbackServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 that hands each request to `handle`; JSON replies."""

    def __init__(self, handle: Handle) -> None:
        self._handle = handle
        self._server: ThreadingHTTPServer | None = None
        self._stalls: list[float] = []
        self._stall_lock = threading.Lock()
        self.latency = 0.0  # seconds every answer takes, as a real server's would

    def stall_next(self, seconds: float, times: int = 1) -> None:
        """Answer the next `times` requests only after `seconds` (a client timeout to provoke)."""
        with self._stall_lock:
            self._stalls.extend([seconds] * times)

    def _stall(self) -> float:
        with self._stall_lock:
            return self._stalls.pop(0) if self._stalls else self.latency

    def start(self) -> int:
        handle, stall = self._handle, self._stall

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # or each response waits out a delayed ACK (~40 ms)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if len(body) < length:  # the client died mid-request (a killed process): no request
                    self.close_connection = True
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                delay = stall()
                if delay:
                    time.sleep(delay)
                status, extra, payload = handle(self.command, self.path, headers, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
