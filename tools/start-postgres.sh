#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for otpfast's tests (never the system cluster).
#
#   tools/start-postgres.sh DIR [--port PORT]   initdb into DIR/data (once), start the server
#                                               on 127.0.0.1:PORT and the UNIX socket dir
#                                               DIR/socket, print the test database's URL
#   tools/start-postgres.sh --stop DIR          stop it (DIR is kept; rm -rf it afterwards)
#
# Idempotent: run again on a running cluster, it prints the URL again. Trust authentication
# for loopback and the socket only (a test cluster: never point it at real data). As root the
# server runs as the `postgres` user (initdb refuses root); DIR is chowned to that user, so
# every directory above DIR must be traversable by it (e.g. a directory under /tmp).
# Binaries: $PG_BINDIR, else /usr/lib/postgresql/15/bin, else `pg_config --bindir`.
set -euo pipefail

ROLE=otpfast
DATABASE=otpfast_test

usage() {
    echo "usage: $0 DIR [--port PORT] | $0 --stop DIR" >&2
    exit 2
}

die() {
    echo "start-postgres: $*" >&2
    exit 1
}

find_bindir() {
    if [ -n "${PG_BINDIR:-}" ]; then
        echo "$PG_BINDIR"
    elif [ -x /usr/lib/postgresql/15/bin/initdb ]; then
        echo /usr/lib/postgresql/15/bin
    elif command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
    else
        die "no PostgreSQL server binaries (install postgresql-15 or set PG_BINDIR)"
    fi
}

# Run a command as the cluster's owner: root hands over to `postgres`, others run as themselves.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop_cluster() {
    local dir=$1
    [ -f "$dir/data/PG_VERSION" ] || die "no cluster in $dir"
    dir=$(cd "$dir" && pwd)
    local bindir
    bindir=$(find_bindir)
    if as_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null
    fi
}

[ $# -ge 1 ] || usage
if [ "$1" = "--stop" ]; then
    [ $# -eq 2 ] || usage
    stop_cluster "$2"
    exit 0
fi

DIR=$1
shift
PORT=
PORT_GIVEN=0
while [ $# -gt 0 ]; do
    case $1 in
        --port) [ $# -ge 2 ] || usage; PORT=$2; shift 2 ;;
        *) usage ;;
    esac
done
[ -z "$PORT" ] || [[ "$PORT" =~ ^[0-9]+$ ]] || die "--port must be a number"

BINDIR=$(find_bindir)
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
DATA=$DIR/data
SOCKET=$DIR/socket
# libpq's defaults must not lead anything below to the system cluster
unset PGHOST PGPORT PGDATABASE PGUSER PGPASSWORD PGSERVICE PGDATA

if [ "$(id -u)" = 0 ]; then
    getent passwd postgres >/dev/null || die "running as root needs a 'postgres' user"
    chown postgres: "$DIR"
    runuser -u postgres -- test -w "$DIR" \
        || die "$DIR is not reachable by the postgres user (use a directory under /tmp)"
fi

if [ ! -f "$DATA/PG_VERSION" ]; then
    as_owner mkdir -p "$SOCKET"
    as_owner "$BINDIR/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C \
        --no-sync --no-instructions >"$DIR/initdb.log" 2>&1 \
        || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    PORT_GIVEN=1
    [ -n "$PORT" ] || { PORT=$(free_port); PORT_GIVEN=0; }
    # loopback + socket only, trust (a throwaway test cluster); small and quick to start
    as_owner tee -a "$DATA/postgresql.conf" >/dev/null <<EOF

# --- otpfast test cluster (tools/start-postgres.sh) ---
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCKET'
max_connections = 200
shared_buffers = 64MB
logging_collector = off
EOF
    as_owner tee "$DATA/pg_hba.conf" >/dev/null <<EOF
local all all trust
host  all all 127.0.0.1/32 trust
EOF
    FRESH=1
else
    FRESH=0
    CONF_PORT=$(sed -n "s/^port = \([0-9]*\)$/\1/p" "$DATA/postgresql.conf" | tail -n 1)
    if [ -n "$PORT" ] && [ "$PORT" != "$CONF_PORT" ]; then
        die "the cluster in $DIR listens on port $CONF_PORT, not $PORT"
    fi
    PORT=$CONF_PORT
fi

start_server() {
    as_owner "$BINDIR/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 30 start >/dev/null 2>&1
}
if ! as_owner "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    tries=0
    until start_server; do
        tries=$((tries + 1))
        # a port picked by free_port can be taken before the server binds it: pick another
        if [ "$FRESH" = 1 ] && [ "$PORT_GIVEN" = 0 ] && [ "$tries" -lt 3 ] \
                && grep -q "could not bind\|Address already in use" "$DIR/server.log"; then
            PORT=$(free_port)
            as_owner sed -i "s/^port = [0-9]*$/port = $PORT/" "$DATA/postgresql.conf"
            continue
        fi
        tail -n 20 "$DIR/server.log" >&2
        die "the server did not start (log: $DIR/server.log)"
    done
fi

psql_() {
    as_owner "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET" -p "$PORT" -U postgres "$@"
}
if [ "$FRESH" = 1 ] || [ -z "$(psql_ -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")" ]; then
    psql_ -d postgres -c "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') THEN
            CREATE ROLE $ROLE LOGIN CREATEDB;
        END IF; END \$\$;"
    psql_ -d postgres -c "CREATE DATABASE $DATABASE OWNER $ROLE"
fi

echo "postgresql://$ROLE@127.0.0.1:$PORT/$DATABASE"
