"""Schemathesis hooks for tests/test_openapi.py (loaded with SCHEMATHESIS_HOOKS).

One check is run in a variant of its own: `negative_data_rejection`, which fails when the server
accepts a request the document calls invalid. The server validates bodies with pydantic in lax
mode, on purpose (the old clients' bodies must keep working): a JSON value of another type that
pydantic converts exactly is accepted, e.g. 0 or 1 for a boolean, "5" for an integer. Such a
request, and only such a request (the sole invalid part a change of JSON type in the body), is
not counted as a failure; every other invalid request (a missing field, a value out of range, a
string too long, a value outside an enum, ...) must still be refused.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.core.mutations import OperatorKind
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import CoveragePhaseData, CoverageScenario
from schemathesis.specs.openapi.checks import negative_data_rejection


def _only_a_body_type_change(case: Any) -> bool:
    meta = case.meta
    if meta is None:
        return False
    data = meta.phase.data
    if isinstance(data, CoveragePhaseData):
        return (
            data.scenario == CoverageScenario.INCORRECT_TYPE
            and data.parameter_location == ParameterLocation.BODY
        )
    mutations = getattr(data, "mutations", ())
    return bool(mutations) and all(
        m.operator == OperatorKind.CHANGE_TYPE and m.parameter_location == ParameterLocation.BODY
        for m in mutations
    )


@schemathesis.check
def negative_data_rejection_lax_types(ctx: Any, response: Any, case: Any) -> bool | None:
    """`negative_data_rejection`, but a body value that pydantic's lax mode converts may pass."""
    try:
        return negative_data_rejection(ctx, response, case)
    except AssertionError:
        if _only_a_body_type_change(case):
            return None
        raise
