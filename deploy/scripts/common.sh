# Helpers the service scripts share; sourced, not run. They expect $dir
# (where the services keep their data and logs).

wait_for() { # name, tries, command...
  local name=$1 tries=$2; shift 2
  for _ in $(seq "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$name did not become ready; see the logs under $dir" >&2
  return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Starts clickhouse-server on the config in DIR/config.xml in the
# background (as the clickhouse user when run as root, as the package
# expects) and writes its pid to PIDFILE.
start_clickhouse_in() { # dir, pidfile
  local d=$1 run=()
  if [ "$(id -u)" -eq 0 ] && id clickhouse >/dev/null 2>&1; then
    chown -R clickhouse:clickhouse "$d"
    run=(runuser -u clickhouse --)
  fi
  "${run[@]}" /usr/sbin/clickhouse-server --config-file="$d/config.xml" >"$d/log/stdout.log" 2>&1 &
  echo $! > "$2"
}
