"""Run a Beam job on a portable runner (Beam's Python job service, or Prism)
with an EXTERNAL worker pool, or on real Flink, from tests or CI. Shared by
tests/portable/ and tests/flink/.

Everything here is plain functions/classes usable outside pytest. Typical use
(the job is any command line that accepts Beam pipeline args at its end):

  py = make_worker_venv(REPO)                  # venv with ONLY the project wheel
  with PythonJobService() as endpoint, WorkerPool(py) as pool:
    run_job(JOB_CMD + runner_args("portable_external", job_endpoint=endpoint,
                                  worker_pool=pool))

  prism, reason = prism_binary()               # as `tfcascade run` finds it
  with WorkerPool(py) as pool:
    run_job(JOB_CMD + runner_args("prism_external", prism=prism,
                                  worker_pool=pool))

  jar, reason = job_server_jar()               # from $TFCASCADE_FLINK_JOB_SERVER_JAR
  with FlinkCluster() as master:               # ci/flink/cluster.sh start/stop
    run_job(JOB_CMD + runner_args("standalone", jar=jar, flink_master=master))

All services bind to / are addressed on loopback.
"""
from __future__ import annotations

import collections
import fcntl
import glob
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CI_DIR = REPO / "ci" / "flink"
TOY = Path(__file__).resolve().parent / "toy_pipeline.py"
BEAM_VERSION = "2.77.0"
FLINK_VERSION = "1.20"
JAR_ENV = "TFCASCADE_FLINK_JOB_SERVER_JAR"
REQUIRE_ENV = "TFCASCADE_REQUIRE_FLINK"
PRISM_REQUIRE_ENV = "TFCASCADE_REQUIRE_PRISM"
MODES = ("minicluster", "standalone", "portable_external", "prism_external")

# Java 17 closes the JDK internals that Flink/Kryo reflect into; these are the
# flags Flink 1.20's own config.yaml ships for env.java.opts.all.
JAVA17_OPENS = [
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
] + [
    "--add-opens=java.base/%s=ALL-UNNAMED" % pkg for pkg in (
        "java.lang", "java.net", "java.io", "java.nio", "sun.nio.ch",
        "java.lang.reflect", "java.text", "java.time", "java.util",
        "java.util.concurrent", "java.util.concurrent.atomic",
        "java.util.concurrent.locks")
]


def cache_root() -> Path:
  return Path(
      os.environ.get("TFCASCADE_CACHE") or
      Path.home() / ".cache" / "tfcascade")


def flink_required() -> bool:
  """CI sets TFCASCADE_REQUIRE_FLINK=1 where Flink MUST run: skips become
  failures there."""
  return os.environ.get(REQUIRE_ENV) == "1"


def java_available() -> str | None:
  """The reason Java is unusable, or None when `java -version` works."""
  java = shutil.which("java")
  if not java:
    return "no `java` on PATH (Flink needs a JDK 11 or 17)"
  r = subprocess.run([java, "-version"], capture_output=True, text=True)
  if r.returncode != 0:
    return "`java -version` failed: %s" % r.stderr.strip()[:200]
  return None


def job_server_jar() -> tuple[Path | None, str]:
  """(path, "") to Beam's Flink 1.20 job-server jar, or (None, reason).

  Only $TFCASCADE_FLINK_JOB_SERVER_JAR: the Maven repository our machines
  reach does not serve `beam-runners-flink-*`, so nothing is fetched here.
  Where yours does, `ci/flink/fetch_job_server.sh` prints a path to export.
  """
  env_jar = os.environ.get(JAR_ENV)
  if not env_jar:
    return None, ("$%s is not set (Beam's Flink job-server jar, "
                  "beam-runners-flink-%s-job-server-%s.jar, is not obtainable "
                  "from the Maven repository here)" %
                  (JAR_ENV, FLINK_VERSION, BEAM_VERSION))
  p = Path(env_jar)
  return (p, "") if p.is_file() else (None, "%s=%s: no such file" %
                                      (JAR_ENV, env_jar))


def prism_required() -> bool:
  """CI sets TFCASCADE_REQUIRE_PRISM=1 (.ci/run builds Prism): a Prism test
  that finds no binary fails there instead of skipping."""
  return os.environ.get(PRISM_REQUIRE_ENV) == "1"


