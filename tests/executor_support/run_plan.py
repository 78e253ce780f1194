"""Run one runbook in its own process: ``python run_plan.py REPO RUNBOOK RUN_ID [--installed]``.

The test plugins are registered by passing them to `cas.planner.plan` (the
importing test puts ``tests/`` on ``PYTHONPATH``). With ``--installed`` the
processors come from entry points instead (`cas.plugins.processors()`), and
their names are printed first. The last line printed is the final status.
"""

from __future__ import annotations

import argparse

from cas import plugins as registry
from cas.executor import Executor
from cas.planner import plan
from cas.repository import Repository
from cas.runbook import load_runbook
from executor_support.plugins import CONNECTORS, PROCESSORS


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("repo")
    parser.add_argument("runbook")
    parser.add_argument("run_id")
    parser.add_argument("--installed", action="store_true")
    args = parser.parse_args()
    repo = Repository.open(args.repo)
    runbook = load_runbook(args.runbook)
    if args.installed:
        print("processors:", " ".join(sorted(registry.processors())), flush=True)
        steps = plan(runbook, connectors=CONNECTORS, processors=None)
    else:
        steps = plan(runbook, connectors=CONNECTORS, processors=PROCESSORS)
    report = Executor(repo, steps).run(args.run_id)
    print(report.result.status, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
