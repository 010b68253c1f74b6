#!/usr/bin/env bash
# Runs a throwaway database server in the foreground, for tests, the demo, the bench and the
# golden-capture recorder: `db-server.sh postgres|mariadb|redis DATADIR PORT`.
#
# The data directory is created (and initialized) when empty; the server listens on 127.0.0.1:PORT
# only, with no systemd, no system-wide configuration and durability off (fsync, appendonly),
# and replaces this shell (exec), so the caller's process is the server: killing it stops it.
# Each has user `test` (password `test`, trusted by PostgreSQL) and a database `shop`.
# DB_TLS=1: PostgreSQL also accepts TLS, with a self-signed certificate made in DATADIR.
set -euo pipefail

kind="${1:?usage: db-server.sh postgres|mariadb|redis DATADIR PORT}"
dir="${2:?data directory}"
port="${3:?port}"
mkdir -p "$dir"

case "$kind" in
postgres)
    bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    # PostgreSQL refuses to run as root: its files and process belong to `postgres`.
    chown postgres: "$dir"
    as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    if [ ! -f "$dir/PG_VERSION" ]; then
        # initdb wants an empty directory: its log is kept in a variable, shown if it fails.
        log=$("${as_postgres[@]}" "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 2>&1) \
            || { echo "$log" >&2; exit 1; }
        log=$(printf '%s\n' "CREATE USER test PASSWORD 'test' SUPERUSER;" \
            "CREATE DATABASE shop OWNER test;" |
            "${as_postgres[@]}" "$bin/postgres" --single -D "$dir" postgres 2>&1) \
            || { echo "$log" >&2; exit 1; }
    fi
    tls=()
    if [ "${DB_TLS:-}" = 1 ]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
            -subj /CN=127.0.0.1 -keyout "$dir/server.key" -out "$dir/server.crt" 2>/dev/null
        chown postgres: "$dir/server.key" "$dir/server.crt"
        chmod 600 "$dir/server.key"
        tls=(-c ssl=on -c "ssl_cert_file=$dir/server.crt" -c "ssl_key_file=$dir/server.key")
    fi
    exec "${as_postgres[@]}" "$bin/postgres" -D "$dir" -h 127.0.0.1 -p "$port" -k "$dir" \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
        -c max_connections=200 -c logging_collector=off "${tls[@]}"
    ;;
mariadb)
    if [ ! -d "$dir/mysql" ]; then
        mariadb-install-db --no-defaults --datadir="$dir" --user=root \
            --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1
    fi
    cat >"$dir/init.sql" <<'EOF'
CREATE USER IF NOT EXISTS 'test'@'%' IDENTIFIED BY 'test';
GRANT ALL ON *.* TO 'test'@'%';
CREATE DATABASE IF NOT EXISTS shop;
CREATE DATABASE IF NOT EXISTS other;
EOF
    exec mariadbd --no-defaults --datadir="$dir" --socket="$dir/mariadb.sock" \
        --pid-file="$dir/mariadb.pid" --port="$port" --bind-address=127.0.0.1 --user=root \
        --skip-name-resolve --init-file="$dir/init.sql" --innodb-flush-log-at-trx-commit=0 \
        --skip-log-bin --max-connections=200
    ;;
redis)
    exec redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no \
        --protected-mode no --daemonize no
    ;;
*)
    echo "db-server.sh: unknown server $kind" >&2
    exit 2
    ;;
esac
