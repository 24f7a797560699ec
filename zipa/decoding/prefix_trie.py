"""Token sequences interned as integer ids, for the beam searches.

Both beam searches must recognise when two hypotheses spell the same token sequence (to log-add
their scores). Comparing Python lists or tuples costs time proportional to their length, and
they cannot live in a tensor. A prefix trie gives every distinct sequence one integer id, so
hypotheses are compared, merged and gathered with integer tensor ops, and the trie's parent links
spell a sequence back out only once, for the winner.
"""

from __future__ import annotations

from collections.abc import Sequence

ROOT = 0  # the id of the empty sequence


class PrefixTrie:
    """Id 0 is the empty sequence; `extend` gives the ids of sequences one token longer."""

    def __init__(self) -> None:
        self.parents: list[int] = [-1]
        self.tokens: list[int] = [-1]
        self._children: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self.parents)

    def extend(self, ids: Sequence[int], tokens: Sequence[int]) -> list[int]:
        """The id of `sequence(ids[k]) + [tokens[k]]` for each k (created on first use)."""
        out = []
        for parent, token in zip(ids, tokens):
            child = self._children.get((parent, token))
            if child is None:
                child = len(self.parents)
                self._children[(parent, token)] = child
                self.parents.append(parent)
                self.tokens.append(token)
            out.append(child)
        return out

    def sequence(self, node: int) -> list[int]:
        """The tokens of sequence `node`, first to last."""
        out = []
        while node != ROOT:
            out.append(self.tokens[node])
            node = self.parents[node]
        return out[::-1]
