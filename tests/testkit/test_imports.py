"""Imports run one way: product code never imports the test kit or the tests; the kit, benchmarks and demo never import the tests.

``cli.py`` is the one product module allowed to import ``testkit`` (its
tester command ``replay`` runs ``testkit.replay``).  Read from the source
with ``ast``, so a lazy import inside a function is caught as well as one at
the top, and nothing is imported to find out.  The same walk finds any
``sys.path`` edit in the kit, the benchmarks and the demo: they reach the
project through the installed package (``make venv``).
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("cardmgmt", "marketing_iface", "ivr", "recharge_server", "console", "voice_prompts", "asterisk_conf")
KIT_USERS = ("testkit", "bench", "demo")


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, with its line; relative imports are resolved to nothing outside its package."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.lineno, node.args[0].value


def offences(folders: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for folder in folders:
        for path in python_files(folder):
            for line, module in imported_modules(path):
                if module.split(".")[0] in forbidden:
                    found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import tests.support\nfrom testkit import ports\ndef f():\n    from tests.conftest import X\n"
                     "    __import__('tests.e2e')\nfrom . import sibling\n")
    assert [m for _, m in imported_modules(probe)] == ["tests.support", "testkit", "tests.conftest", "tests.e2e"]


@pytest.mark.parametrize("folder", PRODUCT)
def test_product_code_imports_neither_the_kit_nor_the_tests(folder: str) -> None:
    assert python_files(folder) or folder == "asterisk_conf"
    assert offences((folder,), ("testkit", "tests")) == []


@pytest.mark.parametrize("folder", KIT_USERS)
def test_the_kit_benchmarks_and_demo_do_not_import_the_tests(folder: str) -> None:
    assert python_files(folder)
    assert offences((folder,), ("tests",)) == []


@pytest.mark.parametrize("folder", KIT_USERS)
def test_no_sys_path_edits(folder: str) -> None:
    edits = []
    for path in python_files(folder):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                    and node.value.id == "sys"):
                edits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert edits == []