def prism_binary() -> tuple[str | None, str]:
  """(path, "") of Beam's Prism binary, found as `tfcascade run
  --runner=PrismRunner` finds it ($TFCASCADE_PRISM, `prism` on PATH, the
  cache ci/prism/build.sh fills), or (None, reason)."""
  from tfcascade.pipeline import prism_runner  # pylint: disable=g-import-not-at-top
  try:
    return prism_runner.locate(["--runner=PrismRunner"]), ""
  except prism_runner.PrismNotFound as e:
    return None, str(e)  # says how to build it (ci/prism/build.sh)


def runner_args(
    mode: str,
    *,
    jar: str | os.PathLike | None = None,
    flink_master: str | None = None,
    job_endpoint: str | None = None,
    worker_pool: str | None = None,
    prism: str | os.PathLike | None = None,
    parallelism: int = 2) -> list[str]:
  """Beam pipeline args to append to a job's command line, per runner mode.

  minicluster        FlinkRunner, embedded Flink MiniCluster inside the job
                     server JVM; needs `jar`.
  standalone         FlinkRunner submitting to a running cluster's REST
                     address `flink_master` (host:port); needs `jar`.
  portable_external  PortableRunner against `job_endpoint` (host:port of any
                     Beam job service), SDK workers from the worker pool at
                     `worker_pool` (host:port).
  prism_external     PrismRunner (Beam's runner in Go) on the binary `prism`,
                     SDK workers from the worker pool at `worker_pool`: the
                     job service, fusion and data plane are Prism's, the
                     workers separate processes (Prism's default for Python,
                     LOOPBACK, would run them inside the launcher).

  The Flink modes use LOOPBACK: the SDK harness runs inside the launching
  process, which the TaskManager must be able to reach (true for a cluster on
  this machine). For a remote cluster use EXTERNAL worker pools instead.
  """
  if mode in ("minicluster", "standalone"):
    if not jar:
      raise ValueError("mode %r needs jar=<Flink job-server jar>" % mode)
    if mode == "standalone" and not flink_master:
      raise ValueError("mode 'standalone' needs flink_master=HOST:PORT")
    return [
        "--runner=FlinkRunner",
        "--flink_master=%s" % ("[local]" if mode == "minicluster" else
                               flink_master),
        "--flink_version=%s" % FLINK_VERSION,
        "--flink_job_server_jar=%s" % os.fspath(jar),
        "--parallelism=%d" % parallelism,
        "--environment_type=LOOPBACK",
    ] + ["--job_server_jvm_properties=%s" % f for f in JAVA17_OPENS]
  if mode == "portable_external":
    if not (job_endpoint and worker_pool):
      raise ValueError("mode 'portable_external' needs job_endpoint= and "
                       "worker_pool=")
    return [
        "--runner=PortableRunner",
        "--job_endpoint=%s" % job_endpoint,
        "--environment_type=EXTERNAL",
        "--environment_config=%s" % worker_pool,
        "--parallelism=%d" % parallelism,
    ]
  if mode == "prism_external":
    if not (prism and worker_pool):
      raise ValueError("mode 'prism_external' needs prism= and worker_pool=")
    return [
        "--runner=PrismRunner",
        "--prism_location=%s" % os.fspath(prism),
        "--environment_type=EXTERNAL",
        "--environment_config=%s" % worker_pool,
    ]
  raise ValueError("mode must be one of %s, got %r" % (MODES, mode))


def toy_cmd(input_path, out_prefix) -> list[str]:
  """The toy job's command line (tests/runners/toy_pipeline.py)."""
  return [sys.executable, str(TOY), "--input", os.fspath(input_path),
          "--output", os.fspath(out_prefix)]


def reference_args() -> list[str]:
  """Args for the in-process reference run. Pinned: since Beam 2.68 the
  default runner first tries to download Prism (fails offline)."""
  return ["--runner=FnApiRunner"]


# ---------------------------------------------------------------- processes


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc=None, what="service"):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if proc is not None and proc.poll() is not None:
      raise RuntimeError("%s exited with %s before listening on %d" %
                         (what, proc.returncode, port))
    try:
      with socket.create_connection(("127.0.0.1", port), timeout=1):
        return
    except OSError:
      time.sleep(0.2)
  raise TimeoutError("%s not listening on 127.0.0.1:%d after %.0fs" %
                     (what, port, timeout))


class _StartStop:
  """`with X(...) as endpoint:` starts X and always stops it."""

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop()


