"""One whole flow through a client that openapi-python-client generated from /openapi.json.

Run by crates/api/tests/it/python.rs as `python client_flow.py BASE_URL PACKAGE_PARENT TOKEN`. Every
answer must parse into the generated model the document names for it, with typed fields: an
answer the document describes wrongly fails here, as it would for a client team.
"""

import datetime
import sys
from uuid import UUID

base_url, package_parent, token = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, package_parent)

from dealstream_api_client import AuthenticatedClient  # noqa: E402
from dealstream_api_client.api.forecast import get_forecast  # noqa: E402
from dealstream_api_client.api.leads import capture_lead, qualify_lead  # noqa: E402
from dealstream_api_client.api.opportunities import (  # noqa: E402
    change_stage,
    close_opportunity,
    get_opportunity_history,
)
from dealstream_api_client.api.pipelines import get_board  # noqa: E402
from dealstream_api_client.models import (  # noqa: E402
    Board,
    CloseBody,
    CloseBodyOutcome,
    CommandResult,
    Criteria,
    Forecast,
    History,
    LeadBody,
    Problem,
    QualifiedOpportunity,
    QualifyBody,
    QualifyResult,
    StageBody,
)


def expect(answer, model):
    assert isinstance(answer, model), f"expected a {model.__name__}, got {answer!r}"
    return answer


client = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)

lead = expect(
    capture_lead.sync(
        client=client,
        body=LeadBody(name="Ada Lovelace", company="Analytical", country="GB"),
        x_actor="generated-client",
    ),
    CommandResult,
)

qualified = expect(
    qualify_lead.sync(
        UUID(lead.id),
        client=client,
        body=QualifyBody(
            criteria=Criteria(budget=True, authority=True, need=True, timeline=False),
            opportunity=QualifiedOpportunity(
                name="Analytical engine",
                amount=50_000,
                currency="GBP",
                expected_close_date=datetime.date(2027, 3, 31),
                owner="ada-owner",
            ),
        ),
    ),
    QualifyResult,
)
# The new deal's id is a typed field of the answer, not an untyped extra property.
assert isinstance(qualified.opportunity_id, UUID), qualified
assert "opportunity_id" not in qualified.additional_properties, qualified
deal = qualified.opportunity_id

staged = expect(
    change_stage.sync(
        deal,
        client=client,
        body=StageBody(stage="quoted", reason="pricing sent"),
        if_match="1",
    ),
    CommandResult,
)
assert staged.version == 2, staged

board = expect(get_board.sync("default", client=client, min_position=staged.position), Board)
quoted = [column for column in board.columns if column.stage == "quoted"]
assert len(quoted) == 1, board
totals = [total for total in quoted[0].totals if total.currency == "GBP"]
assert [(total.count, total.amount, total.weighted_amount) for total in totals] == [
    (1, 50_000, 25_000)
], board

closed = expect(
    close_opportunity.sync(
        deal,
        client=client,
        body=CloseBody(outcome=CloseBodyOutcome.WON),
        if_match=f'"{staged.version}"',
    ),
    CommandResult,
)

history = expect(get_opportunity_history.sync(deal, client=client), History)
assert [event.event_type for event in history.events] == [
    "OpportunityCreated",
    "StageChanged",
    "OpportunityClosed",
], history
assert [event.stream_version for event in history.events] == [1, 2, 3], history

forecast = expect(
    get_forecast.sync(client=client, currency="GBP", min_position=closed.position), Forecast
)
won = [row for row in forecast.rows if row.owner == "ada-owner"]
assert sum(row.closed_won for row in won) == 50_000, forecast
assert sum(row.open_count for row in won) == 0, forecast

# A closed deal refuses a stage change: the answer is the document's problem, typed.
refused = expect(
    change_stage.sync(deal, client=client, body=StageBody(stage="negotiation")), Problem
)
assert refused.status == 422, refused
assert "closed" in refused.detail, refused
assert refused.type_.startswith("https://"), refused

print("generated client flow passed")
