"""Checking QuickBooks Online JSON bodies against Intuit's v3 XSDs (tests/specs/qbo-xsd).

JSON keys are the XSD's element names (and its attribute names: `sparse`, `domain`, a reference's
`name`/`type`). `Xsd.check("Payment", body)` lists every key the schema does not define for that
type, at any depth (the top level, each Line, each LinkedTxn, each detail), and values of the
wrong JSON kind (a string where xs:decimal is declared, a single object where a list is).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

_NS = "{http://www.w3.org/2001/XMLSchema}"
FILES = ("IntuitBaseTypes.xsd", "IntuitNamesTypes.xsd", "Finance.xsd", "IntuitRestServiceDef.xsd")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def xsd_folder() -> Path:
    """tests/specs/qbo-xsd (or $CASHLOOP_SPECS/qbo-xsd); missing is an error, never a skip."""
    base = Path(os.environ.get("CASHLOOP_SPECS") or Path(__file__).resolve().parents[1] / "specs")
    folder = base / "qbo-xsd"
    if not all((folder / f).is_file() for f in FILES):
        raise FileNotFoundError(f"QBO XSDs missing in {folder}: the fake cannot check requests without them")
    return folder


@dataclass
class _Type:
    base: str | None = None
    simple_content: bool = False  # ReferenceType: {"value": ..., plus attributes}
    elements: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (type, is list)
    attributes: dict[str, str] = field(default_factory=dict)


class Xsd:
    def __init__(self, folder: Path) -> None:
        self.types: dict[str, _Type] = {}
        self.enums: dict[str, set[str]] = {}
        self.simple_bases: dict[str, str] = {}
        groups: dict[str, ET.Element] = {}
        roots = [ET.parse(folder / name).getroot() for name in FILES]  # noqa: S314 (our own copies)
        for root in roots:
            for g in root.findall(f"{_NS}group"):
                groups[g.get("name", "")] = g
        for root in roots:
            for st in root.findall(f"{_NS}simpleType"):
                restriction = st.find(f"{_NS}restriction")
                if restriction is not None:
                    self.simple_bases[st.get("name", "")] = _local(restriction.get("base", "xs:string"))
                    values = {e.get("value", "") for e in restriction.findall(f"{_NS}enumeration")}
                    if values:
                        self.enums[st.get("name", "")] = values
            for ct in root.findall(f"{_NS}complexType"):
                self.types[ct.get("name", "")] = self._read(ct, groups)

    def _read(self, ct: ET.Element, groups: dict[str, ET.Element]) -> _Type:
        t = _Type()
        ext = ct.find(f".//{_NS}extension")
        if ext is not None:
            t.base = _local(ext.get("base", ""))
            t.simple_content = ct.find(f"{_NS}simpleContent") is not None
        pending = [ct]
        while pending:
            node = pending.pop()
            for child in node:
                if child.tag == f"{_NS}element" and child.get("name"):
                    many = child.get("maxOccurs") not in (None, "1")
                    t.elements[child.get("name", "")] = (_local(child.get("type", "xs:anyType")), many)
                elif child.tag == f"{_NS}attribute" and child.get("name"):
                    t.attributes[child.get("name", "")] = _local(child.get("type", "xs:string"))
                elif child.tag == f"{_NS}group" and child.get("ref") in groups:
                    pending.append(groups[child.get("ref", "")])
                elif child.tag != f"{_NS}element":
                    pending.append(child)
        return t

    def _fields(self, name: str) -> tuple[dict[str, tuple[str, bool]], dict[str, str], bool]:
        elements: dict[str, tuple[str, bool]] = {}
        attributes: dict[str, str] = {}
        simple = False
        seen = name
        while seen in self.types:
            t = self.types[seen]
            elements = {**t.elements, **elements}
            attributes = {**t.attributes, **attributes}
            simple = simple or t.simple_content
            seen = t.base or ""
        return elements, attributes, simple

    def check(self, type_name: str, value: Any, where: str | None = None) -> list[str]:
        problems: list[str] = []
        self._check(type_name, value, where or type_name, problems)
        return problems

    def _check(self, type_name: str, value: Any, where: str, problems: list[str]) -> None:
        if type_name in ("IntuitAnyType", "anyType"):
            return
        if type_name not in self.types:
            self._leaf(type_name, value, where, problems)
            return
        if not isinstance(value, dict):
            problems.append(f"{where} must be an object ({type_name}), got {type(value).__name__}")
            return
        elements, attributes, simple = self._fields(type_name)
        for key, item in value.items():
            if simple and key == "value":
                self._leaf("xs:string", item, f"{where}.value", problems)
            elif key in attributes:
                self._leaf(attributes[key], item, f"{where}.{key}", problems)
            elif key in elements:
                child, many = elements[key]
                if many:
                    if not isinstance(item, list):
                        problems.append(f"{where}.{key} must be a list")
                        continue
                    for i, each in enumerate(item):
                        self._check(child, each, f"{where}.{key}[{i}]", problems)
                else:
                    self._check(child, item, f"{where}.{key}", problems)
            else:
                problems.append(f"{where}.{key} is not defined for {type_name} in the XSD")

    def _leaf(self, type_name: str, value: Any, where: str, problems: list[str]) -> None:
        base = type_name
        while base in self.simple_bases:
            if base in self.enums and value not in self.enums[base]:
                problems.append(f"{where} must be one of {sorted(self.enums[base])}, got {value!r}")
                return
            base = self.simple_bases[base]
        number = isinstance(value, int | Decimal) and not isinstance(value, bool)
        ok = {
            "decimal": number, "int": number, "integer": number, "positiveInteger": number,
            "long": number, "double": number, "boolean": isinstance(value, bool),
            "date": isinstance(value, str) and bool(_DATE.match(value)),
        }.get(base, isinstance(value, str) or base not in ("string", "dateTime", "id"))
        if not ok:
            problems.append(f"{where} is not a valid {type_name}: {value!r}")


def _local(qname: str) -> str:
    return qname.split(":", 1)[1] if ":" in qname else qname


@cache
def load_xsd() -> Xsd:
    return Xsd(xsd_folder())
