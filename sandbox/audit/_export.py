"""Exports of the audit log: JSON Lines (verifiable), OCSF, CEF and RFC 5424 syslog (for SIEMs).

``jsonl`` writes one line per entry, exactly::

    {"entry":<the canonical entry, byte for byte as hashed>,"leaf_hash":"<hex>","seq":<n>}

which is everything ``sandbox audit verify --log`` needs: the leaf hash is SHA-256 over
``0x00`` and the entry's bytes as they appear in the line. Only an unfiltered export of the
whole log (or of its first n entries) verifies against a checkpoint; a filtered one has gaps
by design. ``ocsf``, ``cef`` and ``syslog`` are for consumption, not verification; each
record carries the seq and leaf hash so it can be matched with the verifiable export.

Entries hold what was asked and decided, never data values; exports copy only entry fields.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

FORMATS = ("jsonl", "ocsf", "cef", "syslog")
PRODUCT = "Sandbox"
VENDOR = "Sandbox"
OCSF_VERSION = "1.1.0"
SYSLOG_FACILITY = 13  # log audit
SYSLOG_SD_ID = "sandbox@32473"  # 32473: the example enterprise number (RFC 5612)

Row = tuple[int, str, str]
"""``(seq, canonical entry text, leaf hash hex)``."""


@dataclass(frozen=True)
class ExportFilter:
    """Which entries to export: time window (inclusive since, exclusive until), project and
    actor. An empty filter exports every entry (and keeps the export verifiable)."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    project: str | None = None
    principal: str | None = None

    @property
    def empty(self) -> bool:
        return self.since is None and self.until is None and not self.project and not self.principal

    def matches(self, entry: dict[str, Any]) -> bool:
        if self.project and entry.get("project") != self.project:
            return False
        if self.principal and entry.get("actor") != self.principal:
            return False
        if self.since is not None or self.until is not None:
            when = _entry_time(entry)
            if when is None:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when >= self.until:
                return False
        return True


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 date or date-time; without a zone it is UTC."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not an ISO 8601 date or date-time") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _entry_time(entry: dict[str, Any]) -> dt.datetime | None:
    raw = entry.get("time")
    if not isinstance(raw, str):
        return None
    try:
        return parse_time(raw)
    except ValueError:
        return None


def jsonl_line(seq: int, text: str, leaf: str) -> str:
    return f'{{"entry":{text},"leaf_hash":"{leaf}","seq":{seq}}}\n'


def export(rows: Iterable[Row], fmt: str, out: TextIO, where: ExportFilter | None = None) -> int:
    """Write ``rows`` in ``fmt`` to ``out``; returns how many entries were written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}' (one of {', '.join(FORMATS)})")
    where = where or ExportFilter()
    count = 0
    if fmt == "jsonl" and where.empty:  # the fast path: no parsing, the stored bytes as they are
        for seq, text, leaf in rows:
            out.write(jsonl_line(seq, text, leaf))
            count += 1
        return count
    render: Callable[[int, dict[str, Any], str, str], str] = {
        "jsonl": lambda seq, entry, text, leaf: jsonl_line(seq, text, leaf),
        "ocsf": lambda seq, entry, text, leaf: ocsf_line(seq, entry, leaf),
        "cef": lambda seq, entry, text, leaf: cef_line(seq, entry, leaf),
        "syslog": lambda seq, entry, text, leaf: syslog_line(seq, entry, leaf),
    }[fmt]
    for seq, entry, text, leaf in _parsed(rows):
        if where.matches(entry):
            out.write(render(seq, entry, text, leaf))
            count += 1
    return count


def _parsed(rows: Iterable[Row]) -> Iterator[tuple[int, dict[str, Any], str, str]]:
    for seq, text, leaf in rows:
        entry = json.loads(text)
        yield seq, entry if isinstance(entry, dict) else {"value": entry}, text, leaf


# ---- classification shared by the SIEM formats ----------------------------------------------
_CREATE = ("added", "created", "registered", "accepted", "submitted", "requested", "granted")
_READ = ("previewed", "read", "listed", "released", "exported", "verified")
_UPDATE = ("set", "mapped", "replaced", "rotated", "approved", "rejected", "held", "changed")
_DELETE = ("revoked", "cancelled", "deleted", "removed", "expired")


def _activity(event: str) -> tuple[int, str]:
    """OCSF API Activity ``activity_id`` and its caption, from the event's last word."""
    last = event.rsplit(".", 1)[-1]
    for words, number, caption in (
        (_CREATE, 1, "Create"),
        (_READ, 2, "Read"),
        (_UPDATE, 3, "Update"),
        (_DELETE, 4, "Delete"),
    ):
        if last in words or any(last.endswith("_" + w) for w in words):
            return number, caption
    return 99, "Other"


