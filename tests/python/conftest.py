import os
import sys

import pytest

# The module built by CMake (build/python), unless the one installed is asked for.
if os.environ.get("IPNA_PYTHON_DIR"):
    sys.path.insert(0, os.environ["IPNA_PYTHON_DIR"])


@pytest.fixture(scope="session")
def fixtures():
    d = os.environ.get("IPNA_FIXTURES", "")
    if not os.path.exists(os.path.join(d, "DONE")):
        pytest.fail(f"reference fixtures not found (IPNA_FIXTURES='{d}'): run tools/make_fixtures.py --out DIR")
    return d
