#!/usr/bin/env bash
# A real standalone Apache Spark cluster on loopback: one master and (by
# default) two workers, each worker offering 1 core, for the Spark engine's
# tests (issue 11). Spark comes from the project's venv: the `spark` extra
# (pip install -c constraints.txt -e '.[spark]') installs pyspark, whose
# package ships bin/spark-class and jars/. Needs Java 17.
#
# Usage: ci/spark/cluster.sh {start|stop|status|env}
#   start   start the master, then the workers; wait until every worker is
#           registered ALIVE with the master; print the master URL
#           (spark://127.0.0.1:PORT) on stdout. Idempotent: daemons already
#           running (by their pid files) are kept, only missing ones start.
#   stop    stop the workers (and the executors + Python workers they
#           launched), then the master; remove the pid files. No error when
#           nothing runs.
#   status  print the master URL, its web UI and the workers; exit 1 when the
#           master does not answer.
#   env     print `export ...` lines for a driver/spark-submit that uses this
#           cluster: eval "$(ci/spark/cluster.sh env)"
# Env (all optional):
#   TFCASCADE_SPARK_STATE              conf/logs/pids/work dirs
#                                      (default /tmp/tfcascade-spark)
#   TFCASCADE_SPARK_MASTER_PORT        master RPC port       (default 17077)
#   TFCASCADE_SPARK_MASTER_WEBUI_PORT  master web UI + /json (default 18180)
#   TFCASCADE_SPARK_WORKER_PORTS       one RPC port per worker; their number
#                                      is the number of workers
#                                      (default "17078 17079")
#   TFCASCADE_SPARK_WORKER_WEBUI_PORTS one web UI port per worker
#                                      (default "18181 18182")
#   TFCASCADE_SPARK_WORKER_CORES       cores per worker      (default 1)
#   TFCASCADE_SPARK_WORKER_MEMORY      memory per worker for its executors
#                                      (default 4g; executors ask 1g each)
#   TFCASCADE_SPARK_DAEMON_MEMORY      heap of master/worker JVMs (default 512m)
#   TFCASCADE_SPARK_START_TIMEOUT      seconds to wait for registration (120)
#   TFCASCADE_SPARK_PYTHON             Python of drivers and executors
#                                      (default: the repo's .venv/bin/python)
# The default ports stay clear of Spark's own defaults (7077/8080/8081/4040)
# so a user's cluster on this machine is never touched.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
STATE="${TFCASCADE_SPARK_STATE:-/tmp/tfcascade-spark}"
MASTER_PORT="${TFCASCADE_SPARK_MASTER_PORT:-17077}"
MASTER_WEBUI_PORT="${TFCASCADE_SPARK_MASTER_WEBUI_PORT:-18180}"
read -r -a WORKER_PORTS <<<"${TFCASCADE_SPARK_WORKER_PORTS:-17078 17079}"
read -r -a WORKER_WEBUI_PORTS <<<"${TFCASCADE_SPARK_WORKER_WEBUI_PORTS:-18181 18182}"
WORKER_CORES="${TFCASCADE_SPARK_WORKER_CORES:-1}"
WORKER_MEMORY="${TFCASCADE_SPARK_WORKER_MEMORY:-4g}"
DAEMON_MEMORY="${TFCASCADE_SPARK_DAEMON_MEMORY:-512m}"
START_TIMEOUT="${TFCASCADE_SPARK_START_TIMEOUT:-120}"
if [[ -n "${TFCASCADE_SPARK_PYTHON:-}" ]]; then
  PY="$TFCASCADE_SPARK_PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then
  PY="$REPO/.venv/bin/python"
else
  PY="$(command -v python3)"
