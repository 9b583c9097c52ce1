#!/usr/bin/env bash
# A real standalone Apache Flink 1.20 session cluster (one JobManager JVM, one
# TaskManager JVM) on loopback, for testing the Beam job against real Flink.
#
# The Flink distribution comes from PyPI (apache-flink-libraries ships lib/ and
# opt/, apache-flink ships bin/ and conf/), installed into a virtualenv of its
# own: apache-flink pins an old apache-beam that must never meet the project's.
#
# Usage: ci/flink/cluster.sh {install|start|stop|status|smoke OUT_DIR|home}
#   install  create the venv + our conf dir (idempotent; prints FLINK_HOME)
#   start    install if needed, start JM + TM, wait until a TaskManager is
#            registered with the REST API, print the REST address (host:port)
#   stop     stop both JVMs (no error when nothing runs)
#   status   print the REST /taskmanagers answer, exit 1 when not reachable
#   smoke D  run a tiny plain-Flink job on the running cluster, output in D
#   home     print FLINK_HOME
# Env:
#   TFCASCADE_CACHE      cache root (default: $HOME/.cache/tfcascade)
#   FLINK_PY_VERSION     PyPI version of apache-flink[-libraries] (default 1.20.5)
#   FLINK_REST_PORT      REST/web port (default 8081)
#   FLINK_RPC_PORT       JobManager RPC port (default 6123)
#   FLINK_STATE_DIR      conf/logs/pids/tmp of this cluster
#                        (default: $TFCASCADE_CACHE/flink-cluster-$FLINK_REST_PORT)
#   FLINK_START_TIMEOUT  seconds to wait for a registered TaskManager (default 120)
set -euo pipefail

CACHE="${TFCASCADE_CACHE:-$HOME/.cache/tfcascade}"
FLINK_PY_VERSION="${FLINK_PY_VERSION:-1.20.5}"
VENV="$CACHE/flink-venv-$FLINK_PY_VERSION"
REST_PORT="${FLINK_REST_PORT:-8081}"
RPC_PORT="${FLINK_RPC_PORT:-6123}"
STATE="${FLINK_STATE_DIR:-$CACHE/flink-cluster-$REST_PORT}"
START_TIMEOUT="${FLINK_START_TIMEOUT:-120}"
PYTHON="${FLINK_VENV_PYTHON:-python3}"

log() { echo "cluster.sh: $*" >&2; }