class _Service(_StartStop):
  """A background process with its log in a file; a context manager that
  yields its endpoint and always stops the process it started (by pid)."""
  name = "service"

  def __init__(self, log_dir: str | os.PathLike | None = None):
    self._own_dir = log_dir is None
    self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="tfc-runner-"))
    self.log_path = self.log_dir / ("%s.log" % self.name)
    self.proc = None
    self.endpoint = None

  def _spawn(self, cmd, **kw):
    self._log = open(self.log_path, "wb")
    self.proc = subprocess.Popen(
        cmd, stdout=self._log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True, **kw)

  def log_tail(self, n=40) -> str:
    try:
      return "\n".join(self.log_path.read_text(errors="replace")
                       .splitlines()[-n:])
    except OSError:
      return ""

  def stop(self):
    if self.proc and self.proc.poll() is None:
      # Own session: the worker pool's SDK-harness children go with it.
      try:
        os.killpg(self.proc.pid, 15)
        self.proc.wait(timeout=15)
      except subprocess.TimeoutExpired:
        os.killpg(self.proc.pid, 9)
        self.proc.wait()
      except ProcessLookupError:
        pass
    if self.proc:
      self._log.close()
    self.proc = None


class PythonJobService(_Service):
  """Beam's own portable job service (FnApiRunner behind the Job API), run
  from the launcher's interpreter. With EXTERNAL environments it drives the
  SDK harnesses in a worker pool exactly like Flink/Dataflow Runner v2 do;
  needs no Java."""
  name = "python-job-service"

  def __init__(self, python: str = sys.executable, log_dir=None):
    super().__init__(log_dir)
    self.python = python

  def start(self) -> str:
    port_file = self.log_dir / "job-service.port"
    port_file.unlink(missing_ok=True)
    self._spawn([
        self.python, "-m",
        "apache_beam.runners.portability.local_job_service_main",
        "--port=0", "--port_file=%s" % port_file
    ])
    deadline = time.monotonic() + 60
    while not port_file.exists():
      if self.proc.poll() is not None or time.monotonic() > deadline:
        self.stop()
        raise RuntimeError("job service did not start:\n" + self.log_tail())
      time.sleep(0.1)
    self.endpoint = "localhost:%s" % port_file.read_text().strip()
    return self.endpoint


class FlinkJobServer(_Service):
  """Beam's Flink job server jar as a standalone job service: PortableRunner
  submits to it; it runs the job on an embedded MiniCluster ([local]) or on a
  cluster at flink_master."""
  name = "flink-job-server"

  def __init__(self, jar, flink_master="[local]", log_dir=None):
    super().__init__(log_dir)
    self.jar = os.fspath(jar)
    self.flink_master = flink_master

  def start(self) -> str:
    job, artifact, expansion = free_port(), free_port(), free_port()
    self._spawn(["java"] + JAVA17_OPENS + [
        "-jar", self.jar, "--flink-master=%s" % self.flink_master,
        "--job-host=localhost", "--job-port=%d" % job,
        "--artifact-port=%d" % artifact, "--expansion-port=%d" % expansion
    ])
    try:
      wait_for_port(job, 120, self.proc, "Flink job server")
    except Exception as e:
      self.stop()
      raise RuntimeError("%s\n%s" % (e, self.log_tail()))
    self.endpoint = "localhost:%d" % job
    return self.endpoint


