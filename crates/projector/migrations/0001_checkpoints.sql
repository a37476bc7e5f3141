-- Where each projection stands: the position of the last event applied to its tables. Written in
-- the same transaction as the batch it belongs to, so a redelivered event is recognised.
create table projection_checkpoints (
    projection text        primary key,
    position   bigint      not null default 0,
    updated_at timestamptz not null default now()
);
