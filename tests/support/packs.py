"""A node pack whose type routes by config fields of its own (``acme.pick``), installed the
way pip leaves a pack (the module and its ``.dist-info`` with the entry point) into a
directory for a ``flowyard serve`` subprocess's ``PYTHONPATH``: written directly, so no
build is needed. The console must draw its routes (it knows none of its field names)."""

from __future__ import annotations

from pathlib import Path

from support.acme_pack import Pick

#: The pack's one node type, and how a definition uses it.
PICK_TYPE = Pick.type_name

#: The pack's module: the in-process tests' own type, as a file.
_MODULE = Path(__file__).with_name("acme_pack.py")


def write_pick_pack(target: Path) -> Path:
    """Install the pack into ``target`` (created); answers ``target``."""
    (target / "flowyard_acme_pack").mkdir(parents=True, exist_ok=True)
    (target / "flowyard_acme_pack" / "__init__.py").write_text(_MODULE.read_text())
    info = target / "flowyard_acme_pack-0.0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: flowyard-acme-pack\nVersion: 0.0.1\n"
    )
    (info / "entry_points.txt").write_text("[flowyard.nodes]\nacme = flowyard_acme_pack:register\n")
    return target


def pick_workflow(name: str) -> dict[str, object]:
    """A workflow whose first node is ``acme.pick`` with two routes and an ``otherwise``."""
    return {
        "name": name,
        "start": "pick",
        "nodes": [
            {
                "id": "pick",
                "type": PICK_TYPE,
                "config": {"routes": {"yes": "accept", "no": "decline"}, "otherwise": "ask"},
            },
            {"id": "accept", "type": "end"},
            {"id": "decline", "type": "end"},
            {"id": "ask", "type": "end"},
        ],
    }
