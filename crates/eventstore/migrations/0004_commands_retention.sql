-- Handled command ids are kept for a retention period, not forever: EventStore::prune_commands
-- deletes the oldest in small batches by this index. Events never depend on these rows.
create index commands_recorded_at on commands (recorded_at);
