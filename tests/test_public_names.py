"""The names the notebooks use are a tested contract, so a refactor can never break a chapter silently.

Every ``sd.<name>`` and ``sd.<module>.<name>`` a chapter's code reaches (also through ``import sdlab.X`` and
``from sdlab.X import Y``) must exist, be listed in its module's ``__all__``, and not be a deprecated alias:
a renamed function may keep its old name for readers' own code, but the chapters use the current one.
"""
import ast
import importlib
import json
import pkgutil
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

import sdlab

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PACKAGE = "sdlab"
DEPTH = 2  # sd.X and sd.X.Y; deeper chains (sd.data.ANIMALS.index) are attributes of a name, not names

# A line IPython runs but Python cannot parse: %magic, !shell, and their assigned forms (x = !ls, y = %time f()).
MAGIC = re.compile(r"^(\s*)(?:[\w.,\s\[\]()]+=\s*)?[%!]")
CHAIN = re.compile(r"\bsd((?:\.[A-Za-z_]\w*)+)")


@dataclass(frozen=True)
class Use:
    notebook: str
    name: str  # dotted, relative to the package: "plotting.show_images", "NoiseSchedule"
    cell: int  # index in the notebook's "cells", markdown ones included
    line: int  # line in the cell; 0 when the cell did not parse and was scanned as text

    def __str__(self):
        where = f"cells[{self.cell}]" + (f", line {self.line}" if self.line else ", unparsed")
        return f"{self.notebook} ({where}) uses sd.{self.name}"


def python_source(source: str) -> str:
    """A cell's source with IPython-only lines made ``pass``, keeping the indentation and the line numbers."""
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):  # a cell magic: the rest is Python for %%time, %%capture...
        lines[0] = ""
    return "\n".join(f"{m[1]}pass" if (m := MAGIC.match(line)) else line for line in lines)


