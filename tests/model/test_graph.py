"""MSGraph building checked edge by edge on made-up histories; the reference builder against a frozen run."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
from graph_reference import build_stamped
from seqdata import graphs_of

from mmsr_model.graph import EDGE_TYPES, describe

# item -> text codes (k=2) and image codes (k=1); -1 = none (item 3 has no text, item 4 no image)
TEXT = np.array([[0, 1], [1, 2], [3, -1], [-1, -1], [0, 3]])
IMAGE = np.array([[5], [6], [5], [7], [-1]])
CODES = {1: IMAGE, 2: TEXT}


def graph(history: list[int], codes: dict[int, np.ndarray] = CODES) -> dict:
    return describe(graphs_of([np.array(history)], codes))[0]


def edges_of(g: dict, rel: str) -> set[tuple]:
    return {(s, d) for s, d, r in g["edges"] if r == rel}


def test_item_nodes_are_unique_and_transitions_typed() -> None:
    g = graph([0, 1, 0, 2])
    items = {n for n in g["nodes"] if n[0] == "item"}
    assert items == {("item", 0), ("item", 1), ("item", 2)}
    i = lambda v: ("item", v)  # noqa: E731
    # 0 -> 1 and 1 -> 0 both occur: 'both' in each direction; 0 -> 2 only forward
    assert {(s, d) for s, d in edges_of(g, "both") if s[0] == "item"} == {(i(0), i(1)), (i(1), i(0))}
    assert {(s, d) for s, d in edges_of(g, "out") if s[0] == "item"} == {(i(0), i(2))}
    assert {(s, d) for s, d in edges_of(g, "in") if s[0] == "item"} == {(i(2), i(0))}
    assert edges_of(g, "self") == {(n, n) for n in g["nodes"]}
    assert g["last"] == i(2)


def test_code_nodes_transitions_and_cross_edges() -> None:
    g = graph([0, 1, 0, 2])
    t = lambda v: ("text", v)  # noqa: E731
    m = lambda v: ("image", v)  # noqa: E731
    assert {n for n in g["nodes"] if n[0] == "text"} == {t(0), t(1), t(2), t(3)}
    assert {n for n in g["nodes"] if n[0] == "image"} == {m(5), m(6)}
    text_both = {(s, d) for s, d in edges_of(g, "both") if s[0] == "text"}
    # codes {0,1} -> {1,2} -> {0,1} -> {3}; a shared code (1 -> 1) adds no transition
    assert text_both == {(t(0), t(1)), (t(1), t(0)), (t(0), t(2)), (t(2), t(0)), (t(1), t(2)), (t(2), t(1))}
    assert {(s, d) for s, d in edges_of(g, "out") if s[0] == "text"} == {(t(0), t(3)), (t(1), t(3))}
    assert {(s, d) for s, d in edges_of(g, "in") if s[0] == "text"} == {(t(3), t(0)), (t(3), t(1))}
    assert {(s, d) for s, d in edges_of(g, "both") if s[0] == "image"} == {(m(5), m(6)), (m(6), m(5))}
    assert edges_of(g, "item->text") == {
        (("item", 0), t(0)),
        (("item", 0), t(1)),
        (("item", 1), t(1)),
        (("item", 1), t(2)),
        (("item", 2), t(3)),
    }
    assert edges_of(g, "text->item") == {(d, s) for s, d in edges_of(g, "item->text")}
    assert edges_of(g, "item->image") == {(("item", 0), m(5)), (("item", 1), m(6)), (("item", 2), m(5))}
    assert edges_of(g, "image->item") == {(d, s) for s, d in edges_of(g, "item->image")}
    assert edges_of(g, "image->text") == {
        (m(5), t(0)),
        (m(5), t(1)),
        (m(6), t(1)),
        (m(6), t(2)),
        (m(5), t(3)),
    }
    assert edges_of(g, "text->image") == {(d, s) for s, d in edges_of(g, "image->text")}
    assert {r for _, _, r in g["edges"]} == set(EDGE_TYPES)


def test_positions_are_means_of_reversed_occurrences() -> None:
    g = graph([0, 1, 0, 2])  # reversed positions: 3, 2, 1, 0
    assert g["positions"][("item", 0)] == pytest.approx(2.0)  # (3 + 1) / 2
    assert g["positions"][("item", 1)] == pytest.approx(2.0)
    assert g["positions"][("item", 2)] == pytest.approx(0.0)
    assert g["positions"][("text", 1)] == pytest.approx(2.0)  # items 0, 1, 0 -> (3 + 2 + 1) / 3
    assert g["positions"][("image", 5)] == pytest.approx(4 / 3)  # items 0, 0, 2 -> (3 + 1 + 0) / 3


def test_missing_modality_and_id_only() -> None:
    g = graph([3, 4])  # item 3 has no text, item 4 no image
    assert {n for n in g["nodes"] if n[0] != "item"} == {("image", 7), ("text", 0), ("text", 3)}
    assert edges_of(g, "image->text") == set()
    assert not {(s, d) for s, d in edges_of(g, "out") if s[0] != "item"}
    ids_only = graph([0, 1, 1, 0], codes={})
    assert ids_only["nodes"] == {("item", 0), ("item", 1)}
    assert {r for _, _, r in ids_only["edges"]} == {"self", "both"}


def test_one_item_history() -> None:
    g = graph([4])
    assert g["nodes"] == {("item", 4), ("text", 0), ("text", 3)}
    assert g["last"] == ("item", 4)


NEVER = np.iinfo(np.int64).max  # written "-" below
FROZEN_SEQUENCES = [np.array(s) for s in ([0, 1, 0, 2], [3, 4, 3], [2], [4, 1, 1, 0])]
#: the reference builder's build_stamped(FROZEN_SEQUENCES, CODES), frozen from a known-good build
FROZEN_STAMPED = {
    "node_ptr": "0 9 14 17 26",
    "node_type": "0 0 0 1 1 2 2 2 2 0 0 1 2 2 0 1 2 0 0 0 1 1 2 2 2 2",
    "node_value": "0 1 2 5 6 0 1 2 3 3 4 7 0 3 2 5 3 0 1 4 5 6 0 1 2 3",
    "node_first": "0 1 3 0 1 0 0 1 3 0 1 0 1 1 0 0 0 3 1 0 3 1 0 1 1 0",
    "seq_ptr": "0 4 7 8 12",
    "item_node_at": "0 1 0 2 9 10 9 14 19 18 18 17",
    "occ_ptr": "0 15 22 25 40",
    "occ_node": "0 1 0 2 3 4 3 3 5 6 6 7 5 6 8 9 10 9 11 11 12 13 14 15 16 19 18 18 17 21 21 20 22 25 23 24 "
    "23 24 22 23",
    "occ_pos": "0 1 2 3 0 1 2 3 0 0 1 1 2 2 3 0 1 2 0 2 1 1 0 0 0 0 1 2 3 1 2 3 0 0 1 1 2 2 3 3",
    "trans_ptr": "0 13 15 15 26",
    "trans_src": "0 0 1 3 4 5 5 5 6 6 6 7 7 9 10 18 19 21 22 22 23 23 24 24 25 25",
    "trans_dst": "1 2 0 4 3 6 7 8 5 7 8 5 6 10 9 17 18 20 23 24 22 24 22 23 23 24",
    "trans_first": "1 3 2 1 2 1 1 3 2 1 3 2 2 1 2 3 1 3 1 1 3 2 3 2 1 1",
    "trans_rev_first": "2 - 1 2 1 2 2 - 1 2 - 1 1 2 1 - - - 3 3 1 2 1 2 - -",
    "cross_ptr": "0 13 16 19 31",
    "cross_a": "0 0 0 1 1 1 2 2 3 3 3 4 4 9 10 10 14 14 15 17 17 17 18 18 18 19 19 20 20 21 21",
    "cross_b": "3 5 6 4 6 7 3 8 5 6 8 6 7 11 12 13 15 16 16 20 22 23 21 23 24 22 25 22 23 23 24",
    "cross_rel": "1 3 3 1 3 3 1 3 5 5 5 5 5 1 3 3 1 3 5 1 3 3 1 3 3 3 3 5 5 5 5",
    "cross_first": "0 0 0 1 1 1 3 3 0 0 3 1 1 0 1 1 0 0 0 3 3 3 1 1 1 0 0 3 3 1 1",
}
#: the same sequences' first two, ID-only
FROZEN_ID_ONLY = {
    "node_ptr": "0 3 5",
    "node_type": "0 0 0 0 0",
    "node_value": "0 1 2 3 4",
    "node_first": "0 1 3 0 1",
    "seq_ptr": "0 4 7",
    "item_node_at": "0 1 0 2 3 4 3",
    "occ_ptr": "0 4 7",
    "occ_node": "0 1 0 2 3 4 3",
    "occ_pos": "0 1 2 3 0 1 2",
    "trans_ptr": "0 3 5",
    "trans_src": "0 0 1 3 4",
    "trans_dst": "1 2 0 4 3",
    "trans_first": "1 3 2 1 2",
    "trans_rev_first": "2 - 1 2 1",
    "cross_ptr": "0 0 0",
    "cross_a": "",
    "cross_b": "",
    "cross_rel": "",
    "cross_first": "",
}


@pytest.mark.parametrize(
    ("codes", "n_sequences", "expected"),
    [(CODES, 4, FROZEN_STAMPED), ({}, 2, FROZEN_ID_ONLY)],
    ids=["codes", "id-only"],
)
def test_stamped_graphs_match_a_frozen_build(codes: dict, n_sequences: int, expected: dict) -> None:
    """Every array of the stamped graphs (space-separated values), frozen from a known-good build."""
    built = build_stamped(FROZEN_SEQUENCES[:n_sequences], codes)
    assert {f.name for f in fields(built)} == set(expected)
    for name, values in expected.items():
        array = getattr(built, name)
        assert array.dtype == np.int64, name
        assert array.tolist() == [NEVER if v == "-" else int(v) for v in values.split()], name
