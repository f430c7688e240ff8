"""The package's shape (issue 27): no import cycle, no stage importing a later one, and the
pipeline never importing the development tools."""

from pathlib import Path

from spineflow_dev.imports import backward_imports, cycles, module_imports, stage_graph

REPO = Path(__file__).resolve().parent.parent


def test_the_package_has_no_import_cycle():
    assert cycles(module_imports()) == []


def test_no_stage_imports_a_later_one():
    graph = module_imports()
    assert backward_imports(graph) == []
    assert "core" not in stage_graph(graph)  # the core imports no stage


def test_the_pipeline_never_imports_the_development_tools():
    pipeline = [*(REPO / "spineflow").rglob("*.py"), *(REPO / "scripts").glob("*.py"),
                REPO / "Snakefile", *(REPO / "rules").glob("*.smk")]  # fmt: skip
    assert [p.name for p in pipeline if "spineflow_dev" in p.read_text()] == []


def _package(root: Path, imports: dict[str, str]) -> Path:
    """A package ``pkg`` under root whose modules hold the given import lines."""
    package = root / "pkg"
    for module, line in imports.items():
        path = package / Path(*module.split(".")[1:]).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line + "\n")
    return package


def test_a_cycle_and_a_backward_import_are_found(tmp_path):
    package = _package(tmp_path, {
        "pkg.core.a": "from pkg.core.b import x",
        "pkg.core.b": "from pkg.core import a",
        "pkg.segment.s": "from pkg.measure.m import y",
        "pkg.measure.m": "from pkg.core.a import z",
    })  # fmt: skip
    graph = module_imports(package)
    assert cycles(graph) == [["pkg.core.a", "pkg.core.b", "pkg.core.a"]]
    assert backward_imports(graph) == [("pkg.segment.s", "pkg.measure.m")]
