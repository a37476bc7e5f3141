-- Stored events are never edited or removed. The privileges below stop ordinary roles,
-- including the owner; the triggers stop superusers too, who bypass privileges.
create function events_refuse_change() returns trigger
language plpgsql as $$
begin
    raise exception 'events are append-only: % on table % is not allowed', tg_op, tg_table_name
        using errcode = 'raise_exception',
              hint = 'append a compensating event instead of changing history';
end
$$;

create trigger events_refuse_update_delete
    before update or delete on events
    for each row execute function events_refuse_change();

create trigger events_refuse_truncate
    before truncate on events
    for each statement execute function events_refuse_change();

revoke update, delete, truncate on events from public;
revoke update, delete, truncate on events from current_user;
