-- Bearer tokens of the HTTP API. Only a hash of each token is kept: whoever reads this table
-- (a backup, a replica, the service's own role) cannot present a token from it.
create table api_tokens (
    id uuid primary key,
    actor text not null check (length(actor) between 1 and 200),
    role text not null check (role in ('viewer', 'rep', 'manager', 'admin')),
    token_hash bytea not null unique check (length(token_hash) = 32),
    created_at timestamptz not null default now(),
    expires_at timestamptz,
    revoked_at timestamptz
);
