#!/usr/bin/env bash
# The example Airflow DAGs (examples/airflow_*.py) under real, pinned Airflow.
#
# Airflow gets its own venv (.venv-airflow, git-ignored; Airflow's
# dependencies never enter the project's .venv), built from
# ci/airflow/requirements.txt + constraints.txt and reused while those files
# are unchanged. The tests run the project's CLI by path, so the project venv
# must exist first (.ci/run builds it).
#
#   ci/airflow/test.sh [pytest args]
#   env: AIRFLOW_VENV (default .venv-airflow), PYTHON (default python3; 3.11,
#        as the constraints), TFCASCADE_BIN (default .venv/bin/tfcascade)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
venv=${AIRFLOW_VENV:-$repo/.venv-airflow}
python=${PYTHON:-python3}
tfcascade=${TFCASCADE_BIN:-$repo/.venv/bin/tfcascade}

if [ ! -x "$tfcascade" ]; then
  echo "ci/airflow/test.sh: no project CLI at $tfcascade; set up the project venv first (README)" >&2
  exit 1
fi
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$version" != "3.11" ]; then
  echo "ci/airflow/test.sh: $python is Python $version; ci/airflow/constraints.txt is for 3.11 (set PYTHON)" >&2
  exit 1
fi

want=$(cat ci/airflow/requirements.txt ci/airflow/constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.pins.sha256" 2>/dev/null)" != "$want" ]; then
  echo "ci/airflow/test.sh: building $venv (Airflow 3.3.2, pinned)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check pip==26.3
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    -c ci/airflow/constraints.txt -r ci/airflow/requirements.txt
  echo "$want" > "$venv/.pins.sha256"
fi

export TFCASCADE_BIN="$tfcascade"
exec "$venv/bin/python" -m pytest -c ci/airflow/pytest.ini --rootdir ci/airflow -q ci/airflow/tests "$@"