flink_home() {
  # pyflink lives in site-packages/pyflink; its python minor is whatever the
  # venv was built with, so glob instead of hard-coding python3.X.
  local d
  for d in "$VENV"/lib/python3*/site-packages/pyflink; do
    if [[ -x "$d/bin/jobmanager.sh" && -f "$d/lib/flink-dist-$FLINK_PY_VERSION.jar" ]]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

install() {
  if ! flink_home >/dev/null; then
    command -v java >/dev/null || { log "java not found (Flink needs a JDK 11/17)"; exit 2; }
    log "installing apache-flink $FLINK_PY_VERSION into $VENV"
    mkdir -p "$CACHE"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    # --no-deps: we only need the JVM distribution (jars + bin/ scripts). The
    # Python deps are for PyFlink jobs and would pull apache-beam 2.5x, pandas,
    # pyarrow... (minutes of install for nothing we run).
    "$VENV/bin/pip" install -q --no-deps \
      "apache-flink-libraries==$FLINK_PY_VERSION" "apache-flink==$FLINK_PY_VERSION" >&2
  fi
  local home
  home="$(flink_home)" || { log "no Flink distribution found under $VENV"; exit 2; }
  write_conf "$home"
  echo "$home"
}

write_conf() {
  local home="$1"
  mkdir -p "$STATE/conf" "$STATE/log" "$STATE/pid" "$STATE/tmp"
  # log4j files come from the distribution; config.yaml is ours (the shipped one
  # binds to "localhost", uses 1 slot and ~3.3 GB of JVMs).
  cp "$home"/conf/log4j*.properties "$home"/conf/logback*.xml "$STATE/conf/"
  # Flink 1.20 reads conf/config.yaml (standard YAML; flattened keys allowed).
  cat >"$STATE/conf/config.yaml" <<EOF
# Written by ci/flink/cluster.sh. Everything binds to loopback only.
jobmanager.rpc.address: 127.0.0.1
jobmanager.rpc.port: $RPC_PORT
jobmanager.bind-host: 127.0.0.1
taskmanager.bind-host: 127.0.0.1
taskmanager.host: 127.0.0.1
rest.address: 127.0.0.1
rest.bind-address: 127.0.0.1
rest.port: $REST_PORT
# Sized for a 2-core / 24 GiB shared machine: one TM with 2 slots so that
# --parallelism=2 really runs two subtasks in parallel.
taskmanager.numberOfTaskSlots: 2
parallelism.default: 1
jobmanager.memory.process.size: 1024m
taskmanager.memory.process.size: 1536m
# Beam's portable operators keep their data on the heap / in the SDK harness,
# not in Flink managed memory: give the TM heap the room instead.
taskmanager.memory.managed.fraction: 0.1
jobmanager.execution.failover-strategy: region
io.tmp.dirs: $STATE/tmp
# Java 17: Flink's (and Beam's) reflection needs these packages opened.
env.java.opts.all: --add-exports=java.base/sun.net.util=ALL-UNNAMED --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED --add-opens=java.base/java.text=ALL-UNNAMED --add-opens=java.base/java.time=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED
EOF
  printf '127.0.0.1:%s\n' "$REST_PORT" >"$STATE/conf/masters"
  printf '127.0.0.1\n' >"$STATE/conf/workers"
}

# The daemon scripts read these; pointing them at $STATE keeps logs and pid
# files out of site-packages and /tmp, and lets two clusters (different
# FLINK_REST_PORT) coexist.
flink_env() {
  export FLINK_CONF_DIR="$STATE/conf" FLINK_LOG_DIR="$STATE/log" FLINK_PID_DIR="$STATE/pid"
}

rest_taskmanagers() {
  curl -fsS --max-time 2 "http://127.0.0.1:$REST_PORT/taskmanagers" 2>/dev/null
}

start() {
  local home
  home="$(install)"
  flink_env
  if rest_taskmanagers | grep -q '"id"'; then
    log "a cluster already answers on 127.0.0.1:$REST_PORT; reusing it"
    echo "127.0.0.1:$REST_PORT"
    return 0
  fi
  log "starting JobManager + TaskManager (state: $STATE)"
  # Both launch scripts spend ~10 s in JVMs that parse the config; run them
  # side by side (the TM retries until the JM's RPC port is up).
  "$home/bin/jobmanager.sh" start >&2 &
  local jm=$!
  "$home/bin/taskmanager.sh" start >&2
  wait "$jm"
  local deadline=$((SECONDS + START_TIMEOUT))
  until rest_taskmanagers | grep -q '"id"'; do
    if ((SECONDS >= deadline)); then
      log "no TaskManager registered after ${START_TIMEOUT}s; logs in $STATE/log:"
      tail -n 30 "$STATE"/log/*.log >&2 || true
      stop
      exit 1
    fi
    sleep 1
  done
  log "up: http://127.0.0.1:$REST_PORT (TaskManager registered)"
  echo "127.0.0.1:$REST_PORT"
}

stop() {
  # Stop by the pids the daemon scripts recorded: `taskmanager.sh stop` does the
  # same kill but first spends ~6 s per script parsing the config in a JVM.
  local f pid pids=() deadline
  for f in "$STATE"/pid/*.pid; do
    [[ -f "$f" ]] || continue
    while read -r pid; do
      # Only signal a pid that is still one of our Flink JVMs (pids recycle).
      if [[ -n "$pid" ]] && ps -o args= -p "$pid" 2>/dev/null | grep -q "$STATE/conf"; then
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
      fi
    done <"$f"
    rm -f "$f"
  done
  deadline=$((SECONDS + 30))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS >= deadline)); then
        log "pid $pid still alive after 30s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
  done
  log "stopped ${#pids[@]} Flink JVM(s)"
}

# Submit a tiny plain-Flink batch job (ci/flink/smoke/FlinkSmoke.java) to the
# running cluster and check its output: proves the cluster really executes
# jobs, independently of Beam's job-server jar.
smoke() {
  local out="${1:?usage: $0 smoke OUT_DIR}" n=1000 home jar here
  home="$(install)"
  flink_env
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  # Built once per Flink version into the cache (javac costs ~5 s).
  jar="$CACHE/flink-smoke-$FLINK_PY_VERSION.jar"
  if [[ ! -s "$jar" || "$here/smoke/FlinkSmoke.java" -nt "$jar" ]]; then
    local build="$STATE/smoke-build"
    rm -rf "$build" && mkdir -p "$build"
    javac -nowarn -d "$build" -cp "$home/lib/*" "$here/smoke/FlinkSmoke.java" >&2
    jar --create --file "$jar" --main-class FlinkSmoke -C "$build" . >&2
  fi
  "$home/bin/flink" run -m "127.0.0.1:$REST_PORT" -p 2 "$jar" "$out" "$n" >&2
  local got
  got="$(cat "$out"/* | wc -l)"
  if [[ "$got" != "$n" ]]; then
    log "smoke: expected $n lines in $out, got $got"
    exit 1
  fi
  log "smoke: OK ($got lines from $(ls "$out" | wc -l) parallel writers)"
}

status() {
  rest_taskmanagers || { log "no cluster on 127.0.0.1:$REST_PORT"; return 1; }
  echo
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  smoke) shift; smoke "$@" ;;
  status) status ;;
  home) flink_home || { log "not installed (run: $0 install)"; exit 1; } ;;
  *) echo "usage: $0 {install|start|stop|status|smoke OUT_DIR|home}" >&2; exit 2 ;;
esac
