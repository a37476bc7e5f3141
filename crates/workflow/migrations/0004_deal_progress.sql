-- The last stream version of each deal the consumer has handled. One deal's events are handled
-- in stream order, under this row's lock, whatever the order and the instance they are
-- delivered to: an event whose predecessors are not handled yet has them handled first (read
-- from the store), and an event at or below it is a redelivery with nothing left to do.
alter table workflow_deals add column handled_version bigint not null default 0;
-- Deals planned before this column existed had their events handled up to the planned version.
update workflow_deals set handled_version = planned_version;