class WorkerPool(_Service):
  """`python -m apache_beam.runners.worker.worker_pool_main` from a given
  (worker) interpreter: the EXTERNAL environment's SDK harness pool."""
  name = "worker-pool"

  def __init__(self, python: str | os.PathLike, port: int | None = None,
               log_dir=None):
    super().__init__(log_dir)
    self.python = Path(python)
    self.port = port

  def start(self) -> str:
    self.port = self.port or free_port()
    env = dict(os.environ)
    # The pool starts each SDK harness as a bare `python -c ...` looked up on
    # PATH, NOT sys.executable: put the worker venv first or the harness runs
    # in whatever `python` the PATH finds (e.g. the launcher's venv).
    venv_bin = str(self.python.parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(self.python.parent.parent)
    env.pop("PYTHONPATH", None)
    # A neutral cwd: `python -c` puts cwd on sys.path, and a repo checkout as
    # cwd would let the worker import the source tree instead of the wheel.
    workdir = self.log_dir / "worker-cwd"
    workdir.mkdir(exist_ok=True)
    self._spawn([
        str(self.python), "-m", "apache_beam.runners.worker.worker_pool_main",
        "--service_port=%d" % self.port
    ], env=env, cwd=workdir)
    try:
      wait_for_port(self.port, 60, self.proc, "worker pool")
    except Exception as e:
      self.stop()
      raise RuntimeError("%s\n%s" % (e, self.log_tail()))
    self.endpoint = "localhost:%d" % self.port
    return self.endpoint


class FlinkCluster(_StartStop):
  """The standalone cluster of ci/flink/cluster.sh (JobManager + TaskManager
  JVMs). Context manager yielding the REST address "127.0.0.1:PORT"."""

  def __init__(self, rest_port: int | None = None, rpc_port: int | None = None,
               state_dir=None):
    self.env = dict(os.environ)
    self.env["FLINK_REST_PORT"] = str(rest_port or free_port())
    self.env["FLINK_RPC_PORT"] = str(rpc_port or free_port())
    if state_dir:
      self.env["FLINK_STATE_DIR"] = os.fspath(state_dir)
    self.address = None

  def _sh(self, *args, timeout=600) -> str:
    r = subprocess.run(["bash", str(CI_DIR / "cluster.sh")] + list(args),
                       env=self.env, capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
      raise RuntimeError("cluster.sh %s failed (exit %d):\n%s" %
                         (" ".join(args), r.returncode, r.stderr[-3000:]))
    return r.stdout.strip()

  def install(self) -> str:
    return self._sh("install").splitlines()[-1]

  def start(self) -> str:
    self.address = self._sh("start").splitlines()[-1]
    return self.address

  def stop(self):
    self._sh("stop")


# ------------------------------------------------------------ worker venv


def _project_key(project_dir: Path) -> str:
  # Deps are a function of the packaging files only; the project's code is
  # reinstalled every time (cheap, --no-deps), so editing code keeps the cache.
  h = hashlib.sha256()
  h.update(("%s|%s|%d.%d" % (BEAM_VERSION, sys.platform,
                             *sys.version_info[:2])).encode())
  for name in ("setup.py", "setup.cfg", "pyproject.toml", "requirements.txt",
               "constraints.txt"):
    f = project_dir / name
    h.update(name.encode() + b"\0" +
             (f.read_bytes() if f.is_file() else b"<none>") + b"\0")
  return h.hexdigest()[:16]


def _pip(python: Path, *args, timeout=1800):
  r = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check",
                      *args], capture_output=True, text=True, timeout=timeout)
  if r.returncode != 0:
    raise RuntimeError("pip %s failed:\n%s" % (" ".join(args),
                                               (r.stdout + r.stderr)[-4000:]))
  return r.stdout


def build_wheel(project_dir: Path, out_dir: Path) -> Path:
  """`pip wheel` of a COPY of the project: setuptools writes build/ and
  *.egg-info into the source tree, which others may be editing meanwhile."""
  src = Path(tempfile.mkdtemp(prefix="tfc-wheel-src-"))
  try:
    top_level_junk = {".git", ".venv", "build", "dist", "out", "demo",
                      ".pytest_cache", ".hypothesis", ".cache"}

    def ignore(d, names):
      # Top-level junk only: a package may well have a subfolder "demo".
      junk = top_level_junk if Path(d) == project_dir else set()
      return {n for n in names if n in junk or n == "__pycache__" or
              n.endswith(".egg-info")}

    shutil.copytree(project_dir, src / "p", ignore=ignore)
    out_dir.mkdir(parents=True, exist_ok=True)
    _pip(Path(sys.executable), "wheel", "--no-deps", "-q", "-w", str(out_dir),
         str(src / "p"))
  finally:
    shutil.rmtree(src, ignore_errors=True)
  wheels = sorted(out_dir.glob("*.whl"), key=lambda p: p.stat().st_mtime)
  if not wheels:
    raise RuntimeError("pip wheel produced no wheel in %s" % out_dir)
  return wheels[-1]


