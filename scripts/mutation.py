"""Mutation testing of the engine's rules: mutmut mutates the files pyproject's
[tool.mutmut] names, and runs the unit tests against each mutant of the functions in
SCOPE; this prints the score per module and the survivors. Survivors that
docs/mutation.md names as equivalent (no test can tell them from the original) are left
out of the score and counted apart.

Usage: scripts/mutation [--fresh] [--jobs N] [mutant name patterns, within SCOPE]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = ROOT / ".venv" / "bin" / "mutmut"
DOC = ROOT / "docs" / "mutation.md"
LOG = ROOT / "mutants" / "mutation-run.log"
# mutmut's names: app.pipeline.step.xǁStepRunnerǁ_commit__mutmut_12, app.x.x_f__mutmut_3
NAME = re.compile(r"^\s*(?P<name>(?P<module>[\w.]+?)\.x[_ǁ]\S+__mutmut_\d+): (?P<status>.+)$")
DETECTED = ("killed", "timeout")
# The rules, by mutmut's mutant names: whole modules, and the launcher's rules of how a
# run ends (its wiring of the database and the step is tested against MariaDB).
SCOPE = (
    "app.pipeline.step.*",
    "app.pipeline.source.*",
    "app.pipeline.retry.*",
    "app.pipeline.isolate.*",
    "app.runtime.operator.*",
    "app.runtime.automation.*",
    "app.runtime.reconciler.*",
    "app.repository.rules.*",
    "app.runtime.launcher.xǁRunningJobǁ*",
    "app.runtime.launcher.xǁ_Outcomeǁ*",
    "app.runtime.launcher.x__expected__*",
)  # a mutant that hangs until mutmut's timeout is caught too


def equivalents() -> set[str]:
    """The mutant names in backticks in docs/mutation.md's section "Equivalent mutants"."""
    if not DOC.exists():
        return set()
    text = DOC.read_text(encoding="utf-8").partition("\n## Equivalent mutants\n")[2]
    section = text.partition("\n## ")[0]
    return set(re.findall(r"`([\w.ǁ]+__mutmut_\d+)`", section))


def results() -> list[tuple[str, str, str]]:
    """(module, mutant, status) of every mutant of the last run."""
    out = subprocess.run(
        [str(MUTMUT), "results", "--all", "true"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = []
    for line in out.splitlines():
        match = NAME.match(line)
        if match and any(fnmatch(match["name"], pattern) for pattern in SCOPE):
            found.append((match["module"], match["name"], match["status"].strip()))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="forget the last run (mutants/)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants at once")
    parser.add_argument(
        "patterns", nargs="*", help="mutant names for mutmut run, e.g. 'app.pipeline.step*'"
    )
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    LOG.parent.mkdir(exist_ok=True)
    started = time.monotonic()
    with LOG.open("w", encoding="utf-8") as log:
        run = subprocess.run(
            [str(MUTMUT), "run", "--max-children", str(args.jobs), *(args.patterns or SCOPE)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    elapsed = time.monotonic() - started
    if run.returncode != 0:
        sys.stderr.write(LOG.read_text(encoding="utf-8")[-3000:])
        print(f"mutmut run failed ({run.returncode}); its output: {LOG}", file=sys.stderr)
        return run.returncode

    named = equivalents()
    found = results()
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: list[tuple[str, str]] = []
    for module, name, status in found:
        equivalent = status not in DETECTED and name in named
        by_module[module]["equivalent" if equivalent else status] += 1
        if status not in DETECTED and not equivalent:
            survivors.append((name, status))

    print(f"{'module':<28} {'mutants':>7} {'killed':>7} {'equiv.':>7} {'left':>5} {'score':>7}")
    totals: Counter[str] = Counter()
    for module in sorted(by_module):
        counts = by_module[module]
        totals.update(counts)
        print(_row(module, counts))
    print(_row("all", totals))
    print(f"\n{elapsed:.0f} s for the run ({args.jobs} at once); mutmut's log: {LOG}")
    if survivors:
        print("\nNot caught (a test to write, or an equivalent to name in docs/mutation.md):")
        for name, status in survivors:
            print(f"  {name}: {status}")
    # A change to a function renumbers its mutants: a name left behind is another edit now.
    stale = named - {name for _, name, status in found if status not in DETECTED}
    if stale:
        print(
            "\ndocs/mutation.md names as equivalent mutants this run kills or does not have:",
            *sorted(stale),
        )
    return 0


def _row(module: str, counts: Counter[str]) -> str:
    total = sum(counts.values())
    killed = sum(counts[status] for status in DETECTED)
    equivalent = counts["equivalent"]
    left = total - killed - equivalent
    score = killed / (total - equivalent) if total > equivalent else 1.0
    return f"{module:<28} {total:>7} {killed:>7} {equivalent:>7} {left:>5} {score:>7.1%}"


if __name__ == "__main__":
    sys.exit(main())