def _failed(entry: dict[str, Any]) -> bool:
    event = str(entry.get("event", ""))
    return entry.get("decision") == "deny" or event.endswith((".denied", ".failed", ".rejected"))


def _severity(entry: dict[str, Any]) -> int:
    """0 (routine) to 2 (a failure): denials are 1."""
    if str(entry.get("event", "")).endswith(".failed"):
        return 2
    return 1 if _failed(entry) else 0


def _epoch_ms(entry: dict[str, Any]) -> int:
    when = _entry_time(entry)
    return int(when.timestamp() * 1000) if when is not None else 0


def _version() -> str:
    from sandbox import __version__

    return __version__


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# ---- OCSF (API Activity, class 6003) --------------------------------------------------------
_OCSF_MAPPED = frozenset({"seq", "time", "event", "actor", "role", "decision", "rule_ids"})


def ocsf_record(seq: int, entry: dict[str, Any], leaf: str) -> dict[str, Any]:
    event = str(entry.get("event", ""))
    activity_id, activity = _activity(event)
    failed = _failed(entry)
    resources = [
        {"type": kind, "name": str(entry[kind])}
        for kind in ("dataset", "project", "principal")
        if entry.get(kind)
    ]
    if entry.get("job_id"):
        resources.append({"type": "job", "uid": str(entry["job_id"])})
    user: dict[str, Any] = {"name": str(entry.get("actor", "unknown"))}
    if entry.get("role"):
        user["type"] = str(entry["role"])
    record: dict[str, Any] = {
        "activity_id": activity_id,
        "activity_name": activity,
        "actor": {"user": user},
        "api": {"operation": event, "service": {"name": "sandbox"}},
        "category_name": "Application Activity",
        "category_uid": 6,
        "class_name": "API Activity",
        "class_uid": 6003,
        "message": _summary(entry),
        "metadata": {
            "event_code": event,
            "log_name": "sandbox-audit",
            "original_time": str(entry.get("time", "")),
            "product": {"name": PRODUCT, "vendor_name": VENDOR, "version": _version()},
            "sequence": seq,
            "uid": leaf,
            "version": OCSF_VERSION,
        },
        "resources": resources,
        "severity": ("Informational", "Low", "Medium")[_severity(entry)],
        "severity_id": 1 + _severity(entry),
        # The log records who acted, not from where: the source endpoint is not recorded.
        "src_endpoint": {"name": "unrecorded"},
        "status": "Failure" if failed else "Success",
        "status_id": 2 if failed else 1,
        "time": _epoch_ms(entry),
        "type_name": f"API Activity: {activity}",
        "type_uid": 6003 * 100 + activity_id,
        "unmapped": {k: v for k, v in entry.items() if k not in _OCSF_MAPPED}
        | {"leaf_hash": leaf, "seq": seq},
    }
    if entry.get("job_id"):
        record["api"]["request"] = {"uid": str(entry["job_id"])}
    if failed:
        rules = entry.get("rule_ids") or []
        record["status_detail"] = ", ".join(str(r) for r in rules) or event
    if entry.get("decision"):
        record["unmapped"]["decision"] = entry["decision"]
    if entry.get("rule_ids"):
        record["unmapped"]["rule_ids"] = entry["rule_ids"]
    return record


