-- Snapshots of the read models, a cache for answers as of an earlier instant (crate `snapshot`).
-- A snapshot at position P is a row in <projection>_snapshots (the sums of the board or the
-- forecast as they stood right after P) plus, in <projection>_snapshot_deals, the rows of the
-- deals that changed since the previous snapshot: a deal's row at P is its latest version at or
-- below P. Deleting every row of these tables changes no answer, only its cost.
create table pipeline_snapshots (
    position    bigint      primary key,
    -- recorded_at of the event at `position`: the snapshot serves every instant from then on.
    recorded_at timestamptz not null,
    -- The board's rows, as a JSON array in key order.
    sums        jsonb       not null
);
create table pipeline_snapshot_deals (
    id       uuid   not null,
    position bigint not null,
    view     jsonb  not null,
    primary key (id, position)
);
create table forecast_snapshots (
    position    bigint      primary key,
    recorded_at timestamptz not null,
    -- The forecast's rows per month, as a JSON array in key order.
    sums        jsonb       not null
);
create table forecast_snapshot_deals (
    id       uuid   not null,
    position bigint not null,
    view     jsonb  not null,
    primary key (id, position)
);

-- A snapshot copies the deals changed since the previous one: found by the position of their
-- last event, not by a scan of every deal.
create index deals_position on deals (position);
create index forecast_deals_position on forecast_deals (((view ->> 'position')::bigint));
