-- The pipeline projection. `view` is the whole deal row as the pure rules keep it; the other
-- columns are copies of its fields that queries filter, sort or sum on.
create table deals (
    id                  uuid        primary key,
    pipeline            text        not null,
    stage               text        not null,
    status              text        not null,
    owner               text        not null,
    currency            text        not null,
    amount              bigint      not null,
    probability         int         not null,
    weighted_amount     bigint      not null,
    forecast_category   text        not null,
    expected_close_date date        not null,
    closed_at           timestamptz,
    entered_stage_at    timestamptz not null,
    last_activity_at    timestamptz,
    next_follow_up_at   timestamptz,
    open_follow_ups     int         not null,
    version             bigint      not null,
    position            bigint      not null,
    view                jsonb       not null
);
create index deals_stage_id on deals (stage, id);
create index deals_owner_id on deals (owner, id);
create index deals_status_id on deals (status, id);

create table follow_ups (
    opportunity_id uuid        not null,
    id             uuid        not null,
    kind           text        not null,
    due_at         timestamptz not null,
    status         text        not null,
    primary key (opportunity_id, id)
);
create index follow_ups_status_due on follow_ups (status, due_at);

-- Open deals per pipeline, stage and currency. Sums are numeric: they may exceed i64.
create table board (
    pipeline        text    not null,
    stage           text    not null,
    currency        text    not null,
    count           bigint  not null,
    amount          numeric not null,
    weighted_amount numeric not null,
    primary key (pipeline, stage, currency)
);
