#!/bin/sh
# A throwaway PostgreSQL cluster for the tests: initdb in a temporary directory, a private
# port, no system service. `cluster.sh start DIR PORT` prints the URL to use; `cluster.sh stop
# DIR` stops it. PostgreSQL refuses to run as root, so as root it runs as the postgres user
# that Debian's package creates. `cluster.sh fresh URL` creates an empty database on the
# server URL names and prints its URL (every test server gets one of its own).
set -eu
cmd=$1; dir=$2; port=${3:-0}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "cluster.sh: PostgreSQL is not installed (apt install postgresql)" >&2; exit 1; }
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case $cmd in
start)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
  as_owner "$bin/initdb" -D "$dir/data" -U gatehouse --auth=trust --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1
  # fsync stays on: the tests check what a 202 promises.
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=64MB" start >/dev/null
  as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U gatehouse gatehouse
  echo "postgres://gatehouse@127.0.0.1:$port/gatehouse?sslmode=disable"
  ;;
stop)
  as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  ;;
fresh)
  url=$2
  name="gh_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
  "$bin/psql" "$url" -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE $name" >/dev/null
  echo "$url" | sed -E "s#^(postgres(ql)?://[^/]+/)[^?]*#\1$name#"
  ;;
*) echo "usage: cluster.sh start DIR PORT | stop DIR | fresh URL" >&2; exit 2 ;;
esac
