"""The package layout of docs/architecture.md ("Layers"), checked on the source text (AST, nothing imported).

- every ``rails`` import of a module under ``src/rails`` (function-level imports included) is allowed for its
  layer by the import table;
- the table below is the one in docs/architecture.md;
- no file in ``src/`` is longer than 400 lines;
- no test imports a file of ``scripts/`` (they run scripts as subprocesses, or import library modules);
- there is no ``rails.utils``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SRC = REPO_ROOT / "src"
PACKAGE = SRC / "rails"
MAX_LINES = 400

# layer -> the rails packages / modules it owns (docs/architecture.md, "Layers"; rails.results: "reads files only")
LAYERS: dict[str, tuple[str, ...]] = {
    "apps": ("rails.train", "rails.eval", "rails.runs"),
    "operations": ("rails.callbacks",),
    "retrieval": ("rails.retrieval",),
    "models": ("rails.models",),
    "kernels": ("rails.kernels",),
    "data": ("rails.datamodules",),
    "foundation": (
        "rails.batch",
        "rails.io",
        "rails.checks",
        "rails.pretrained",
        "rails.log",
        "rails.config",
    ),
    "results": ("rails.results", "rails.results_compare", "rails.results_curves", "rails.results_screens"),
    "root": ("rails",),  # rails/__init__.py
}
# layer -> the layers it may import (its own layer always included)
ALLOWED: dict[str, set[str]] = {
    "apps": {"apps", "operations", "retrieval", "models", "kernels", "data", "foundation", "results"},
    "operations": {"operations", "foundation"},
    "retrieval": {"retrieval", "models", "kernels", "foundation"},
    "models": {"models", "kernels", "foundation"},
    "kernels": {"kernels"},
    "data": {"data", "foundation"},
    "foundation": {"foundation"},
    "results": {"results", "foundation"},
    "root": {"root"},
}


def layer_of(module: str) -> str | None:
    """The layer owning a dotted module name (the longest matching package wins); None when unknown."""
    if module == "rails":
        return "root"
    owners = [
        (len(package), layer)
        for layer, packages in LAYERS.items()
        for package in packages
        if package != "rails" and (module == package or module.startswith(package + "."))
    ]
    return max(owners)[1] if owners else None


def module_name(path: Path) -> str:
    """``src/rails/models/losses/negatives.py`` -> ``rails.models.losses.negatives``."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rails_imports(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import of a ``rails`` module in ``source`` (relative ones resolved)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "rails" or alias.name.startswith("rails."):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == "rails" or (node.level and not node.module):  # from rails import io -> rails.io
                for alias in node.names:
                    yield node.lineno, f"{target}.{alias.name}"
            elif target.startswith("rails."):
                yield node.lineno, target


def violations(paths: list[Path]) -> list[str]:
    """One line per import that the table does not allow, naming the file, the line and the import."""
    found = []
    for path in paths:
        module = module_name(path)
        layer = layer_of(module)
        relative = path.relative_to(REPO_ROOT)
        if layer is None:
            found.append(f"{relative}: module {module} belongs to no layer of docs/architecture.md")
            continue
        source = path.read_text()
        for line, imported in rails_imports(source, module, path.name == "__init__.py"):
            target = layer_of(imported)
            if target not in ALLOWED[layer]:
                allowed = ", ".join(sorted(ALLOWED[layer] - {layer})) or "nothing else from rails"
                found.append(
                    f"{relative}:{line} imports {imported} (layer {target or 'unknown'}); "
                    f"layer {layer} may import: {allowed}"
                )
    return found


def files_of(layer: str) -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if layer_of(module_name(p)) == layer)


def test_checker_names_the_file_and_the_import(tmp_path: Path) -> None:
    source = "import torch\nfrom rails.models.similarity import MoLSimilarity\nfrom . import helpers\n"
    assert list(rails_imports(source, "rails.kernels.mol", False)) == [
        (2, "rails.models.similarity"),
        (3, "rails.kernels.helpers"),
    ]
    assert list(rails_imports(source, "rails.datamodules", True)) == [
        (2, "rails.models.similarity"),
        (3, "rails.datamodules.helpers"),
    ]
    assert list(rails_imports("def f():\n    from rails import io\n", "rails.kernels.x")) == [(2, "rails.io")]
    assert layer_of("rails.runs.ddp") == "apps" and layer_of("rails.batch") == "foundation"
    assert layer_of("rails.utils.instantiate") is None and layer_of("rails") == "root"
    kernel = PACKAGE / "kernels" / "mol_topk_triton.py"
    messages = [m for m in violations([kernel]) if "rails.models" in m] if kernel.is_file() else []
    assert all("layer kernels may import: nothing else from rails" in m for m in messages)


