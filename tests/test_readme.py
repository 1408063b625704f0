"""The README's library example runs as written (three small models, a few seconds)."""

from __future__ import annotations

import re
from pathlib import Path


def test_readme_library_example_runs(tmp_path, monkeypatch, capsys):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Library"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOOMTL_CACHE", str(tmp_path / "cache"))  # no data cache outside the test
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert re.fullmatch(r"\[(\s*(True|False))+\] \d+\.\d+\n", printed), printed
