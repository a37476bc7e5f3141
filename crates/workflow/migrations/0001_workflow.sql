-- Durable timers: one row per follow-up or reminder that should fire. A row is claimed with
-- FOR UPDATE SKIP LOCKED and marked fired in the transaction that holds the claim, so several
-- instances share the work and each timer is fired once. Rows of completed or cancelled
-- follow-ups are deleted; fired rows stay, as a record and so that a replayed plan cannot
-- revive them.
create table workflow_timers (
    -- The follow-up id the timer fires (derived for reminders).
    timer_id       uuid primary key,
    opportunity_id uuid not null,
    kind           text not null,
    -- Attributed as actor workflow:<rule> on the FollowUpDue it causes.
    rule           text not null,
    due_at         timestamptz not null,
    correlation_id uuid,
    causation_id   uuid,
    created_at     timestamptz not null default clock_timestamp(),
    fired_at       timestamptz
);
create index workflow_timers_pending on workflow_timers (due_at) where fired_at is null;
create index workflow_timers_by_deal on workflow_timers (opportunity_id);

-- The stream version each deal's timers were last planned from. A plan computed from an older
-- version than the stored one is discarded, so out-of-order deliveries (several instances,
-- concurrent handling) cannot bring back a timer that a newer plan removed.
create table workflow_deals (
    opportunity_id  uuid primary key,
    planned_version bigint not null
);

-- Round-robin turns per routing rule: the next turn to hand out, only ever incremented.
create table workflow_round_robin (
    rule      text primary key,
    next_turn bigint not null
);

-- Every lead the workflow routed, written in the same transaction as the turn it took, so a
-- redelivered LeadCaptured reuses its owner instead of taking another turn.
create table workflow_lead_routes (
    lead_id     uuid primary key,
    rule        text not null,
    owner       text not null,
    turn        bigint,
    assigned_at timestamptz not null default clock_timestamp()
);
