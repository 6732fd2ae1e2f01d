"""Extract stage on tiny files the tests write: cleaning, k-core, ids, splits, rejects, atomicity."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import pipeline.stages.extract.run as extract_run
from pipeline.app.cli import app
from pipeline.core.config import Settings, load_settings
from pipeline.core.errors import PipelineError
from pipeline.stages.extract import run_extract
from pipeline.stages.extract.output import OUTPUT_FILES, TABLES
from pipeline.stages.extract.rows import clean_text

DAY = 86_400


def _jsonl(path: Path, records: list[Any], gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if gz:
        path.write_bytes(gzip.compress(text.encode(), mtime=0))
    else:
        path.write_text(text)
    return path


def _review(user: str, item: str, day: int, rating: float = 5.0) -> dict[str, Any]:
    return {"reviewerID": user, "asin": item, "unixReviewTime": 1_500_000_000 + day * DAY, "overall": rating}


def _sequences(path: Path, users: dict[str, list[str]]) -> Path:
    path.write_text("".join(f"{u} {' '.join(items)}\n" for u, items in users.items()))
    return path


def _table(settings: Settings, dataset: str, name: str) -> list[dict[str, Any]]:
    return pq.read_table(settings.dataset_dir(dataset) / f"{name}.parquet").to_pylist()


def _index(settings: Settings, dataset: str, kind: str) -> dict[str, int]:
    return {r[f"{kind}_id"]: r[f"{kind}_idx"] for r in _table(settings, dataset, f"{kind}_index")}


def test_dedupe_keeps_first_line_and_meta_is_one_row_per_item(tmp_path: Path) -> None:
    reviews = _jsonl(
        tmp_path / "r.json.gz",
        [
            _review("u1", "a", 1, 4.0),
            _review("u1", "a", 1, 2.0),
            _review("u1", "b", 2),
            _review("u2", "a", 1),
        ],
        gz=True,
    )
    meta = _jsonl(
        tmp_path / "m.json",
        [
            {"asin": "a", "title": "<b>First</b> &amp; best", "category": ["X", "X", "Y &amp; Z"]},
            {"asin": "a", "title": "Second copy"},
            {"asin": "zzz", "title": "never reviewed"},
        ],
    )
    settings = load_settings(kcore=0)
    report = run_extract(settings, "d", "amazon2018", reviews, meta)
    assert (report.interactions_read, report.duplicates_dropped, report.interactions) == (4, 1, 3)
    rows = _table(settings, "d", "interactions")
    assert [(r["user_id"], r["item_id"], r["rating"]) for r in rows] == [
        ("u1", "a", 4.0),
        ("u1", "b", 5.0),
        ("u2", "a", 5.0),
    ]
    items = {r["item_id"]: r for r in _table(settings, "d", "items")}
    assert set(items) == {"a", "b"}  # exactly the reviewed items; b has no meta
    assert items["a"]["title"] == "First & best"
    assert items["a"]["categories"] == ["X", "Y & Z"]
    assert items["b"]["title"] is None and items["b"]["categories"] is None


def test_kcore_is_iterative(tmp_path: Path) -> None:
    # u1..u3 each review i1..i3 (a 3-core block). u4 reviews i1, i2 and i4, and u5 reviews i4:
    # round 1 drops u5 (1 review) and i4 (2 reviews); round 2 then drops u4 (2 left).
    users = {f"u{n}": ["i1", "i2", "i3"] for n in (1, 2, 3)} | {"u4": ["i1", "i2", "i4"], "u5": ["i4"]}
    records = [_review(u, i, day) for u, items in users.items() for day, i in enumerate(items)]
    settings = load_settings(kcore=3)
    report = run_extract(settings, "d", "amazon2018", _jsonl(tmp_path / "r.json", records))
    assert report.kcore_rounds == 2
    kept = {(r["user_id"], r["item_id"]) for r in _table(settings, "d", "interactions")}
    assert {u for u, _ in kept} == {"u1", "u2", "u3"} and {i for _, i in kept} == {"i1", "i2", "i3"}
    assert (report.users, report.items, report.interactions) == (3, 3, 9)


def test_kcore_that_leaves_nothing_is_an_error(tmp_path: Path) -> None:
    reviews = _jsonl(tmp_path / "r.json", [_review("u1", "a", 1), _review("u2", "b", 1)])
    with pytest.raises(PipelineError, match="k-core 5 leaves no interactions"):
        run_extract(load_settings(kcore=5), "d", "amazon2018", reviews)


def test_chronological_order_breaks_ties_by_item_id(tmp_path: Path) -> None:
    reviews = _jsonl(tmp_path / "r.json", [_review("u", "c", 2), _review("u", "b", 1), _review("u", "a", 2)])
    settings = load_settings(kcore=0)
    run_extract(settings, "d", "amazon2018", reviews)
    (seq,) = _table(settings, "d", "sequences")
    item_idx = _index(settings, "d", "item")
    assert seq["items"] == [item_idx["b"], item_idx["a"], item_idx["c"]]
    assert seq["ts"] == sorted(seq["ts"])


def _split_positions(settings: Settings, dataset: str) -> dict[str, dict[str, list[int]]]:
    users = {r["user_idx"]: r["user_id"] for r in _table(settings, dataset, "user_index")}
    out: dict[str, dict[str, list[int]]] = {u: {"train": [], "valid": [], "test": []} for u in users.values()}
    for row in _table(settings, dataset, "splits"):
        out[users[row["user_idx"]]][row["split"]].append(row["target_pos"])
    return out


LENGTHS = {"n1": 1, "n2": 2, "n3": 3, "n5": 5, "n10": 10, "n13": 13, "n30": 30}


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        (
            "loo",
            {
                "n1": ([], [], []),
                "n2": ([1], [], []),
                "n3": ([], [1], [2]),
                "n5": ([1, 2], [3], [4]),
                "n10": (list(range(1, 8)), [8], [9]),
                "n13": (list(range(1, 11)), [11], [12]),
                "n30": (list(range(1, 28)), [28], [29]),
            },
        ),
        (
            # n_test = floor(0.2 n); train_len = n - n_test;
            # n_valid = max(1, floor(0.1 train_len)) if train_len >= 3 else 0
            "ratio",
            {
                "n1": ([], [], []),
                "n2": ([1], [], []),  # train_len 2 < 3: no valid
                "n3": ([1], [2], []),  # n_test 0
                "n5": ([1, 2], [3], [4]),
                "n10": ([1, 2, 3, 4, 5, 6], [7], [8, 9]),
                "n13": (list(range(1, 10)), [10], [11, 12]),  # n_test 2, train_len 11, n_valid 1
                "n30": (list(range(1, 22)), [22, 23], list(range(24, 30))),
            },
        ),
    ],
)
def test_splits(tmp_path: Path, split: str, expected: dict[str, tuple[list[int], ...]]) -> None:
    users = {u: [f"i{k}" for k in range(n)] for u, n in LENGTHS.items()}
    settings = load_settings(kcore=0, split=split)
    report = run_extract(settings, "d", "sequences", _sequences(tmp_path / "seq.txt", users))
    got = _split_positions(settings, "d")
    assert {u: (p["train"], p["valid"], p["test"]) for u, p in got.items()} == expected
    assert report.split_rows == {
        s: sum(len(v[k]) for v in expected.values())
        for k, s in enumerate(("train", "valid", "test"))
        if s in report.split_rows
    }


def test_ids_stay_stable_when_users_and_items_are_added(tmp_path: Path) -> None:
    settings = load_settings(kcore=0)
    seq = tmp_path / "seq.txt"
    run_extract(settings, "d", "sequences", _sequences(seq, {"bob": ["x", "y"], "amy": ["y", "z"]}))
    users_before, items_before = _index(settings, "d", "user"), _index(settings, "d", "item")
    assert users_before == {"amy": 0, "bob": 1} and items_before == {"x": 0, "y": 1, "z": 2}

    # "aaa" and "w" sort before every old id, yet must be appended; "amy" disappears.
    report = run_extract(settings, "d", "sequences", _sequences(seq, {"bob": ["x", "w"], "aaa": ["y", "v"]}))
    users, items = _index(settings, "d", "user"), _index(settings, "d", "item")
    assert {u: users[u] for u in users_before} == users_before
    assert {i: items[i] for i in items_before} == items_before
    assert users["aaa"] == 2 and {items["v"], items["w"]} == {3, 4}
    assert (report.new_users, report.new_items) == (1, 2)
    sequences = {r["user_id"]: r for r in _table(settings, "d", "sequences")}
    assert [r["user_idx"] for r in _table(settings, "d", "sequences")] == [0, 1, 2]  # dense over the index
    assert sequences["amy"]["items"] == []  # kept in the index, no interactions this run
    assert sequences["bob"]["items"] == [items["x"], items["w"]]
    assert {r["item_id"] for r in _table(settings, "d", "items")} == {"x", "w", "y", "v"}


def test_corrupt_previous_index_stops_the_run(tmp_path: Path) -> None:
    settings = load_settings(kcore=0)
    seq = _sequences(tmp_path / "seq.txt", {"bob": ["x", "y"]})
    run_extract(settings, "d", "sequences", seq)
    index = settings.dataset_dir("d") / "item_index.parquet"
    duckdb.sql(
        f"COPY (SELECT item_id, item_idx * 2 AS item_idx FROM '{index}') TO '{index}.x' (FORMAT parquet)"
    )
    Path(f"{index}.x").replace(index)
    with pytest.raises(PipelineError, match="dense"):
        run_extract(settings, "d", "sequences", seq)


def _mixed_reviews(path: Path) -> Path:
    good = [json.dumps(_review(f"u{n}", f"i{n % 3}", n)) for n in range(12)]
    lines = good[:2] + ["{not json"] + good[2:4] + ['{"asin": "i1", "unixReviewTime": 5}', ""]
    lines += good[4:6] + [json.dumps({"reviewerID": "u9", "asin": "i1", "unixReviewTime": "soon"})] + good[6:]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rejects_are_logged_with_line_numbers(tmp_path: Path) -> None:
    settings = load_settings(kcore=0, reject_threshold=0.5)
    report = run_extract(settings, "d", "amazon2018", _mixed_reviews(tmp_path / "r.json"))
    rejects = [
        json.loads(line) for line in (settings.dataset_dir("d") / "rejects.jsonl").read_text().splitlines()
    ]
    assert [(r["line"], r["field"]) for r in rejects] == [
        (3, None),
        (6, "reviewerID"),
        (10, "unixReviewTime"),
    ]
    assert all(r["file"] == str(tmp_path / "r.json") for r in rejects)
    assert "invalid JSON" in rejects[0]["error"]
    assert (report.rejects, report.files[0].lines, report.interactions) == (3, 15, 12)


def test_too_many_rejects_fail_and_keep_previous_output(tmp_path: Path) -> None:
    settings = load_settings(kcore=0)
    good = _jsonl(tmp_path / "good.json", [_review("u1", "a", 1)])
    run_extract(settings, "d", "amazon2018", good)
    before = {name: (settings.dataset_dir("d") / name).read_bytes() for name in OUTPUT_FILES}
    with pytest.raises(PipelineError, match=r"r\.json: 3 of 15 lines.*first bad line 3: invalid JSON"):
        run_extract(settings, "d", "amazon2018", _mixed_reviews(tmp_path / "r.json"))
    assert {name: (settings.dataset_dir("d") / name).read_bytes() for name in OUTPUT_FILES} == before


def test_failure_mid_run_leaves_previous_output_and_sibling_folders(tmp_path: Path, monkeypatch) -> None:
    settings = load_settings(kcore=0)
    out = settings.dataset_dir("d")
    run_extract(settings, "d", "sequences", _sequences(tmp_path / "a.txt", {"u1": ["a", "b", "c"]}))
    (out / "embeddings").mkdir()
    (out / "embeddings" / "text.parquet").write_bytes(b"later stage output")
    before = {name: (out / name).read_bytes() for name in OUTPUT_FILES}

    real_load_sql = extract_run.load_sql

    def failing_load_sql(name: str) -> str:
        if name == "extract_write_splits":  # after other tables were written to the temp folder
            raise RuntimeError("disk full")
        return real_load_sql(name)

    monkeypatch.setattr(extract_run, "load_sql", failing_load_sql)
    new_input = _sequences(tmp_path / "b.txt", {"u2": ["x", "y", "z"]})
    with pytest.raises(RuntimeError, match="disk full"):
        run_extract(settings, "d", "sequences", new_input)
    assert {name: (out / name).read_bytes() for name in OUTPUT_FILES} == before
    assert not list(out.parent.glob(".*extract-tmp*"))  # no staging folder left behind

    monkeypatch.setattr(extract_run, "load_sql", real_load_sql)
    run_extract(settings, "d", "sequences", new_input)
    assert (out / "embeddings" / "text.parquet").read_bytes() == b"later stage output"
    assert set(_index(settings, "d", "user")) == {"u1", "u2"}


def test_rerun_gives_identical_tables(tmp_path: Path) -> None:
    records = [_review(f"u{n % 7}", f"i{(n * 5) % 11}", n // 3, float(n % 5)) for n in range(80)]
    reviews = _jsonl(tmp_path / "r.json", records)
    settings = load_settings(kcore=2, split="ratio")
    run_extract(settings, "d", "amazon2018", reviews)
    first = {t: pq.read_table(settings.dataset_dir("d") / f"{t}.parquet") for t in TABLES}
    run_extract(settings, "d", "amazon2018", reviews)
    for t in TABLES:
        assert pq.read_table(settings.dataset_dir("d") / f"{t}.parquet").equals(first[t]), t


def test_image_refs_local_folder_then_meta_path_then_url(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.jpg").write_bytes(b"jpeg")
    (tmp_path / "meta_images").mkdir()
    (tmp_path / "meta_images" / "b.jpg").write_bytes(b"jpeg")
    reviews = _jsonl(tmp_path / "r.json", [_review("u", i, n) for n, i in enumerate("abcde")])
    meta = _jsonl(
        tmp_path / "m.json",
        [
            {"asin": "a", "imageURLHighRes": ["https://x/a-hi.jpg"]},
            {"asin": "b", "imageURLHighRes": ["meta_images/b.jpg"]},  # relative to the meta file
            {"asin": "c", "imageURLHighRes": [], "imageURL": ["https://x/c.jpg"]},
            {"asin": "d", "imageURLHighRes": ["meta_images/missing.jpg"]},
        ],
    )
    settings = load_settings(kcore=0)
    report = run_extract(settings, "d", "amazon2018", reviews, meta, tmp_path / "pics")
    refs = {r["item_id"]: r["image_ref"] for r in _table(settings, "d", "items")}
    assert refs == {
        "a": str((tmp_path / "pics" / "a.jpg").resolve()),
        "b": str((tmp_path / "meta_images" / "b.jpg").resolve()),
        "c": "https://x/c.jpg",
        "d": None,
        "e": None,
    }
    assert (report.items_with_local_image, report.items_with_image_ref, report.items_with_meta) == (1, 3, 4)


def test_amazon2014_dict_literal_meta_and_ratings_csv(tmp_path: Path) -> None:
    ratings = tmp_path / "ratings_X.csv"
    ratings.write_text("u1,a,5.0,1400000000\nu1,b,4.0,1400000100\nu2,a,3.0,1400000200\n")
    marker = tmp_path / "pwned"
    meta = tmp_path / "meta.json"
    meta.write_text(
        "{'asin': 'a', 'title': 'Pick &amp; Strap', 'categories': [['Music', 'Guitar'], ['Music', 'Bass']], "
        "'imUrl': 'http://x/a.jpg', 'description': 'Strong <br/>strap'}\n"
        f"__import__('pathlib').Path({str(marker)!r}).touch()\n"
        "{'asin': 'b', 'title': 'Tuner'}\n"
    )
    settings = load_settings(kcore=0, reject_threshold=0.5)
    report = run_extract(settings, "d", "amazon2014", ratings, meta)
    assert not marker.exists()  # literal_eval, never eval
    assert report.files[1].rejects == 1 and report.interactions == 3
    items = {r["item_id"]: r for r in _table(settings, "d", "items")}
    assert items["a"]["title"] == "Pick & Strap" and items["a"]["categories"] == ["Music", "Guitar", "Bass"]
    assert items["a"]["description"] == "Strong strap" and items["a"]["image_ref"] == "http://x/a.jpg"


def test_amazon2023_milliseconds_and_hi_res_images(tmp_path: Path) -> None:
    reviews = _jsonl(
        tmp_path / "r.jsonl",
        [
            {
                "user_id": "U1",
                "parent_asin": "P1",
                "asin": "C1",
                "rating": 4.0,
                "timestamp": 1_600_000_000_123,
            },
            {
                "user_id": "U1",
                "parent_asin": "P2",
                "asin": "C2",
                "rating": 5.0,
                "timestamp": 1_600_000_999_999,
            },
        ],
    )
    meta = _jsonl(
        tmp_path / "m.jsonl",
        [
            {
                "parent_asin": "P1",
                "title": "Vitamin C",
                "store": "Acme",
                "features": ["1000 mg"],
                "description": [],
                "categories": ["Health"],
                "images": [
                    {"thumb": "t1", "large": "https://l/1.jpg", "hi_res": None},
                    {"hi_res": "https://h/2.jpg"},
                ],
            },
            {"parent_asin": "P2", "images": [{"large": "https://l/3.jpg", "hi_res": None}]},
        ],
    )
    settings = load_settings(kcore=0)
    run_extract(settings, "d", "amazon2023", reviews, meta)
    assert [r["ts"] for r in _table(settings, "d", "interactions")] == [1_600_000_000, 1_600_000_999]
    items = {r["item_id"]: r for r in _table(settings, "d", "items")}
    assert items["P1"]["brand"] == "Acme" and items["P1"]["description"] == "1000 mg"
    assert items["P1"]["image_ref"] == "https://h/2.jpg" and items["P2"]["image_ref"] == "https://l/3.jpg"


def test_clean_text_handles_cut_off_html() -> None:
    assert clean_text('<span class="a-size-medium a-color-secondary"') is None
    assert clean_text(' Magazines" />') is None
    assert clean_text(["<br>Leading forum</br>", "", "for <i>art</i>&nbsp;&amp; history"]) == (
        "Leading forum for art & history"
    )
    assert clean_text("5 < 6 and 7 > 3") == "5 < 6 and 7 > 3"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "amazon1999"], "unknown format 'amazon1999'"),
        (["--format", "amazon2018", "--meta", "META_EMPTY"], "is empty"),
        (["--format", "amazon2018", "--meta", "META_OTHER"], "describes none of the 2 reviewed items"),
        (["--format", "amazon2023"], "missing required field 'user_id'"),
        (["--format", "amazon2018", "--images", "NOWHERE"], "images folder not found"),
    ],
)
def test_cli_bad_input_exits_non_zero_and_keeps_output(
    tmp_path: Path, args: list[str], message: str, caplog, monkeypatch
) -> None:
    monkeypatch.setenv("MMSR_KCORE", "0")
    reviews = _jsonl(tmp_path / "r.json", [_review("u1", "a", 1), _review("u1", "b", 2)])
    (tmp_path / "META_EMPTY").write_text("\n")
    _jsonl(tmp_path / "META_OTHER", [{"asin": "zzz", "title": "other"}])
    args = [str(tmp_path / a) if a.startswith(("META", "NOWHERE")) else a for a in args]
    runner = CliRunner()
    ok = runner.invoke(
        app, ["extract", "--dataset", "d", "--format", "amazon2018", "--reviews", str(reviews)]
    )
    assert ok.exit_code == 0, ok.output
    out = load_settings().dataset_dir("d")
    before = {name: (out / name).read_bytes() for name in OUTPUT_FILES if name != "report.json"}
    result = runner.invoke(app, ["extract", "--dataset", "d", "--reviews", str(reviews), *args])
    assert result.exit_code == 1
    assert message in caplog.text
    assert {name: (out / name).read_bytes() for name in before} == before


def test_empty_reviews_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "r.json.gz").write_bytes(gzip.compress(b"", mtime=0))
    with pytest.raises(PipelineError, match=r"reviews file .*r\.json\.gz is empty"):
        run_extract(load_settings(), "d", "amazon2018", tmp_path / "r.json.gz")


def test_truncated_gzip_is_a_clear_error(tmp_path: Path) -> None:
    records = [json.dumps(_review(f"u{n}", "a", n)) for n in range(2000)]
    data = gzip.compress(("\n".join(records) + "\n").encode(), mtime=0)
    (tmp_path / "r.json.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(PipelineError, match=r"r\.json\.gz: unreadable after line \d+"):
        run_extract(load_settings(kcore=0), "d", "amazon2018", tmp_path / "r.json.gz")
