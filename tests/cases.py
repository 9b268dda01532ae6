"""The table-driven bad-input tests' shared pieces: `Table.case` registers a row (an action and
its expected error, or None when the action asserts the correct result itself) and `check` runs one."""
import pytest


class Table:
    def __init__(self):
        self.rows = []

    def case(self, area: str, name: str, error=None, match: str = ""):
        def register(action):
            self.rows.append(pytest.param(action, (error, match) if error else None, id=f"{area}:{name}"))
            return action
        return register


def check(action, expected, tmp_path):
    if expected is None:
        action(tmp_path)
        return
    error, match = expected
    with pytest.raises(error, match=match):
        action(tmp_path)
