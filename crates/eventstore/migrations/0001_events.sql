-- The event log. Every object is created unqualified so it lands in current_schema():
-- tests isolate themselves by search_path and production may choose its own schema.
--
-- position is assigned by the appender under a transaction-scoped advisory lock, not by a
-- sequence: a sequence hands out numbers in start order while transactions commit in another
-- order, and a follower reading `position > last` would then skip late committers.
create table events (
    position       bigint      primary key,
    event_id       uuid        not null unique,
    stream_id      text        not null,
    category       text        generated always as (split_part(stream_id, '-', 1)) stored,
    stream_version bigint      not null check (stream_version >= 1),
    event_type     text        not null,
    schema_version int         not null,
    recorded_at    timestamptz not null,
    data           jsonb       not null,
    metadata       jsonb       not null,
    unique (stream_id, stream_version)
);

-- read_all with a category filter walks this index in position order.
create index events_category_position on events (category, position);