def _chain(node: ast.AST) -> list[str] | None:
    """["sd", "plotting", "show_images"] for sd.plotting.show_images; None when the root is not a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _names_in_tree(tree: ast.AST, aliases: dict[str, str]) -> list[tuple[str, int]]:
    """The package names a parsed cell uses, in order; ``aliases`` (local name -> package path) is updated."""
    found = []

    def add(path, line):
        if path:
            found.append((".".join(path.split(".")[:DEPTH]), line))

    for node in ast.walk(tree):  # imports first, so that a cell's own `import sdlab as sd` counts
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name != PACKAGE and not alias.name.startswith(PACKAGE + "."):
                    continue
                inner = alias.name[len(PACKAGE) + 1:]
                add(inner, node.lineno)
                aliases[alias.asname or PACKAGE] = inner if alias.asname else ""  # `import sdlab.X` binds sdlab
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module != PACKAGE and not node.module.startswith(PACKAGE + "."):
                continue
            inner = node.module[len(PACKAGE) + 1:]
            for alias in node.names:
                if alias.name == "*":
                    add(inner, node.lineno)
                    continue
                path = f"{inner}.{alias.name}" if inner else alias.name
                add(path, node.lineno)
                aliases[alias.asname or alias.name] = path
    outer = set()  # the Attribute nodes that are part of a longer chain: count each chain once
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in outer:
            inner_node = node.value
            while isinstance(inner_node, ast.Attribute):
                outer.add(id(inner_node))
                inner_node = inner_node.value
            chain = _chain(node)
            if chain and chain[0] in aliases:
                base = aliases[chain[0]]
                add(".".join(p for p in (base, *chain[1:]) if p), node.lineno)
    return sorted(found, key=lambda name_line: name_line[1])


def collect(notebook: dict, name: str = "notebook") -> list[Use]:
    """Every package name a notebook's code cells use (once each, at its first use), from the notebook's JSON.

    ``sd`` means the package from the first cell on, as in every chapter. A cell that does not parse even with
    its magics stripped is scanned as text for ``sd.X.Y``, so a name it uses is still checked.
    """
    aliases = {"sd": ""}
    uses, seen = [], set()
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        code = python_source(source)
        try:
            found = _names_in_tree(ast.parse(code), aliases)
        except (SyntaxError, ValueError):  # ValueError: a null byte
            found = [(".".join(m[1].split(".")[1:DEPTH + 1]), 0) for m in CHAIN.finditer(code)]
        for dotted, line in found:
            if (name, dotted) not in seen:
                seen.add((name, dotted))
                uses.append(Use(name, dotted, index, line))
    return uses


def read_notebook(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


MISSING = object()


def access(dotted: str, package: ModuleType = sdlab) -> tuple[list[str], list[str]]:
    """Reach package.<dotted> as a notebook would: (problems, deprecation messages); no problems means it is there.

    A module-level name must be in its module's ``__all__``, unless reaching it warns that it is deprecated:
    an old alias may be left out of ``__all__``, and the deprecation check reports it on its own.
    """
    problems, deprecations = [], []
    obj, path = package, package.__name__
    for part in dotted.split("."):
        parent, path = obj, f"{path}.{part}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            obj = getattr(parent, part, MISSING)
            if obj is MISSING and hasattr(parent, "__path__"):  # a submodule that nothing has imported yet
                try:
                    obj = importlib.import_module(path)
                except ModuleNotFoundError:
                    pass
        warned = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
        deprecations += [f"{path}: {message}" for message in warned]
        if obj is MISSING:
            problems.append(f"{path} does not exist")
            break
        if isinstance(parent, ModuleType) and not warned and part not in getattr(parent, "__all__", ()):
            problems.append(f"{path} exists but is not in {parent.__name__}.__all__")
    return problems, deprecations


USES = [use for path in NOTEBOOKS for use in collect(read_notebook(path), path.stem)]


# ---- the collector itself: the contract below cannot pass by collecting nothing ----------------------------------

SYNTHETIC = {
    "cells": [
        {"cell_type": "markdown", "source": "Prose may say sd.not_code, which is no use of a name."},
        {"cell_type": "code", "source": [
            "try:\n", "    import google.colab\n", "    %pip install -q sdlab\n", "except ImportError:\n", "    pass\n",
            "!ls\n", "files = !ls\n", "import sdlab as sd\n", "import numpy as np\n",
        ]},
        {"cell_type": "code", "source": (
            "%%time\n"
            "x = sd.images.load_cat(size=32)\n"
            "schedule = sd.NoiseSchedule('cosine')\n"
            "fig = sd.plotting.show_images([x], titles=[f'{sd.SCHEDULE_NAMES[0]}'])\n"
            "np.sqrt(2)  # another module's names are not ours\n"
            "config = sd.UNetConfig.tiny()\n"
            "first = sd.data.ANIMALS.index('cat')  # a name's own attributes are not names\n"
            "fn = sd.plotting.no_such_function\n"
        )},
        {"cell_type": "code", "source": (
            "from sdlab.samplers import DDIMSampler as Sampler, sample\n"
            "from sdlab import checks\n"
            "import sdlab.train\n"
            "import sdlab.evaluate as ev\n"
            "checks.check_add_noise(lambda *a: None)\n"
            "sdlab.train.TrainConfig(steps=1)\n"
            "ev.accuracy\n"
            "Sampler.set_timesteps\n"
        )},
        {"cell_type": "code", "source": "display(sd.widgets.animate  # a cell that does not parse\n"},
        {"cell_type": "code", "source": "sd.images.load_cat()  # already collected: once per notebook\n"},
    ]
}
SYNTHETIC_NAMES = [
    "images.load_cat", "NoiseSchedule", "plotting.show_images", "SCHEDULE_NAMES", "UNetConfig.tiny", "data.ANIMALS",
    "plotting.no_such_function", "samplers.DDIMSampler", "samplers.sample", "checks", "train", "evaluate",
    "checks.check_add_noise", "train.TrainConfig", "evaluate.accuracy", "widgets.animate",
]


def test_collector_finds_every_use_once_through_magics_aliases_imports_and_unparsed_cells():
    uses = collect(SYNTHETIC, "synthetic")
    assert sorted(use.name for use in uses) == sorted(set(SYNTHETIC_NAMES))
    assert [use.name for use in uses][:3] == ["images.load_cat", "NoiseSchedule", "plotting.show_images"]
    by_name = {use.name: use for use in uses}
    assert (by_name["NoiseSchedule"].cell, by_name["NoiseSchedule"].line) == (2, 3)  # the %%time line kept its place
    assert by_name["widgets.animate"].line == 0
    assert str(by_name["widgets.animate"]) == "synthetic (cells[4], unparsed) uses sd.widgets.animate"


def test_collector_caps_chains_at_a_module_name():
    # DDIMSampler.set_timesteps came through an alias deeper than sd.X.Y; the cap keeps sd.X.Y.
    uses = collect({"cells": [{"cell_type": "code", "source": "sd.a.b.c.d\nfrom sdlab.x import y\ny.z.w\n"}]})
    assert [use.name for use in uses] == ["a.b", "x.y"]


def test_access_reports_the_missing_name_the_collector_found():
    # Only this: whether the synthetic notebook's real names still exist is the contract's business, below.
    reported = {use.name: access(use.name)[0] for use in collect(SYNTHETIC)}
    assert reported["plotting.no_such_function"] == ["sdlab.plotting.no_such_function does not exist"]


def test_access_requires_all_and_tolerates_a_deprecated_alias():
    fake = ModuleType("fake")
    fake.__all__ = ["listed"]
    fake.listed, fake.unlisted = object(), object()

    def __getattr__(name):
        if name == "old_name":
            warnings.warn("old_name is deprecated; use listed", DeprecationWarning, stacklevel=2)
            return fake.listed
        raise AttributeError(name)

    fake.__getattr__ = __getattr__
    assert access("listed", fake) == ([], [])
    assert access("unlisted", fake) == (["fake.unlisted exists but is not in fake.__all__"], [])
    assert access("old_name", fake) == ([], ["fake.old_name: old_name is deprecated; use listed"])
    assert access("missing.deeper", fake) == (["fake.missing does not exist"], [])


# ---- the contract ----------------------------------------------------------------------------------------------


def test_the_notebooks_use_enough_names_for_the_contract_to_mean_something():
    assert len(NOTEBOOKS) >= 3
    per_notebook = {path.stem: sum(use.notebook == path.stem for use in USES) for path in NOTEBOOKS}
    assert all(per_notebook.values()), f"a notebook uses no sdlab name: {per_notebook}"
    assert len({use.name for use in USES}) >= 40, per_notebook


@pytest.mark.parametrize("use", USES, ids=lambda use: f"{use.notebook}:sd.{use.name}")
def test_notebook_name_exists_and_is_public(use):
    problems, _ = access(use.name)
    assert not problems, f"{use}: " + "; ".join(problems)


@pytest.mark.parametrize("use", USES, ids=lambda use: f"{use.notebook}:sd.{use.name}")
def test_notebook_name_is_not_deprecated(use):
    _, deprecations = access(use.name)
    assert not deprecations, f"{use}, a deprecated alias; use the current name: " + "; ".join(deprecations)


MODULES = [sdlab] + [importlib.import_module(f"{PACKAGE}.{info.name}") for info in pkgutil.iter_modules(sdlab.__path__)]


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.__name__)
def test_every_name_in_all_exists(module):
    assert hasattr(module, "__all__"), f"{module.__name__} has no __all__"
    names = list(module.__all__)
    assert len(names) == len(set(names)), f"{module.__name__}.__all__ lists a name twice"
    with warnings.catch_warnings(record=True):  # a deprecated alias may be listed: it exists
        warnings.simplefilter("always")
        missing = [name for name in names if not hasattr(module, name)]
    assert not missing, f"{module.__name__}.__all__ lists names it does not define: {missing}"
