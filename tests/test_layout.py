"""The layout's promises that no one module's tests would notice breaking.

Every product module names the tests that cover it in a ``# test-case-name:``
line, so a reader goes from code to its tests in one step; a name that
points nowhere sends them nowhere, so each named module must exist.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ["cardmgmt", "marketing_iface", "ivr", "recharge_server", "console", "testkit", "voice_prompts", "asterisk_conf", "kamailio_conf", "cli", "twisted"]
LINE = re.compile(r"^# test-case-name:(.*)$", re.M)


def product_files() -> list[Path]:
    files = [ROOT / "cli.py"]
    for top in PRODUCT:
        files += sorted((ROOT / top).rglob("*.py"))
    return files


def module_exists(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_every_test_case_name_names_a_module_that_exists() -> None:
    wrong = []
    for path in product_files():
        for match in LINE.finditer(path.read_text(encoding="utf-8")):
            # A name may be followed by a remark in parentheses, for the reader.
            for name in (n.strip() for n in re.sub(r"\([^)]*\)", "", match.group(1)).split(",")):
                if not name or not module_exists(name):
                    wrong.append(f"{path.relative_to(ROOT)}: {name or '(empty)'}")
    assert not wrong, "test-case-name lines naming no module:\n" + "\n".join(wrong)

