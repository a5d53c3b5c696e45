"""The task kind is the unit of extension: nothing outside ``tasks/`` branches on it.

Python modules outside ``src/loupe/tasks/`` and Svelte/TS files outside
``web/src/tasks/`` never compare a project's task to a constant; they ask the
task kind (``loupe.tasks.kind_of``, ``taskUI``).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TASK_NAMES = r"(?:classify|score|segment|volume)"
PY_PATTERNS = [
    re.compile(rf"\btask\s*(?:==|!=)\s*['\"]{TASK_NAMES}['\"]"),
    re.compile(rf"['\"]{TASK_NAMES}['\"]\s*(?:==|!=)\s*[\w.]*task\b"),
    re.compile(rf"\btask\s+(?:not\s+)?in\s*[\(\[\{{]\s*['\"]{TASK_NAMES}['\"]"),
]
WEB_PATTERNS = [
    re.compile(rf"\btask\s*(?:===|!==|==|!=)\s*['\"]{TASK_NAMES}['\"]"),
    re.compile(rf"['\"]{TASK_NAMES}['\"]\s*(?:===|!==|==|!=)\s*[\w.?]*task\b"),
]


def _offenders(files: list[Path], patterns: list[re.Pattern[str]]) -> list[str]:
    out = []
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if any(p.search(line) for p in patterns):
                out.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    return out


def test_patterns_catch_a_task_branch() -> None:
    # the check itself can fail: these lines are what it looks for
    for line in ('if project.task == "classify":', "if 'score' != data.task:",
                 'if task not in ("classify", "score"):'):  # fmt: skip
        assert any(p.search(line) for p in PY_PATTERNS), line
    assert any(p.search("task === 'score' ? a : b") for p in WEB_PATTERNS)


def test_no_python_module_outside_tasks_branches_on_the_task() -> None:
    src = ROOT / "src" / "loupe"
    files = [
        p
        for p in src.rglob("*.py")
        if "tasks" not in p.relative_to(src).parts[:1] and "migrations" not in p.parts
    ]
    assert len(files) > 50
    assert _offenders(files, PY_PATTERNS) == []


def test_no_web_component_outside_tasks_branches_on_the_task() -> None:
    web = ROOT / "web" / "src"
    files = [
        p
        for p in web.rglob("*")
        if p.suffix in (".svelte", ".ts")
        and p.relative_to(web).parts[0] != "tasks"
        and p.name != "api-types.ts"
    ]
    assert len(files) > 20
    assert _offenders(files, WEB_PATTERNS) == []
