"""The site's DICOM routing configuration (``/data/config/dicom/<kind>``, docs/xnat-behaviour.md
§6.2), kept in the index's ``config`` table.

Each kind holds its text under ``dicom/<kind>`` and the config service's record (version,
status, date, user) as JSON under ``dicom/<kind>#meta``. The parsed rules are kept in memory and
replaced whenever a kind changes, so an import reads them without touching the index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from xnatio.sandbox.routing import RoutingRules, parse_rules
from xnatio.sandbox.store.core import Part
from xnatio.sandbox.store.model import ClientError, now_str

__all__ = ["RULE_KINDS", "RoutingConfig"]

RULE_KINDS = ("projectRules", "subjectRules", "sessionRules", "aaRules")


@dataclass(eq=False, repr=False)
class RoutingConfig(Part):
    """The routing rules of the site; :attr:`rules` are the ones in force (read from the
    index at start)."""

    rules: RoutingRules = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rules = self._load()

    def text(self, kind: str) -> str:
        """The text of a site routing config; ``""`` if unset.

        ``kind`` is ``projectRules``, ``subjectRules``, ``sessionRules`` or ``aaRules``.
        """
        _check_kind(kind)
        with self._index.lock:
            row = self._index.row("SELECT value FROM config WHERE key=?", (f"dicom/{kind}",))
            return "" if row is None else str(row[0])

    def put(self, kind: str, text: str, *, user: str = "admin") -> None:
        """Set a site routing config (``PUT /data/config/dicom/<kind>``).

        One rule a line, ``(gggg,eeee):regex[:group]``; the first rule that matches wins. Raises
        ClientError 400 for a malformed rule.
        """
        _check_kind(kind)
        try:
            parse_rules(text)
        except ValueError as exc:
            raise ClientError(str(exc)) from exc
        with self._index.lock:
            meta = self._meta(kind)
            meta.update(
                version=int(meta.get("version", 0)) + 1,
                status="enabled",
                create_date=now_str(),
                user=user,
            )
            self._index.execute(
                "INSERT OR REPLACE INTO config VALUES(?,?)", (f"dicom/{kind}", text)
            )
            self._save_meta(kind, meta)

    def info(self, kind: str) -> dict[str, str] | None:
        """The config-service record of a routing config, or ``None`` if it was never set.

        Keys: ``contents``, ``version`` (1 for the first PUT), ``status`` (``enabled`` or
        ``disabled``; disabled rules are not applied), ``create_date``, ``user``.
        """
        if kind not in RULE_KINDS:
            return None
        with self._index.lock:
            meta = self._meta(kind)
            row = self._index.row("SELECT value FROM config WHERE key=?", (f"dicom/{kind}",))
        if row is None:
            return None
        return {
            "contents": str(row[0]),
            "version": str(meta.get("version", 1)),
            "status": str(meta.get("status", "enabled")),
            "create_date": str(meta.get("create_date", "")),
            "user": str(meta.get("user", "")),
        }

    def set_enabled(self, kind: str, enabled: bool, *, user: str = "admin") -> None:
        """Enable or disable a routing config (``PUT …?status=enabled|disabled``, ``DELETE``).

        A disabled config keeps its text but is not applied. Raises ClientError 404 for an
        unknown kind.
        """
        _check_kind(kind)
        index = self._index
        with index.lock:
            meta = self._meta(kind)
            meta.update(status="enabled" if enabled else "disabled", user=user)
            if index.row("SELECT 1 FROM config WHERE key=?", (f"dicom/{kind}",)) is None:
                index.execute("INSERT INTO config VALUES(?,?)", (f"dicom/{kind}", ""))
                meta.update(version=1, create_date=now_str())
            self._save_meta(kind, meta)

    def _meta(self, kind: str) -> dict[str, Any]:
        with self._index.lock:
            row = self._index.row("SELECT value FROM config WHERE key=?", (f"dicom/{kind}#meta",))
        if row is None:
            return {}
        meta: dict[str, Any] = json.loads(row[0])
        return meta

    def _save_meta(self, kind: str, meta: dict[str, Any]) -> None:
        """Store a kind's record, commit, and put the changed rules in force."""
        self._index.execute(
            "INSERT OR REPLACE INTO config VALUES(?,?)", (f"dicom/{kind}#meta", json.dumps(meta))
        )
        self._index.commit()
        self.rules = self._load()

    def _load(self) -> RoutingRules:
        texts = {
            k: self.text(k) if self._meta(k).get("status") != "disabled" else "" for k in RULE_KINDS
        }
        return RoutingRules(
            project=tuple(parse_rules(texts["projectRules"])),
            subject=tuple(parse_rules(texts["subjectRules"])),
            session=tuple(parse_rules(texts["sessionRules"])),
            aa=tuple(parse_rules(texts["aaRules"])),
        )


def _check_kind(kind: str) -> None:
    if kind not in RULE_KINDS:
        raise ClientError(f"Unknown DICOM routing config: {kind}", 404)
