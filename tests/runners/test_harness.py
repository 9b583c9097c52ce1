"""The runner harness's pure parts: always on, start nothing."""
import pytest

from tests.runners import harness


def test_runner_args_shapes():
  a = harness.runner_args("minicluster", jar="/j.jar")
  assert "--flink_master=[local]" in a and "--flink_version=1.20" in a
  assert "--environment_type=LOOPBACK" in a and "--parallelism=2" in a
  assert any(x.startswith("--job_server_jvm_properties=--add-opens=") for x in a)
  b = harness.runner_args("standalone", jar="/j.jar", flink_master="h:8081")
  assert "--flink_master=h:8081" in b
  c = harness.runner_args("portable_external", job_endpoint="localhost:1",
                          worker_pool="localhost:2")
  assert c[:4] == ["--runner=PortableRunner", "--job_endpoint=localhost:1",
                   "--environment_type=EXTERNAL",
                   "--environment_config=localhost:2"]
  d = harness.runner_args("prism_external", prism="/bin/prism",
                          worker_pool="localhost:2")
  assert d == ["--runner=PrismRunner", "--prism_location=/bin/prism",
               "--environment_type=EXTERNAL", "--environment_config=localhost:2"]
  with pytest.raises(ValueError):
    harness.runner_args("prism_external", worker_pool="localhost:2")
  with pytest.raises(ValueError):
    harness.runner_args("standalone", jar="/j.jar")
  with pytest.raises(ValueError):
    harness.runner_args("bogus")


def test_job_server_jar_comes_only_from_the_env(monkeypatch, tmp_path):
  monkeypatch.delenv(harness.JAR_ENV, raising=False)
  jar, reason = harness.job_server_jar()
  assert jar is None and harness.JAR_ENV in reason
  monkeypatch.setenv(harness.JAR_ENV, str(tmp_path / "missing.jar"))
  assert harness.job_server_jar()[0] is None
  (tmp_path / "j.jar").write_bytes(b"")
  monkeypatch.setenv(harness.JAR_ENV, str(tmp_path / "j.jar"))
  assert harness.job_server_jar() == (tmp_path / "j.jar", "")
