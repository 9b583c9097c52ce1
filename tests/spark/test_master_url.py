"""`--master` checked before Spark's JVM starts (issue 21): the URLs Spark
cannot parse are refused in one line, and a standalone master that takes no
TCP connection is said to be down in seconds. No Spark needed."""

import socket

import pytest

from tfcascade.transforms.spark import master_url


@pytest.mark.parametrize("master", [
    None, "local", "local[2]", "local[*]", "local[2,4]", "local[*, 3]",
    "spark://127.0.0.1:7077", "spark://h1:7077,h2:7078", "spark://[::1]:7077",
    "k8s://https://10.0.0.1:443"])
def test_masters_spark_parses_pass(master):
  assert master_url.problem(master) is None


@pytest.mark.parametrize("master, why", [
    ("bogus", "not a Spark master URL"), ("Local[2]", "not a Spark master URL"),
    ("local[x]", "not a Spark master URL"), ("local[0]", "local mode needs at least one thread"),
    ("spark://host", "'host' is not HOST:PORT"), ("spark://:7077", "':7077' is not HOST:PORT"),
    ("spark://h:7077,h2", "'h2' is not HOST:PORT"),
    ("spark://h:70770", "'h:70770' is not HOST:PORT"),
    ("spark://h:7077/path", "'h:7077/path' is not HOST:PORT"),
    ("k8s://", "not a Spark master URL")])
def test_masters_spark_cannot_parse_are_named_with_the_accepted_forms(master, why):
  assert master_url.problem(master) == f"--master {master!r}: {why}; expected {master_url.ACCEPTED}"


def test_yarn_needs_hadoop_conf_dir(monkeypatch):
  monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
  monkeypatch.delenv("YARN_CONF_DIR", raising=False)
  assert "HADOOP_CONF_DIR or YARN_CONF_DIR" in master_url.problem("yarn")
  monkeypatch.setenv("YARN_CONF_DIR", "/etc/hadoop/conf")
  assert master_url.problem("yarn") is None


def _closed_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_a_standalone_master_is_reachable_when_one_of_its_addresses_answers():
  with socket.socket() as listening:
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    port = listening.getsockname()[1]
    assert master_url.unreachable(f"spark://127.0.0.1:{port}") is None
    assert master_url.unreachable(f"spark://127.0.0.1:{_closed_port()},127.0.0.1:{port}") is None
  assert master_url.unreachable("local[2]") is None  # not checked


def test_an_unreachable_standalone_master_names_each_address_and_its_os_error():
  port = _closed_port()
  why = master_url.unreachable(f"spark://127.0.0.1:{port},no-such-host.invalid:7077")
  assert why.startswith(f"127.0.0.1:{port}: Connection refused (ECONNREFUSED); "
                        "no-such-host.invalid:7077: "), why
