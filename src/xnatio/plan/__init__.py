"""Plan: check that a source is one XNAT session, and cut it into batches."""

from __future__ import annotations

from xnatio.plan.batches import Batch, plan_batches
from xnatio.plan.checks import check_inventory
from xnatio.plan.planner import UploadPlan, plan_inventory, plan_upload

__all__ = [
    "Batch",
    "UploadPlan",
    "check_inventory",
    "plan_batches",
    "plan_inventory",
    "plan_upload",
]
