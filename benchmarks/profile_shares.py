"""The share of `generate`'s time in each stage of the pipeline, from a py-spy profile, so the table
in docs/performance.md can be taken again the same way:

    py-spy record -r 200 -f raw -o profile.txt -- python -c "from trajsim.cli import run; run()" \\
        generate -n 300 --model reference -w 1 -o out
    python benchmarks/profile_shares.py profile.txt

A sample counts toward the innermost stage on its stack; samples outside `trajsim.generate.generate`
are startup (imports, the knowledge tables); the progress bar's idle thread is left out.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# orjson.dumps is C: a sample in it shows as the Python line that calls it (the lines of
# `write_bundles` and `NdjsonWriter.write` that call it: keep them in step with writers.py)
SERIALISING_LINES = re.compile(r"\(fhir_export/writers\.py:(?:46|50|75)\)$")
# (stage, the frame's function or file starts with one of these), innermost match wins, first rule first
STAGES = (
    ("merging", ("CohortOutput._merge_ndjson",), ()),
    ("rule checks", ("find_violations",), ()),
    ("event table", ("events_frame", "ShardWriter._finish_chunk"), ()),
    ("rule masks", (), ("trajsim/rules/mask",)),
    ("notes", ("_PatientBuild._note",), ("fhir_export/notes",)),
    ("claims", (), ("fhir_export/claims",)),
    ("writing", (), ("fhir_export/writers", "trajsim/atomic")),
    ("resource building", (), ("fhir_export/",)),
    ("model sampling", (), ("trajsim/model/",)),
    ("reference source", (), ("trajsim/engine/reference",)),
    ("engine", (), ("trajsim/engine/", "trajsim/knowledge/", "trajsim/rules/", "simpy/")),
    # the frame that drops a written patient's resources (reference counting frees them there)
    ("freeing a written patient", ("ShardWriter.write ",), ()),
)


def stage_of(frame: str) -> str | None:
    """The stage a py-spy frame ("function (file:line)") belongs to, or None for a neutral frame."""
    if SERIALISING_LINES.search(frame):
        return "serialisation"
    function, _, place = frame.rpartition(" (")
    for stage, functions, files in STAGES:
        if frame.startswith(functions) or place.startswith(files):
            return stage
    return None


def shares(profile: Path) -> Counter:
    """Samples per stage of a py-spy raw profile (lines of `frame;frame;... count`)."""
    counts: Counter = Counter()
    for line in profile.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        frames = stack.split(";")
        if not stack.strip() or frames[0].startswith("Thread._bootstrap"):
            continue  # native-only samples, the progress bar's thread
        if not any(frame.startswith("generate (trajsim/generate.py") for frame in frames):
            counts["startup (imports, tables)"] += int(number)
            continue
        counts[next((stage for frame in reversed(frames) if (stage := stage_of(frame))), "other")] += int(number)
    return counts


def main() -> None:
    counts = shares(Path(sys.argv[1]))
    total = sum(counts.values())
    for stage, samples in counts.most_common():
        print(f"{stage:28s} {100 * samples / total:5.1f}%  {samples:,} samples")
    print(f"{'all':28s} 100.0%  {total:,} samples")


if __name__ == "__main__":
    main()