fi
HOST=127.0.0.1
MASTER_URL="spark://$HOST:$MASTER_PORT"
WEBUI_URL="http://$HOST:$MASTER_WEBUI_PORT"
N_WORKERS=${#WORKER_PORTS[@]}

log() { echo "cluster.sh: $*" >&2; }
die() { log "$*"; exit 1; }

((N_WORKERS >= 1)) || die "TFCASCADE_SPARK_WORKER_PORTS is empty"
((${#WORKER_WEBUI_PORTS[@]} == N_WORKERS)) ||
  die "need one web UI port per worker: ports '${WORKER_PORTS[*]}', web UI ports '${WORKER_WEBUI_PORTS[*]}'"

spark_home() {
  local home
  home="$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null)" ||
    die "pyspark is not importable by $PY; install the extra: $PY -m pip install -c constraints.txt -e '.[spark]'"
  [[ -x "$home/bin/spark-class" && -d "$home/jars" ]] ||
    die "$home has no bin/spark-class or jars/ (pyspark installed from a wheel without Spark's jars?)"
  echo "$home"
}

# Everything the daemons (and, through them, the executors) see. Exported only
# by the commands that launch something.
export_env() {
  export SPARK_HOME="$1"
  export SPARK_CONF_DIR="$STATE/conf"
  export SPARK_LOG_DIR="$STATE/log"
  # Binds every Spark socket (RPC, block manager, web UIs) to loopback.
  export SPARK_LOCAL_IP="$HOST"
  export SPARK_MASTER_HOST="$HOST"
  export SPARK_PUBLIC_DNS="$HOST"
  export SPARK_DAEMON_MEMORY="$DAEMON_MEMORY"
  # The marker makes our JVMs recognisable in `ps` (and by stop()).
  export SPARK_DAEMON_JAVA_OPTS="-Dtfcascade.spark.state=$STATE"
  # Spark 4 turns the master's REST submission server (port 6066) on by
  # default; we submit in client mode only: one port less to collide.
  export SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false"
  # Executors inherit the worker's environment; the driver's PYSPARK_PYTHON
  # (sent with every Python function) is what picks the executors' Python,
  # these make sure nothing else falls back to a Python without TF.
  export PYSPARK_PYTHON="$PY"
  export PYSPARK_DRIVER_PYTHON="$PY"
}

write_conf() {
  mkdir -p "$STATE/conf" "$STATE/log" "$STATE/pid"
  # For drivers that use SPARK_CONF_DIR=$STATE/conf (see `env`): spark-submit
  # reads it. Python drivers started from plain `python` must still export
  # PYSPARK_PYTHON themselves: pyspark's SparkContext reads only the env var.
  cat >"$STATE/conf/spark-defaults.conf" <<EOF
# Written by ci/spark/cluster.sh; rewritten on every start.
spark.master                     $MASTER_URL
spark.driver.host                $HOST
spark.driver.bindAddress         $HOST
spark.pyspark.python             $PY
spark.pyspark.driver.python      $PY
spark.executorEnv.PYSPARK_PYTHON $PY
spark.executor.cores             $WORKER_CORES
spark.python.worker.reuse        true
spark.task.maxFailures           4
EOF
}

pidfile() { echo "$STATE/pid/$1.pid"; }

# Prints the pid of daemon $1 when its pid file names a live process that is
# still our Spark daemon (pids get recycled): a session leader (we start each
# daemon with setsid) whose command line is Spark's launcher or JVM.
daemon_pid() {
  local f pid args
  f="$(pidfile "$1")"
  [[ -f "$f" ]] || return 1
  pid="$(<"$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ "$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ')" == "$pid" ]] || return 1
  args="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$args" == *bin/spark-class\ org.apache.spark.deploy.* ||
     "$args" == *"-Dtfcascade.spark.state=$STATE "* ]] || return 1
  echo "$pid"
}

