"""The same seed and scenario give the same bytes across releases unless a change means to alter
what patients look like: a small cohort of each source is pinned by one digest of all its files.
A change that alters output on purpose updates the digest in the same commit and says why."""

import hashlib
from pathlib import Path

import pytest

from tests.conftest import small_scenario
from trajsim.generate import generate

PINNED = {
    "reference": "fcda288fdfd0f5eed16405e4a2b41341b95f74cf396ee1c4e5fcc9b3d6fed1bc",
    "default": "b984484e782fef5f22146893ea9dd740255980250277b62312d4d8f762e4daad",
}


def cohort_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("source", sorted(PINNED))
def test_a_small_cohort_is_byte_identical_to_the_pinned_run(tmp_path, source):
    scenario = small_scenario(12, seed=3, model=source,
                              **{"output.formats": ["bundle", "collection", "ndjson", "events"]})
    generate(scenario, tmp_path)
    assert cohort_digest(tmp_path) == PINNED[source]
