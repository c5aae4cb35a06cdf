"""Drafts: a workflow's editable next version, changed node by node with undo and redo.

``patching`` applies JSON Patches and derives their inverses, ``ops`` compiles node and
edge operations to patches, ``routes`` finds references through the node registry. All of
it is pure (no database): the service loads and stores drafts and their steps.
"""