# launch NAME CLASS ARGS...: start a Spark daemon in a session of its own (so
# that stop can take the whole tree down: executors, Python daemons, workers
# that call setpgid), stdout/stderr in $STATE/log/NAME.out.
launch() {
  local name="$1" pid
  shift
  if pid="$(daemon_pid "$name")"; then
    log "$name already running (pid $pid)"
    return 0
  fi
  # Without job control the subshell is not a process-group leader, so
  # setsid(1) execs without forking; spark-class execs the JVM: $! stays the
  # JVM's pid and is the id of its session.
  (exec setsid "$SPARK_HOME/bin/spark-class" "$@") >"$STATE/log/$name.out" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
  log "started $name (pid $!, log $STATE/log/$name.out)"
}

# The master's JSON (/json/ of its web UI), or nothing.
master_json() { curl -fsS --max-time 2 "$WEBUI_URL/json/" 2>/dev/null; }

# Number of ALIVE workers on our worker ports (ignores DEAD entries of workers
# that were restarted, and foreign workers).
alive_workers() {
  master_json | "$PY" -c '
import json, sys
ports = {int(p) for p in sys.argv[1:]}
try:
    ws = json.load(sys.stdin).get("workers", [])
except ValueError:
    ws = []
print(sum(1 for w in ws if w.get("state") == "ALIVE" and w.get("port") in ports))
' "${WORKER_PORTS[@]}" 2>/dev/null || echo 0
}