def test_the_table_is_the_one_in_the_architecture_doc() -> None:
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    rows = [
        line
        for line in text.splitlines()
        if re.match(r"\| (apps|operations|retrieval|models|kernels|data|foun)", line)
    ]
    assert len(rows) == 7, "docs/architecture.md: the Layers table has one row per layer"
    for row in rows:
        layer, packages, _, may_import = [cell.strip() for cell in row.strip("|").split("|")]
        named = {re.sub(r"\(.*", "", p).strip() for p in re.findall(r"`(rails\.[a-z_.]+)`", packages)}
        assert named == set(LAYERS[layer]), f"docs/architecture.md layer {layer}: packages {sorted(named)}"
        lower = list(LAYERS)[list(LAYERS).index(layer) + 1 :]
        if "everything below" in may_import:
            documented = {layer, *lower} - {"root"}
        elif "only each other" in may_import:
            documented = {layer}
        else:
            documented = {layer} | {name for name in ALLOWED if re.search(rf"\b{name}\b", may_import)}
        assert documented == ALLOWED[layer], f"docs/architecture.md layer {layer} may import: {may_import}"


@pytest.mark.parametrize(
    "layer",
    [
        "apps",
        "operations",
        "retrieval",
        "models",
        "kernels",
        "data",
        "foundation",
        "results",
        "root",
    ],
)
def test_imports_follow_the_layer_table(layer: str) -> None:
    assert files_of(layer), f"no module of layer {layer} under {PACKAGE}"
    found = violations(files_of(layer))
    assert not found, "imports against docs/architecture.md (Layers):\n" + "\n".join(found)


def test_every_module_belongs_to_a_layer() -> None:
    unknown = [p for p in PACKAGE.rglob("*.py") if layer_of(module_name(p)) is None]
    assert not unknown, "modules outside the layers of docs/architecture.md: " + ", ".join(
        str(p.relative_to(REPO_ROOT)) for p in unknown
    )


def test_there_is_no_rails_utils() -> None:
    assert not (PACKAGE / "utils").exists(), (
        f"{(PACKAGE / 'utils').relative_to(REPO_ROOT)} exists: its modules belong to named packages "
        f"({', '.join(sorted(p.name for p in (PACKAGE / 'utils').glob('*.py')))})"
    )


@pytest.mark.parametrize(
    "package",
    [
        "callbacks",
        "datamodules",
        "kernels",
        "models",
        "retrieval",
        "runs",
        "<top level>",
    ],
)
def test_no_source_file_is_over_400_lines(package: str) -> None:
    folder = SRC if package == "<top level>" else PACKAGE / package
    paths = folder.glob("*.py") if package == "<top level>" else folder.rglob("*.py")
    if package == "<top level>":
        paths = [*PACKAGE.glob("*.py"), *(SRC / "hydra_plugins").rglob("*.py")]
    long = {p: len(p.read_text().splitlines()) for p in paths}
    long = {p: n for p, n in long.items() if n > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them): " + ", ".join(
        f"{p.relative_to(REPO_ROOT)} ({n})" for p, n in sorted(long.items())
    )


def script_imports(path: Path) -> Iterator[str]:
    """How a test file imports a file of ``scripts/``: import statements and importlib/runpy loaders."""
    tree = ast.parse(path.read_text())
    loaders = {"spec_from_file_location", "run_path", "SourceFileLoader", "import_module", "module_from_spec"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name == "scripts" or name.startswith("scripts."):
                    yield f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {name}"
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            constants = [
                c for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)
            ]
            strings = [c.value for c in sorted(constants, key=lambda c: (c.lineno, c.col_offset))]
            if name in loaders and any("scripts" in s or s.endswith(".py") for s in strings):
                yield f"{path.relative_to(REPO_ROOT)}:{node.lineno} loads {' / '.join(strings)} with {name}"
            if name == "insert" and any(s.rstrip("/").endswith("scripts") for s in strings):
                yield f"{path.relative_to(REPO_ROOT)}:{node.lineno} puts scripts/ on sys.path"


def test_script_import_detector(tmp_path: Path) -> None:
    sample = tmp_path / "test_x.py"
    sample.write_text(
        "import importlib.util\nfrom scripts import bench\n"
        'spec = importlib.util.spec_from_file_location("b", ROOT / "scripts" / "bench_hstu.py")\n'
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(f"{__name__}.REPO_ROOT", tmp_path)
        found = list(script_imports(sample))
    assert found == [
        "test_x.py:2 imports scripts",
        "test_x.py:3 loads b / scripts / bench_hstu.py with spec_from_file_location",
    ]


def test_no_test_imports_a_script() -> None:
    found = [line for path in sorted((REPO_ROOT / "tests").rglob("*.py")) for line in script_imports(path)]
    assert not found, "tests import files of scripts/ (import the library module instead):\n" + "\n".join(
        found
    )
