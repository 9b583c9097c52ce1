"""The Prism binary for the tests that run on Beam's Prism runner.

Found as `tfcascade run --runner=PrismRunner` finds it: $TFCASCADE_PRISM
(.ci/run sets it from ci/prism/build.sh), `prism` on PATH, or the cache that
ci/prism/build.sh fills. Without one the Prism tests SKIP saying Prism was
NOT tested -- except under TFCASCADE_REQUIRE_PRISM=1 (.ci/run), where they
FAIL: CI must not go green without Prism.
"""

import pytest

from tests.runners import harness


@pytest.fixture(scope="session")
def prism_binary():
  path, reason = harness.prism_binary()
  if path is None:
    if harness.prism_required():
      pytest.fail("%s=1 but: %s" % (harness.PRISM_REQUIRE_ENV, reason), pytrace=False)
    pytest.skip("Prism NOT tested: " + reason)
  return path