def make_worker_venv(project_dir: str | os.PathLike = REPO,
                     cache: str | os.PathLike | None = None) -> Path:
  """A virtualenv holding ONLY what a remote worker would get: the project's
  wheel (built from its setup.py) and the deps that wheel declares (pinned by
  the project's constraints.txt when present); or, while the project has no
  setup.py, apache-beam==BEAM_VERSION alone. Returns the venv's python.

  Cached under <cache>/worker-venvs/<hash of the packaging files>; the
  project wheel itself is rebuilt and force-reinstalled (--no-deps) on every
  call so the worker always runs the current code.
  """
  project_dir = Path(project_dir).resolve()
  root = Path(cache or cache_root()) / "worker-venvs"
  root.mkdir(parents=True, exist_ok=True)
  key = _project_key(project_dir)
  # Two test sessions (or xdist workers) must not build one venv at once.
  with open(root / (key + ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    python = _make_worker_venv_locked(project_dir, root / key)
    _prune_worker_venvs(root, keep=root / key)
  return python


def _prune_worker_venvs(root: Path, keep: Path, max_kept: int = 2):
  # Each venv is ~2 GB (TensorFlow): keep the current one and the most
  # recently used other (e.g. a branch with other pins), delete the rest.
  venvs = sorted((d for d in root.iterdir() if d.is_dir() and d != keep),
                 key=lambda d: d.stat().st_mtime, reverse=True)
  for d in venvs[max_kept - 1:]:
    lock = root / (d.name + ".lock")
    with open(lock, "w") as fh:
      try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        continue  # in use by another session
      shutil.rmtree(d, ignore_errors=True)
    lock.unlink(missing_ok=True)


def _make_worker_venv_locked(project_dir: Path, venv: Path) -> Path:
  has_setup = (project_dir / "setup.py").is_file() or (
      project_dir / "pyproject.toml").is_file()
  python = venv / "bin" / "python"
  done = venv / ".tfcascade-deps-installed"
  if not done.is_file():
    shutil.rmtree(venv, ignore_errors=True)
    # Same interpreter version as the launcher: pickled user code and
    # cloudpickle-by-value functions must unpickle on the worker.
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
  wheel = None
  if has_setup:
    wheel = build_wheel(project_dir, venv / "wheels" / str(time.time_ns()))
  if not done.is_file():
    # The project's constraints.txt (its pip freeze) pins the transitive deps
    # too, so the worker gets the versions the launcher was tested with.
    constraints = project_dir / "constraints.txt"
    _pip(python, "install", "-q",
         *(["-c", str(constraints)] if constraints.is_file() else []),
         str(wheel) if wheel else "apache-beam==%s" % BEAM_VERSION)
    done.write_text(str(wheel or "apache-beam==%s" % BEAM_VERSION))
  elif wheel:
    _pip(python, "install", "-q", "--no-deps", "--force-reinstall", str(wheel))
  if wheel:
    shutil.rmtree(wheel.parent, ignore_errors=True)
  os.utime(venv)  # "recently used", for pruning
  return python


# ------------------------------------------------------------------ running


def run_job(cmd: list[str], *, timeout: float = 600, cwd=None,
            env=None) -> subprocess.CompletedProcess:
  """Run a job's command line; raise with the output tail when it fails."""
  r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                     cwd=cwd, env=env, stdin=subprocess.DEVNULL)
  if r.returncode != 0:
    raise AssertionError("job failed (exit %d): %s\n--- output tail ---\n%s" %
                         (r.returncode, " ".join(cmd),
                          (r.stdout + r.stderr)[-6000:]))
  return r


TOY_OUTPUTS = ("records", "totals")


def toy_outputs(out_prefix) -> dict[str, collections.Counter]:
  """The toy job's runner-independent outputs: kind -> multiset of lines."""
  return {kind: read_lines("%s-%s-*" % (out_prefix, kind))
          for kind in TOY_OUTPUTS}


def toy_workers(out_prefix) -> set[tuple[str, ...]]:
  """{(sys.prefix, transforms location)} of the workers that ran the toy
  job's user code (its `where` output)."""
  return {tuple(line.split("\t"))
          for line in read_lines("%s-where-*" % out_prefix)}


def read_lines(pattern: str) -> collections.Counter:
  """All lines of all files matching pattern, as a multiset (shard layout and
  order differ between runners; the content must not)."""
  files = sorted(glob.glob(pattern))
  if not files:
    raise AssertionError("no output files match %s" % pattern)
  c = collections.Counter()
  for f in files:
    with open(f, encoding="utf-8") as fh:
      c.update(line.rstrip("\n") for line in fh)
  return c
