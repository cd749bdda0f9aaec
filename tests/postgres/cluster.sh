#!/bin/sh
# A throwaway PostgreSQL cluster for the tests: initdb in a temporary directory, a private
# port, no system service. `cluster.sh start DIR PORT` prints the URL to use; `cluster.sh stop
# DIR` stops it. PostgreSQL refuses to run as root, so as root it runs as the postgres user
# that Debian's package creates.
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
*) echo "usage: cluster.sh start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
