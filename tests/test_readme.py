"""The README's library example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_hizfo_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "HiZFO(" in b)
    exec(compile(example, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 8
    # steps with both parts: 1 FO forward + 2 SPSA forwards, 1 backward
    assert all(line.split()[2:] == ["3", "1"] for line in lines)
