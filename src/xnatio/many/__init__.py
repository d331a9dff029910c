"""Many sessions in one run: ``xio upload-many`` and :func:`upload_many`.

A run reads its sessions from a manifest (:func:`read_manifest`) or finds them under a folder
(:func:`discover`), checks the whole plan and every target once (:func:`plan_many`), then uploads
the sessions with one XNAT login and one connection budget, pipelined, each with its own journal
and verification, and records the run in a run journal. See docs/many-sessions.md.
"""

from __future__ import annotations

from xnatio.many.discover import Discovery, LabelTemplate, ProjectMap, discover
from xnatio.many.outcome import ManyEvent, RunResult, SessionOutcome
from xnatio.many.plan import PlannedSession, RunPlan
from xnatio.many.run import PlanRefused, plan_many, upload_many
from xnatio.many.session import ManyOptions
from xnatio.many.spec import SessionSpec, parse_shard, read_manifest, take_shard

__all__ = [
    "Discovery",
    "LabelTemplate",
    "ManyEvent",
    "ManyOptions",
    "PlanRefused",
    "PlannedSession",
    "ProjectMap",
    "RunPlan",
    "RunResult",
    "SessionOutcome",
    "SessionSpec",
    "discover",
    "parse_shard",
    "plan_many",
    "read_manifest",
    "take_shard",
    "upload_many",
]
