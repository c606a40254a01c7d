"""The YAML reader for recipes and `--set` values: safe, bounded, strict about keys.

PyYAML's SafeLoader refuses arbitrary objects but nothing else a hostile or careless
file can do: a few hundred bytes of nested aliases ("billion laughs") expand to
billions of nodes once walked, a self-referencing anchor makes a recursive list, deep
nesting exhausts the stack, and a key written twice silently keeps the last value.
A recipe is a short, hand-edited file, so each of these is refused with the line.

Anchors and aliases stay allowed, within a bound: reusing an `env:` block with
`<<: *common` is ordinary YAML that people write, and refusing it would buy nothing
that the bound does not already buy.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_ALIAS_NODES", "MAX_DEPTH", "RecipeYAMLError", "compose_and_load"]

MAX_ALIAS_NODES = 10_000
"""Nodes that aliases may add, all uses together (a recipe has a few hundred at most)."""

MAX_DEPTH = 64
"""Nesting of sequences and mappings (a recipe nests four deep)."""


class RecipeYAMLError(yaml.YAMLError):
    """YAML that parses but that a recipe must not contain; `line` is 1-based."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _line(mark: Any) -> int | None:
    return int(mark.line) + 1 if mark is not None else None


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that counts what aliases expand to and refuses duplicate keys.

    `_expanded` counts the nodes of the document as if every alias were replaced by a
    copy of its anchor; `_sizes` holds that count for each anchored node, filled in
    when the node is complete, so an alias to a node still being composed (an anchor
    inside itself) has no size yet and is refused as recursive.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._expanded = 0
        self._from_aliases = 0
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:
                    raise RecipeYAMLError(
                        _line(event.start_mark),
                        f"alias *{event.anchor} refers to the node it is inside of",
                    )
                self._expanded += size
                self._from_aliases += size
                if self._from_aliases > MAX_ALIAS_NODES:
                    raise RecipeYAMLError(
                        _line(event.start_mark),
                        f"aliases expand to more than {MAX_ALIAS_NODES} nodes "
                        f"(at *{event.anchor}); write the values out instead",
                    )
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise RecipeYAMLError(
                _line(event.start_mark), f"nested more than {MAX_DEPTH} levels deep"
            )
        start = self._expanded
        self._expanded += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if getattr(event, "anchor", None) is not None:
            self._sizes[id(node)] = self._expanded - start
        return node

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ArithmeticError, LookupError, ValueError, TypeError, AttributeError) as exc:
            # `2001-02-30`, `!!int x`, `!!int ''`, `!!timestamp`: PyYAML's constructors
            # fail on these with whatever Python raised, and without a line.
            tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
            shown = repr(node.value[:40]) if isinstance(node.value, str) else "this node"
            detail = f" ({exc})" if type(exc) is ValueError else ""
            raise RecipeYAMLError(
                _line(node.start_mark), f"invalid YAML value: cannot read {shown} as {tag}{detail}"
            ) from None

    def compose_mapping_node(self, anchor: Any) -> Any:
        node = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], int | None] = {}
        for key, _value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            ident = (key.tag, key.value)
            line = _line(key.start_mark)
            if ident in seen:
                raise RecipeYAMLError(
                    line, f"duplicate key `{key.value}` (first at line {seen[ident]})"
                )
            seen[ident] = line
        return node


def compose_and_load(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the Python data of one YAML document.

    Raises yaml.YAMLError: RecipeYAMLError for what is refused here and for scalars
    that YAML cannot build (`2001-02-30`, `!!int x`).
    """
    loader = _RecipeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return node, data
