-- Business time, beside the transaction time recorded_at. Added without a default so that the
-- existing rows are not rewritten: a null reads as recorded_at, which is what those events'
-- business time was. Every new row carries it explicitly.
alter table events add column occurred_at timestamptz;
