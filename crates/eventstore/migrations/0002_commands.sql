-- Handled command ids and the outcome first returned for them, so a repeated command is
-- answered from here instead of appending twice. Written in the same transaction as the
-- command's events, so an outcome row exists exactly when its events do.
create table commands (
    command_id  uuid        primary key,
    fingerprint bytea,
    outcome     jsonb       not null,
    recorded_at timestamptz not null
);