dump_logs() {
  local f
  for f in "$STATE"/log/*.out; do
    [[ -f "$f" ]] || continue
    echo "---- tail of $f" >&2
    tail -n 25 "$f" >&2 || true
  done
}

# wait_until WHAT TIMEOUT_S CMD...: poll CMD every 0.5 s; give up early when
# one of the daemons started so far has exited (bad option, port taken...).
wait_until() {
  local what="$1" deadline=$((SECONDS + $2)) f
  shift 2
  until "$@"; do
    for f in "$STATE"/pid/*.pid; do
      [[ -f "$f" ]] || continue
      if ! kill -0 "$(<"$f")" 2>/dev/null; then
        log "$(basename "$f" .pid) exited while waiting for $what; logs in $STATE/log:"
        dump_logs
        return 1
      fi
    done
    if ((SECONDS >= deadline)); then
      log "timed out after ${START_TIMEOUT}s waiting for $what; logs in $STATE/log:"
      dump_logs
      return 1
    fi
    sleep 0.5
  done
}

master_up() { master_json | grep -q '"status" *: *"ALIVE"'; }
workers_up() { (($(alive_workers) >= N_WORKERS)); }

start() {
  command -v java >/dev/null || [[ -x "${JAVA_HOME:-/nonexistent}/bin/java" ]] ||
    die "java not found (Spark 4 needs Java 17 or 21)"
  local home t0=$SECONDS i
  home="$(spark_home)"
  export_env "$home"
  write_conf
  # A master of another cluster on our port would swallow our workers.
  if ! daemon_pid master >/dev/null && master_json >/dev/null; then
    die "something else answers on $WEBUI_URL; choose other ports (TFCASCADE_SPARK_MASTER_WEBUI_PORT, ...)"
  fi
  launch master org.apache.spark.deploy.master.Master \
    --host "$HOST" --port "$MASTER_PORT" --webui-port "$MASTER_WEBUI_PORT"
  # Workers started before the master listens back off 5-15 s before they
  # retry; start them once the master answers.
  wait_until "the master on $WEBUI_URL" "$START_TIMEOUT" master_up || { stop; exit 1; }
  for ((i = 0; i < N_WORKERS; i++)); do
    local name="worker-$((i + 1))" dir="$STATE/worker-$((i + 1))"
    if ! daemon_pid "$name" >/dev/null; then
      # Fresh worker: drop the previous run's executor dirs (logs, app files).
      rm -rf "$dir"
    fi
    mkdir -p "$dir/work" "$dir/local"
    SPARK_LOCAL_DIRS="$dir/local" launch "$name" org.apache.spark.deploy.worker.Worker \
      --host "$HOST" --port "${WORKER_PORTS[$i]}" --webui-port "${WORKER_WEBUI_PORTS[$i]}" \
      --cores "$WORKER_CORES" --memory "$WORKER_MEMORY" --work-dir "$dir/work" \
      "$MASTER_URL"
  done
  wait_until "$N_WORKERS registered workers on $MASTER_URL" "$START_TIMEOUT" workers_up || { stop; exit 1; }
  log "up in $((SECONDS - t0))s: $MASTER_URL (web UI $WEBUI_URL), $N_WORKERS workers x $WORKER_CORES core(s), state $STATE"
  echo "$MASTER_URL"
}

# Stop daemon $1 and its whole session (executors, Python daemons and
# workers): TERM, then KILL what is left after 20 s.
stop_daemon() {
  local name="$1" f pid pids deadline
  f="$(pidfile "$name")"
  [[ -f "$f" ]] || return 0
  pid="$(<"$f")"
  if daemon_pid "$name" >/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  elif [[ ! "$pid" =~ ^[0-9]+$ ]] || kill -0 "$pid" 2>/dev/null; then
    # A live pid that is no longer our daemon (recycled): not ours to kill.
    rm -f "$f"
    return 0
  fi
  # The session id stays reserved while any member lives, so whatever still
  # carries it is ours: executors the worker's shutdown hook missed, Python
  # workers, or a hung JVM.
  # (Zombies do not count: spark-class's launcher subshell stays one under
  # the JVM that exec'd over spark-class.)
  pids="$(ps -o pid=,stat= -s "$pid" 2>/dev/null | awk '$2 !~ /^Z/ {print $1}' | tr '\n' ' ')" || true
  if [[ -n "${pids// /}" ]]; then
    log "$name: SIGKILL to what is left of session $pid: $pids"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
  fi
  rm -f "$f"
  log "stopped $name (pid $pid)"
}

stop() {
  local f name jobs=()
  # Workers first, in parallel (they take their executors down), then the
  # master. Wait for these jobs only: a bare `wait` would also wait for the
  # daemons this same shell launched (start() calls stop() on failure).
  for f in "$STATE"/pid/worker-*.pid; do
    [[ -f "$f" ]] || continue
    name="$(basename "$f" .pid)"
    stop_daemon "$name" &
    jobs+=($!)
  done
  ((${#jobs[@]} == 0)) || wait "${jobs[@]}"
  stop_daemon master
}

status() {
  local json
  json="$(master_json)" || { log "no master answers on $WEBUI_URL"; return 1; }
  echo "master: $MASTER_URL  web UI: $WEBUI_URL  state: $STATE"
  "$PY" -c '
import json, sys
m = json.loads(sys.argv[1])
print("status: %s  alive workers: %s  cores: %s used %s  apps: %d running"
      % (m.get("status"), m.get("aliveworkers"), m.get("cores"),
         m.get("coresused"), len(m.get("activeapps", []))))
for w in m.get("workers", []):
    print("worker %s %s:%s %s cores %s/%s used, memory %s MB, web UI %s"
          % (w["id"], w["host"], w["port"], w["state"], w.get("coresused"),
             w.get("cores"), w.get("memory"), w.get("webuiaddress")))
' "$json"
}

env_cmd() {
  local home
  home="$(spark_home)"
  write_conf
  printf 'export SPARK_HOME=%q\n' "$home"
  printf 'export SPARK_CONF_DIR=%q\n' "$STATE/conf"
  printf 'export SPARK_LOCAL_IP=%q\n' "$HOST"
  printf 'export PYSPARK_PYTHON=%q\n' "$PY"
  printf 'export PYSPARK_DRIVER_PYTHON=%q\n' "$PY"
  printf 'export TFCASCADE_SPARK_MASTER=%q\n' "$MASTER_URL"
  printf 'export TFCASCADE_SPARK_MASTER_WEBUI=%q\n' "$WEBUI_URL"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_cmd ;;
  *) echo "usage: $0 {start|stop|status|env}" >&2; exit 2 ;;
esac
