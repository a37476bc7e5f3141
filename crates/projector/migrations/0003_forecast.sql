-- The forecast projection keeps its own copy of each deal's row, so that it can be rebuilt and
-- run independently of the pipeline projection.
create table forecast_deals (
    id   uuid  primary key,
    view jsonb not null
);

-- Per calendar month (its first day), owner, pipeline and currency; quarters are sums of months.
-- `deals` counts every deal in the cell, open or closed; a cell with none is deleted.
create table forecast (
    month           date    not null,
    owner           text    not null,
    pipeline        text    not null,
    currency        text    not null,
    deals           bigint  not null,
    open_count      bigint  not null,
    pipeline_amount numeric not null,
    weighted_amount numeric not null,
    best_case       numeric not null,
    "commit"        numeric not null,
    closed_won      numeric not null,
    closed_lost     numeric not null,
    primary key (month, owner, pipeline, currency)
);
