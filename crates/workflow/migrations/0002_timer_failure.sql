-- Why a timer was given up on without firing (the deal refused it, or firing can never succeed,
-- such as an unreadable stream); null when it fired. Such a timer is marked fired_at all the
-- same, so it is no longer claimed and cannot hold back the timers due after it.
alter table workflow_timers add column failure text;
