"""The dependency order of docs/architecture.md: no package imports one above it.

Read from the source with `ast` (every import, also inside functions; not those under
`if TYPE_CHECKING:`, which only name types), so the rule holds without running anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

# Lowest first. A module may import its own layer and the layers below it.
LAYERS: list[set[str]] = [
    {
        "kassa.clock",
        "kassa.config",
        "kassa.db",
        "kassa.deps",
        "kassa.errors",
        "kassa.fields",
        "kassa.ids",
        "kassa.limits",
        "kassa.migrate",
        "kassa.openapi",
        "kassa.pagination",
        "kassa.states",
        "kassa",
    },
    {"kassa.outbox"},
    {"kassa.auth"},
    # Catalog and inventory are one layer: a product is created with its stock, and stock is
    # managed by the product's owner.
    {"kassa.catalog", "kassa.inventory"},
    {"kassa.carts"},
    {"kassa.payments"},
    {"kassa.orders"},
    {"kassa.checkout"},
    {"kassa.ops", "kassa.idempotency"},
    {"kassa.app", "kassa.cli", "kassa.models", "kassa.seed", "kassa.__main__", "kassa.migrations"},
]


def layer_of(module: str) -> int:
    parts = module.split(".")
    for size in range(min(len(parts), 2), 0, -1):
        prefix = ".".join(parts[:size])
        for index, layer in enumerate(LAYERS):
            if prefix in layer:
                return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def module_name(path: Path) -> str:
    relative = path.relative_to(SRC).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(tree: ast.AST) -> list[str]:
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "kassa":
                found.extend(f"kassa.{alias.name}" for alias in node.names)
            else:
                found.append(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [name for name in found if name == "kassa" or name.startswith("kassa.")]


def sources() -> list[Path]:
    return sorted((SRC / "kassa").rglob("*.py"))


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_a_layer_above_its_own(path: Path) -> None:
    module = module_name(path)
    own = layer_of(module)
    upward = [
        name for name in imports_of(ast.parse(path.read_text(), str(path))) if layer_of(name) > own
    ]
    assert upward == [], f"{module} (layer {own}) imports above itself: {upward}"


def test_payments_is_a_leaf_below_checkout_and_orders() -> None:
    assert layer_of("kassa.payments.service") < layer_of("kassa.orders.service")
    assert layer_of("kassa.orders.service") < layer_of("kassa.checkout.events")
    assert layer_of("kassa.outbox.service") < layer_of("kassa.payments.refunds")


def test_the_rule_catches_an_upward_import() -> None:
    tree = ast.parse("from kassa.checkout import completion\nimport kassa.orders.service\n")
    names = imports_of(tree)
    assert names == ["kassa.checkout", "kassa.orders.service"]
    assert all(layer_of(name) > layer_of("kassa.payments.service") for name in names)