def ocsf_line(seq: int, entry: dict[str, Any], leaf: str) -> str:
    return json.dumps(ocsf_record(seq, entry, leaf), sort_keys=True, ensure_ascii=False) + "\n"


def _summary(entry: dict[str, Any]) -> str:
    parts = [str(entry.get("event", ""))]
    for key in ("actor", "project", "dataset", "purpose", "decision", "job_id"):
        if entry.get(key):
            parts.append(f"{key}={_text(entry[key])}")
    if entry.get("rule_ids"):
        parts.append("rules=" + ",".join(str(r) for r in entry["rule_ids"]))
    return " ".join(parts)


# ---- CEF ------------------------------------------------------------------------------------
def _cef_header(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _cef_value(value: str) -> str:
    return (
        value.replace("\\", "\\\\")
        .replace("=", "\\=")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
    )


_CEF_CUSTOM = (  # (label, entry key) → csN / csNLabel
    ("project", "project"),
    ("dataset", "dataset"),
    ("purpose", "purpose"),
    ("jobId", "job_id"),
    ("ruleIds", "rule_ids"),
    ("leafHash", None),
)


def cef_line(seq: int, entry: dict[str, Any], leaf: str) -> str:
    event = str(entry.get("event", ""))
    severity = (3, 6, 8)[_severity(entry)]
    ext: list[tuple[str, str]] = [("rt", str(_epoch_ms(entry))), ("externalId", str(seq))]
    if entry.get("actor"):
        ext.append(("suser", _text(entry["actor"])))
    if entry.get("role"):
        ext.append(("spriv", _text(entry["role"])))
    if entry.get("decision"):
        ext.append(("act", _text(entry["decision"])))
    ext.append(("outcome", "failure" if _failed(entry) else "success"))
    if entry.get("principal"):
        ext.append(("duser", _text(entry["principal"])))
    for number, (label, key) in enumerate(_CEF_CUSTOM, start=1):
        value = leaf if key is None else entry.get(key)
        if value in (None, "", []):
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        ext.append((f"cs{number}Label", label))
        ext.append((f"cs{number}", _text(value)))
    ext.append(("msg", _summary(entry)))
    header = "|".join(
        _cef_header(part)
        for part in ("CEF:0", VENDOR, PRODUCT, _version(), event, event, str(severity))
    )
    return header + "|" + " ".join(f"{k}={_cef_value(v)}" for k, v in ext) + "\n"


# ---- RFC 5424 syslog ------------------------------------------------------------------------
def _sd_value(value: str) -> str:
    return (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("]", "\\]")
        .replace("\n", " ")
        .replace("\r", " ")
    )


def _sd_name(key: str) -> str:
    """An SD-PARAM name: printable US-ASCII except '=', ' ', ']', '"'; at most 32."""
    cleaned = "".join(c for c in key if 33 <= ord(c) <= 126 and c not in '= ]"')
    return (cleaned or "field")[:32]


def syslog_line(seq: int, entry: dict[str, Any], leaf: str, hostname: str = "-") -> str:
    event = str(entry.get("event", "")) or "-"
    severity = (6, 5, 4)[_severity(entry)]  # informational, notice, warning
    pri = SYSLOG_FACILITY * 8 + severity
    when = _entry_time(entry)
    stamp = when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if when else "-"
    msgid = "".join(c for c in event if 33 <= ord(c) <= 126)[:32] or "-"
    params = [("seq", str(seq)), ("leaf_hash", leaf)]
    params += [
        (_sd_name(k), _text(v)) for k, v in sorted(entry.items()) if k not in ("seq", "time")
    ]
    sd = "[" + SYSLOG_SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params) + "]"
    message = _summary(entry).replace("\n", " ")
    return f"<{pri}>1 {stamp} {hostname} sandbox - {msgid} {sd} {message}\n"
