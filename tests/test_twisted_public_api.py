"""Production code keeps to Twisted's public API: private names change without a deprecation, and
Twisted's test helpers are not meant to run inside a daemon."""

import ast
import importlib
import inspect
import pathlib
import pkgutil

import bridge

ROOT = pathlib.Path(bridge.__file__).parent.parent
SOURCES = sorted([*(ROOT / "bridge").rglob("*.py"), *(ROOT / "twisted" / "plugins").glob("*.py")])
TEST_HELPERS = ("twisted.internet.testing", "twisted.test", "twisted.trial")


def twisted_imports(tree):
    """``(module, name)`` of every ``from twisted... import name``; ``(module, "")`` of every
    ``import twisted...``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("twisted."):
            yield from ((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from ((alias.name, "") for alias in node.names
                        if alias.name.startswith("twisted."))


def private(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split("."))


def test_production_code_imports_no_private_twisted_name_and_no_test_helper():
    offenders = [f"{path.relative_to(ROOT)}: {module} {name}".strip()
                 for path in SOURCES
                 for module, name in twisted_imports(ast.parse(path.read_text()))
                 if private(module) or private(name) or module.startswith(TEST_HELPERS)]
    assert offenders == []


def production_classes():
    for info in pkgutil.walk_packages(bridge.__path__, "bridge."):
        if info.name.endswith(".__main__"):  # runs the program when imported
            continue
        module = importlib.import_module(info.name)
        yield from (value for value in vars(module).values()
                    if inspect.isclass(value) and value.__module__ == module.__name__)


def test_no_class_overrides_a_private_attribute_of_a_twisted_base():
    offenders = [f"{cls.__module__}.{cls.__name__}.{name} (from {base.__module__}.{base.__name__})"
                 for cls in production_classes()
                 for name in vars(cls) if private(name) and not name.endswith("__")
                 for base in cls.__mro__[1:]
                 if base.__module__.startswith("twisted.") and name in vars(base)]
    assert offenders == []
