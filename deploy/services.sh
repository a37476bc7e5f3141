#!/usr/bin/env bash
# Makes sure PostgreSQL and NATS with JetStream answer at DATABASE_URL and NATS_URL.
#
#   bash deploy/services.sh [up]    reuse, start or install the services (the default)
#   bash deploy/services.sh stop    stop the private instances this script started
#   bash deploy/services.sh clean   stop them and delete their data
#   source deploy/services.sh       like `up`, and export DATABASE_URL and NATS_URL
#
# For each service, in order: a server that already answers is reused; a Debian system
# service on that port is started (as root); a missing package is installed with apt-get
# (as root); otherwise a private instance is started on loopback under target/services/,
# listening on the URL's port. When none of this is possible the script stops and prints
# the command to run. `stop` and `clean` only ever touch the private instances.
#
# Defaults (the same as the dealstream binary's):
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/dealstream
#   NATS_URL=nats://127.0.0.1:4222
# Only URL-form connection strings are understood here, with a host name or address.

_dealstream_services() (
    set -euo pipefail

    local -r default_database_url="postgres://postgres@127.0.0.1:5432/dealstream"
    local -r default_nats_url="nats://127.0.0.1:4222"
    local -r ready_timeout_seconds=60

    local repo_root services_root fallback_root
    repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    services_root="$repo_root/target/services"
    # Used when the unprivileged user that must own a private Postgres cannot reach the
    # repository (a clone under /root, for example).
    fallback_root="${TMPDIR:-/tmp}/dealstream-services"

    local database_url="${DATABASE_URL:-$default_database_url}"
    local nats_url="${NATS_URL:-$default_nats_url}"
    local apt_updated=false installed_postgres_now=false

    say() { printf 'services: %s\n' "$*" >&2; }
    die() {
        printf 'services: error: %s\n' "$*" >&2
        exit 1
    }
    is_root() { [[ "$(id -u)" == 0 ]]; }
    can_apt() { is_root && command -v apt-get >/dev/null 2>&1; }
    is_loopback() { [[ "$1" == localhost || "$1" == 127.* || "$1" == ::1 ]]; }
    percent_decode() { printf '%b' "${1//%/\\x}"; }

    apt_install() {
        if [[ "$apt_updated" == false ]]; then
            say "apt-get update"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null ||
                die "apt-get update failed; fix the package sources, then run: apt-get update"
            apt_updated=true
        fi
        say "apt-get install $*"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
            </dev/null >/dev/null ||
            die "could not install $*; run: apt-get install -y $* (on Ubuntu, enable the universe component for nats-server)"
    }

    # Succeeds when something accepts TCP connections on host:port within two seconds.
    tcp_open() {
        # shellcheck disable=SC2016 # $0 and $1 are expanded by the inner bash.
        timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
    }

    # ---------------------------------------------------------------- PostgreSQL

    local pg_prefix pg_query pg_user pg_host pg_port pg_database
    parse_database_url() {
        local url="$1" rest authority userinfo hostport
        [[ "$url" =~ ^postgres(ql)?:// ]] ||
            die "DATABASE_URL must look like postgres://user[:password]@host[:port]/database, got a different form"
        rest="${url#*://}"
        pg_query=""
        if [[ "$rest" == *\?* ]]; then
            pg_query="?${rest#*\?}"
            rest="${rest%%\?*}"
        fi
        authority="${rest%%/*}"
        pg_database="${rest#"$authority"}"
        pg_database="$(percent_decode "${pg_database#/}")"
        userinfo=""
        hostport="$authority"
        if [[ "$authority" == *@* ]]; then
            userinfo="${authority%@*}"
            hostport="${authority##*@}"
        fi
        pg_user="$(percent_decode "${userinfo%%:*}")"
        if [[ "$hostport" == \[* ]]; then
            pg_host="${hostport#\[}"
            pg_host="${pg_host%%\]*}"
            pg_port="${hostport##*\]}"
            pg_port="${pg_port#:}"
        else
            pg_host="${hostport%%:*}"
            pg_port=""
            [[ "$hostport" == *:* ]] && pg_port="${hostport##*:}"
        fi
        pg_port="${pg_port:-5432}"
        # libpq's defaults: the operating-system user, and a database named like the user.
        pg_user="${pg_user:-$(id -un)}"
        pg_database="${pg_database:-$pg_user}"
        [[ -n "$pg_host" ]] || die "DATABASE_URL must name a host (unix sockets are not handled here)"
        [[ "$pg_port" =~ ^[0-9]+$ ]] || die "DATABASE_URL has a bad port: $pg_port"
        pg_prefix="${url%%://*}://$authority"
    }

    # Puts the newest installed server's programs (initdb, pg_ctl, ...) on PATH; Debian
    # keeps them out of /usr/bin.
    find_postgres_programs() {
        local bin_dir
        bin_dir="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
            sort -V | tail -n 1)"
        [[ -n "$bin_dir" ]] && PATH="$bin_dir:$PATH"
        command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
    }

    postgres_ready() {
        if command -v pg_isready >/dev/null 2>&1; then
            pg_isready -q -h "$pg_host" -p "$pg_port" -t 2
        else
            tcp_open "$pg_host" "$pg_port"
        fi
    }

    wait_for_postgres() {
        local waited=0
        until postgres_ready; do
            ((waited >= ready_timeout_seconds)) && return 1
            sleep 1
            waited=$((waited + 1))
        done
    }

    # The Debian cluster (version and name) configured for our port, if there is one.
    system_cluster_for_port() {
        command -v pg_lsclusters >/dev/null 2>&1 || return 1
        pg_lsclusters -h 2>/dev/null | awk -v port="$pg_port" '$3 == port { print $1, $2; exit }' |
            grep .
    }

    start_system_postgres() {
        local cluster version name
        is_root || return 1
        cluster="$(system_cluster_for_port)" || return 1
        read -r version name <<<"$cluster"
        say "postgres: starting the system cluster $version/$name on port $pg_port"
        pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start ||
            { say "postgres: the system cluster did not start"; return 1; }
        wait_for_postgres
    }

    # Runs a command as the owner of a private Postgres: initdb and pg_ctl refuse root.
    local pg_os_user
    as_pg_os_user() {
        if is_root; then
            runuser -u "$pg_os_user" -- "$@"
        else
            "$@"
        fi
    }

    start_private_postgres() {
        local root="$services_root" dir data listen
        pg_os_user="$(id -un)"
        if is_root; then
            getent passwd postgres >/dev/null ||
                die "postgres: cannot run a private instance as root and there is no 'postgres' user; run: useradd --system postgres"
            pg_os_user=postgres
            mkdir -p "$root"
            if ! runuser -u postgres -- test -x "$root"; then
                say "postgres: user postgres cannot reach $root, using $fallback_root"
                root="$fallback_root"
            fi
        fi
        dir="$root/postgres-$pg_port"
        data="$dir/data"
        mkdir -p "$dir"
        is_root && chown "$pg_os_user" "$dir" && chmod 700 "$dir"
        if [[ ! -s "$data/PG_VERSION" ]]; then
            say "postgres: creating a private instance in $data (trust auth, superuser $pg_user)"
            as_pg_os_user initdb -D "$data" -U "$pg_user" -A trust -E UTF8 --no-locale \
                >"$dir/initdb.log" 2>&1 ||
                die "postgres: initdb failed, see $dir/initdb.log"
        fi
        listen="$pg_host"
        [[ "$pg_host" == localhost ]] && listen="127.0.0.1"
        say "postgres: starting the private instance on $pg_host:$pg_port (log $dir/postgres.log)"
        as_pg_os_user pg_ctl -D "$data" -l "$dir/postgres.log" -w -t "$ready_timeout_seconds" \
            -o "-p $pg_port -c listen_addresses='$listen' -k '$dir'" start >/dev/null ||
            die "postgres: the private instance did not start, see $dir/postgres.log"
        wait_for_postgres || die "postgres: no answer on $pg_host:$pg_port after ${ready_timeout_seconds}s"
    }

    psql_maintenance() {
        # -w: never prompt for a password, which would hang a run without a terminal.
        psql "$pg_prefix/postgres$pg_query" -X -q -w -v ON_ERROR_STOP=1 "$@"
    }

    # A freshly installed Debian cluster asks for passwords on TCP, which the default
    # URL does not carry. Only there (or in CI) do we open loopback with trust auth and
    # create the role: on a cluster someone configured, we print the fix instead.
    fix_system_cluster_access() {
        local error="$1" cluster version name hba
        cluster="$(system_cluster_for_port)" ||
            die "postgres: cannot log in as $pg_user: $error"
        read -r version name <<<"$cluster"
        hba="/etc/postgresql/$version/$name/pg_hba.conf"
        if ! is_root || ! is_loopback "$pg_host" ||
            [[ "$installed_postgres_now" == false && "${CI:-}" != true ]]; then
            say "postgres: cannot log in as $pg_user: $error"
            if [[ "$error" == *"does not exist"* ]]; then
                die "create the role, e.g. run: sudo -u postgres createuser --port $pg_port --superuser $pg_user"
            fi
            die "either put the password in DATABASE_URL, or allow local logins, e.g. run as root: sed -i '1i host all all 127.0.0.1/32 trust' $hba && pg_ctlcluster $version $name reload"
        fi
        if ! grep -q 'added by dealstream deploy/services.sh' "$hba"; then
            say "postgres: allowing trusted logins from loopback in $hba (new cluster or CI)"
            sed -i '1i # added by dealstream deploy/services.sh: trust loopback for local development\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
            pg_ctlcluster --skip-systemctl-redirect "$version" "$name" reload
        fi
        if [[ "$error" == *"does not exist"* ]]; then
            say "postgres: creating role $pg_user"
            runuser -u postgres -- psql -X -q -p "$pg_port" -v ON_ERROR_STOP=1 -v role="$pg_user" \
                <<<'CREATE ROLE :"role" LOGIN SUPERUSER;'
        fi
    }

    ensure_database() {
        local error exists
        if ! error="$(psql_maintenance -c 'SELECT 1' 2>&1 >/dev/null)"; then
            fix_system_cluster_access "$error"
            error="$(psql_maintenance -c 'SELECT 1' 2>&1 >/dev/null)" ||
                die "postgres: still cannot log in: $error"
        fi
        exists="$(psql_maintenance -At -v name="$pg_database" \
            <<<"SELECT 1 FROM pg_database WHERE datname = :'name';")"
        if [[ "$exists" == 1 ]]; then
            say "postgres: database $pg_database exists"
            return
        fi
        say "postgres: creating database $pg_database"
        # A concurrent run may create it first; that is success too.
        if ! error="$(psql_maintenance -v name="$pg_database" <<<'CREATE DATABASE :"name";' 2>&1)" &&
            [[ "$error" != *"already exists"* ]]; then
            die "postgres: cannot create database $pg_database: $error"
        fi
    }

    up_postgres() {
        parse_database_url "$database_url"
        find_postgres_programs || true
        if postgres_ready; then
            say "postgres: reusing the server at $pg_host:$pg_port"
        else
            is_loopback "$pg_host" ||
                die "postgres: nothing answers at $pg_host:$pg_port and it is not this machine; start it or change DATABASE_URL"
            if ! find_postgres_programs; then
                can_apt ||
                    die "postgres: not installed; run: sudo apt-get install -y postgresql (or point DATABASE_URL at a running server)"
                apt_install postgresql
                installed_postgres_now=true
                find_postgres_programs || die "postgres: installed, but initdb and pg_ctl are missing"
            fi
            if postgres_ready; then
                say "postgres: the newly installed server answers at $pg_host:$pg_port"
            elif ! start_system_postgres; then
                start_private_postgres
            fi
        fi
        if ! command -v psql >/dev/null 2>&1; then
            can_apt || die "postgres: psql is missing; run: sudo apt-get install -y postgresql-client"
            apt_install postgresql-client
        fi
        ensure_database
    }

    # ---------------------------------------------------------------------- NATS

    local nats_host nats_port
    parse_nats_url() {
        local first="${1%%,*}" hostport
        first="${first#*://}"
        first="${first%%/*}"
        hostport="${first##*@}"
        if [[ "$hostport" == \[* ]]; then
            nats_host="${hostport#\[}"
            nats_host="${nats_host%%\]*}"
            nats_port="${hostport##*\]}"
            nats_port="${nats_port#:}"
        else
            nats_host="${hostport%%:*}"
            nats_port=""
            [[ "$hostport" == *:* ]] && nats_port="${hostport##*:}"
        fi
        nats_port="${nats_port:-4222}"
        [[ -n "$nats_host" ]] || die "NATS_URL must name a host"
        [[ "$nats_port" =~ ^[0-9]+$ ]] || die "NATS_URL has a bad port: $nats_port"
    }

    # The INFO line a NATS server sends first on every connection.
    nats_info() {
        # shellcheck disable=SC2016 # $0 and $1 are expanded by the inner bash.
        timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && IFS= read -r -t 2 line <&3 &&
            printf "%s\n" "$line"' "$nats_host" "$nats_port" 2>/dev/null
    }

    # Waits until the server answers and says JetStream is on.
    wait_for_nats() {
        local waited=0
        until nats_info | grep -q '"jetstream":true'; do
            ((waited >= ready_timeout_seconds)) && return 1
            sleep 1
            waited=$((waited + 1))
        done
    }

    start_system_nats() {
        is_root && [[ "$nats_port" == 4222 && -x /usr/sbin/nats-server ]] || return 1
        command -v start-stop-daemon >/dev/null 2>&1 || return 1
        say "nats: starting the system nats-server on port 4222 with JetStream"
        mkdir -p /var/lib/nats-server
        # The pid file scopes --oknodo to this server, not to any nats-server process.
        start-stop-daemon --start --oknodo --background \
            --pidfile /run/nats-server-dealstream.pid --make-pidfile \
            --exec /usr/sbin/nats-server -- \
            -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log ||
            return 1
        wait_for_nats || { say "nats: the system nats-server did not come up"; return 1; }
    }

    start_private_nats() {
        local dir="$services_root/nats-$nats_port" listen="$nats_host"
        [[ "$nats_host" == localhost ]] && listen="127.0.0.1"
        mkdir -p "$dir"
        say "nats: starting a private nats-server on $nats_host:$nats_port (data and log in $dir)"
        setsid nohup nats-server -a "$listen" -p "$nats_port" -js -sd "$dir/data" \
            -P "$dir/nats.pid" -l "$dir/nats.log" </dev/null >/dev/null 2>&1 &
        wait_for_nats ||
            die "nats: no JetStream answer on $nats_host:$nats_port after ${ready_timeout_seconds}s, see $dir/nats.log"
    }

    up_nats() {
        local info
        parse_nats_url "$nats_url"
        if info="$(nats_info)" && [[ "$info" == INFO* ]]; then
            case "$info" in
            *'"jetstream":true'*) say "nats: reusing the server at $nats_host:$nats_port (JetStream on)" ;;
            *'"jetstream":'*) die "nats: the server at $nats_host:$nats_port runs without JetStream; restart it with -js" ;;
            *) say "nats: reusing the server at $nats_host:$nats_port (it does not say whether JetStream is on)" ;;
            esac
            return
        fi
        tcp_open "$nats_host" "$nats_port" &&
            die "nats: something that is not NATS listens on $nats_host:$nats_port"
        is_loopback "$nats_host" ||
            die "nats: nothing answers at $nats_host:$nats_port and it is not this machine; start it or change NATS_URL"
        if ! command -v nats-server >/dev/null 2>&1 && [[ ! -x /usr/sbin/nats-server ]]; then
            can_apt ||
                die "nats: not installed; run: sudo apt-get install -y nats-server (or get it from https://github.com/nats-io/nats-server/releases)"
            apt_install nats-server
        fi
        [[ -x /usr/sbin/nats-server ]] && PATH="$PATH:/usr/sbin"
        if ! start_system_nats; then
            start_private_nats
        fi
    }

    # ------------------------------------------------------------ stop and clean

    stop_private() {
        local root data pid_file pid owner
        for root in "$services_root" "$fallback_root"; do
            for data in "$root"/postgres-*/data; do
                [[ -f "$data/postmaster.pid" ]] || continue
                find_postgres_programs || die "postgres: pg_ctl not found, cannot stop $data"
                owner="$(stat -c %U "$data")"
                say "postgres: stopping the private instance in $data"
                if is_root; then
                    runuser -u "$owner" -- pg_ctl -D "$data" -m fast -w stop >/dev/null
                else
                    pg_ctl -D "$data" -m fast -w stop >/dev/null
                fi
            done
            for pid_file in "$root"/nats-*/nats.pid; do
                [[ -f "$pid_file" ]] || continue
                pid="$(cat "$pid_file")"
                if kill -0 "$pid" 2>/dev/null; then
                    say "nats: stopping the private nats-server (pid $pid)"
                    kill -TERM "$pid"
                    for _ in {1..50}; do
                        kill -0 "$pid" 2>/dev/null || break
                        sleep 0.2
                    done
                fi
                rm -f "$pid_file"
            done
        done
    }

    clean_private() {
        stop_private
        local root
        for root in "$services_root" "$fallback_root"; do
            if [[ -d "$root" ]]; then
                say "removing $root"
                rm -rf "$root"
            fi
        done
    }

    case "${1:-up}" in
    up)
        up_postgres
        up_nats
        ;;
    stop) stop_private ;;
    clean) clean_private ;;
    *) die "unknown command '$1'; use up, stop or clean" ;;
    esac
)

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    # Sourced: keep the caller's shell options, export what the programs will read.
    export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/dealstream}"
    export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
    _dealstream_services up
else
    set -euo pipefail
    _dealstream_services "$@"
fi
