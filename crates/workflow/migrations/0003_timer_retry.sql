-- A timer whose firing failed for a reason that can pass (the store unavailable, an unexpected
-- database error, an event of a newer schema version before this build is upgraded) stays
-- pending and is retried with backoff: `attempts` counts the failed tries and `retry_at` is the
-- earliest time it may be claimed again (null: at its due time). `failure` holds the last
-- reason. Waiting per timer keeps one failing timer from being claimed first again and again.
alter table workflow_timers
    add column attempts integer not null default 0,
    add column retry_at timestamptz;
drop index workflow_timers_pending;
create index workflow_timers_pending on workflow_timers ((coalesce(retry_at, due_at)))
    where fired_at is null;
