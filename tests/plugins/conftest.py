"""Node packs installed the way an operator installs them: built from source by pip (with
hatchling, already in the dev environment: offline) into a directory of the test session's
own, which a flowyard subprocess gets on its ``PYTHONPATH``. Besides the example pack, two
packs that must not load: one whose import fails, one that reuses a taken type name."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_PACK = ROOT / "examples" / "plugin_pack"

#: Two packs that fail to load, each in its own way; the service must run without them.
BROKEN_PACKS = {
    # Its module imports a library that is not installed.
    "flowyard-broken-pack": (
        "flowyard_broken_pack",
        "import flowyard_no_such_sdk  # noqa: F401\n\n\ndef register(registry):\n    pass\n",
    ),
    # It brings a node type called "slack": flowyard's integrations registered that first.
    "flowyard-clash-pack": (
        "flowyard_clash_pack",
        textwrap.dedent(
            """
            from flowyard.nodes.base import NodeOutcome, NodeType


            class Shout(NodeType):
                type_name = "clash.shout"

                async def execute(self, ctx, config):
                    return NodeOutcome(output="HEY")


            class FakeSlack(Shout):
                type_name = "slack"


            def register(registry):
                registry.register(Shout)
                registry.register(FakeSlack)
            """
        ),
    ),
}


def _write_pack(where: Path, dist: str, module: str, source: str) -> Path:
    """A minimal installable pack: pyproject.toml (hatchling, one entry point) and a
    module."""
    root = where / dist
    (root / module).mkdir(parents=True)
    (root / module / "__init__.py").write_text(source)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"

            [project]
            name = "{dist}"
            version = "0.0.1"

            [project.entry-points."flowyard.nodes"]
            {module.removeprefix("flowyard_").removesuffix("_pack")} = "{module}:register"

            [tool.hatch.build.targets.wheel]
            packages = ["{module}"]
            """
        )
    )
    return root


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed example pack and the two broken packs (what
    ``pip install --target`` leaves: the modules and their ``.dist-info`` with the entry
    points), for a subprocess's ``PYTHONPATH``. Never on this process's ``sys.path``: the
    other tests must not see these packs."""
    target = tmp_path_factory.mktemp("plugins")
    sources = tmp_path_factory.mktemp("plugin-sources")
    packs = [str(EXAMPLE_PACK)] + [
        str(_write_pack(sources, dist, module, source))
        for dist, (module, source) in BROKEN_PACKS.items()
    ]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(target),
            *packs,
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    return target


def load_fake_discord() -> ModuleType:
    """The example pack's local Discord (``flowyard_example_pack.testing``, stdlib only),
    loaded from its source file so this process's ``sys.path`` stays free of the packs."""
    path = EXAMPLE_PACK / "src" / "flowyard_example_pack" / "testing.py"
    spec = importlib.util.spec_from_file_location("example_pack_testing", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve the module's annotations through sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
