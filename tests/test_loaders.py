"""Loaders: the shared data files, small fixtures per format, bad input, detection, fuzzing."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag_papers import sample_corpus_path
from rag_papers.core.specs import FORMATS
from rag_papers.ingest import loaders
from rag_papers.ingest.loaders import LoaderError, LoadResult, Rejected, detect_format, load_papers
from rag_papers.ingest.loaders.bibtex import parse_bibtex
from rag_papers.ingest.loaders.common import clean_text
from rag_papers.ingest.loaders.records import repair_arxiv_number, split_authors

DATA = Path(__file__).parent / "data" / "loaders"
SHARED = Path(os.environ.get("RAG_PAPERS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
HF_SAMPLE = sample_corpus_path()  # the bundled copy of shared/corpus/hf_papers_sample.txt
ARXIV_JSON = SHARED / "datasets" / "arxiv" / "arxiv_cscl_2026_500.json"
ARXIV_CSV = SHARED / "datasets" / "arxiv" / "arxiv_2007_first2000.csv"
SCIFACT = SHARED / "datasets" / "scifact" / "beir" / "corpus.jsonl"
# The full data sets sit beside a checkout of the project (and in CI), not in a clone of it.
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(),
    reason=f"the shared data sets are not at {SHARED}: put them there, or point "
    "RAG_PAPERS_SHARED at a folder holding corpus/ and datasets/, to run this test",
)


def where(result: LoadResult) -> list[tuple[int, str | None]]:
    """(line, field) of every rejected record, in file order."""
    return [(r.line, r.field) for r in result.rejected]


# --- API ------------------------------------------------------------------------------------


def test_all_is_complete() -> None:
    assert set(loaders.__all__) == {
        "FORMATS",
        "LoadResult",
        "LoaderError",
        "Rejected",
        "detect_format",
        "load_papers",
    }
    for name in loaders.__all__:
        assert hasattr(loaders, name)
    assert FORMATS == ("hf", "json", "jsonl", "csv", "bibtex", "atom", "beir")


def test_rejected_str_names_file_line_and_field() -> None:
    assert (
        str(Rejected("a.json", 7, "missing", "abstract")) == "a.json:7: field 'abstract': missing"
    )
    assert str(Rejected("a.jsonl", 2, "invalid JSON")) == "a.jsonl:2: invalid JSON"


# --- the shared data files ------------------------------------------------------------------


def test_hf_sample_loads_84_papers_with_real_title_lines() -> None:
    result = load_papers(HF_SAMPLE)
    assert len(result.papers) == 84
    assert result.rejected == [] and result.duplicates == []
    lines = HF_SAMPLE.read_text(encoding="utf-8").splitlines()
    for paper in result.papers:
        assert lines[paper.line - 1].strip() == paper.title
        assert paper.source == str(HF_SAMPLE)
        assert len(paper.abstract.split()) > 50
    assert result.papers[0].title.startswith("DrivAerNet: A Parametric Car Dataset")
    assert result.papers[0].line == 11
    assert result.papers[-1].title.startswith("SILO Language Models")
    assert len({p.id for p in result.papers}) == 84


@needs_shared
def test_arxiv_json_loads_500_with_versionless_ids() -> None:
    result = load_papers(ARXIV_JSON)
    assert (len(result.papers), len(result.rejected), len(result.duplicates)) == (500, 0, 0)
    raw = json.loads(ARXIV_JSON.read_text(encoding="utf-8"))
    assert [p.id for p in result.papers] == [r["id"].rsplit("v", 1)[0] for r in raw]
    first = result.papers[0]
    assert first.id == "2603.11048"
    assert first.authors[:2] == ["Susung Hong", "Brian Curless"]
    assert first.year == 2026
    assert first.categories.count("cs.CV") == 1  # the source repeats it
    lines = ARXIV_JSON.read_text(encoding="utf-8").splitlines()
    for paper, record in zip(result.papers, raw, strict=True):
        assert lines[paper.line - 1].strip() == "{"
        assert f'"id": "{record["id"]}"' in lines[paper.line]


@needs_shared
def test_kaggle_csv_loads_2000_rows_and_repairs_float_ids() -> None:
    result = load_papers(ARXIV_CSV)
    assert (len(result.papers), len(result.rejected), len(result.duplicates)) == (2000, 0, 0)
    assert {p.id for p in result.papers} == {f"0704.{n:04d}" for n in range(1, 2001)}
    by_id = {p.id: p for p in result.papers}
    assert by_id["0704.0001"].title == (
        "Calculation of prompt diphoton production cross sections at Tevatron and LHC energies"
    )
    assert by_id["0704.0001"].year == 2008  # update_date 11/26/2008
    assert by_id["0704.0001"].doi == "10.1103/physrevd.76.013009"
    assert "0704.0010" in by_id and "0704.0100" in by_id and "0704.1000" in by_id
    assert all("\n" not in p.title and "\n" not in p.abstract for p in result.papers)
    # Each line number is where the record starts: that line begins with the (float) id.
    raw_ids = [row["id"] for row in csv.DictReader(ARXIV_CSV.open(newline="", encoding="utf-8"))]
    lines = ARXIV_CSV.read_text(encoding="utf-8").split("\n")
    for paper, raw_id in zip(result.papers, raw_ids, strict=True):
        assert lines[paper.line - 1].startswith(f"{raw_id},")


@needs_shared
def test_scifact_beir_corpus_loads_5183_with_corpus_ids() -> None:
    result = load_papers(SCIFACT)
    assert (len(result.papers), len(result.rejected), len(result.duplicates)) == (5183, 0, 0)
    with SCIFACT.open(encoding="utf-8") as handle:
        ids = [json.loads(line)["_id"] for line in handle]
    assert [p.id for p in result.papers] == ids
    assert result.papers[0].id == "4983" and result.papers[0].line == 1
    assert result.papers[-1].line == 5183
    assert all(p.title and p.abstract for p in result.papers)


@needs_shared
def test_shared_files_are_detected() -> None:
    assert detect_format(HF_SAMPLE) == "hf"
    assert detect_format(ARXIV_JSON) == "json"
    assert detect_format(ARXIV_CSV) == "csv"
    assert detect_format(SCIFACT) == "beir"


# --- one small fixture per format -----------------------------------------------------------


def test_json_fixture_records_rejects_and_duplicates() -> None:
    path = DATA / "papers.json"
    result = load_papers(path)
    first, second = result.papers
    assert first.id == "2301.01234" and first.line == 2
    assert first.title == "Retrieval Augmented Generation for BERT Models"  # braces, spaces
    assert first.abstract == "We retrieve, then generate; recall improves by 5% on SciFact."
    assert first.categories == ["cs.CL", "cs.IR"]
    assert first.year == 2023 and first.url == "https://arxiv.org/abs/2301.01234"
    assert second.id == "doi:10.1234/abc.5" and second.doi == "10.1234/abc.5"
    assert second.authors == ["Ada Lovelace", "Alan Turing"] and second.year == 2021
    assert second.abstract.startswith("This record uses summary")
    assert where(result) == [
        (10, "abstract"),
        (15, "title"),
        (19, "authors"),
        (24, None),
        (37, "title"),
    ]
    assert str(result.rejected[0]) == (
        f"{path}:10: field 'abstract': missing (no 'abstract', 'summary' or 'text')"
    )
    assert "got int" in result.rejected[1].reason
    assert "got str" in result.rejected[3].reason
    assert result.rejected[4].reason == "empty 'title'"
    [dup] = result.duplicates
    assert (dup.line, dup.field) == (25, "id")
    assert f"{path}:2" in dup.reason


def test_json_object_wrapper() -> None:
    result = load_papers(DATA / "wrapped.json")
    assert [(p.id, p.line) for p in result.papers] == [("2402.00001", 5), ("2402.00002", 6)]


def test_jsonl_fixture() -> None:
    result = load_papers(DATA / "papers.jsonl")
    assert [(p.id, p.line) for p in result.papers] == [("2303.00001", 1), ("2303.00005", 8)]
    assert result.papers[0].authors == ["A. One", "B. Two", "C. Three"]
    assert result.papers[1].year == 2020 and result.papers[1].url == "https://example.org/p5"
    assert where(result) == [(2, None), (4, "abstract"), (5, None), (6, "categories")]
    assert result.rejected[0].reason.startswith("invalid JSON")
    assert [(d.line, d.field) for d in result.duplicates] == [(7, "id")]


def test_csv_fixture_multiline_rows_and_id_repair() -> None:
    path = DATA / "papers.csv"
    result = load_papers(path)
    assert [(p.id, p.line) for p in result.papers] == [
        ("0704.0001", 2),
        ("0704.0010", 6),
        ("0704.0100", 9),
    ]
    first = result.papers[0]
    assert first.title == "A Title With a Hard Line Break"
    assert first.abstract == "An abstract that spans several lines, as in the Kaggle snapshot."
    assert first.authors == ["C. Bal\\'azs", "E. L. Berger"]  # other LaTeX is kept
    assert first.categories == ["hep-ph", "math.CO"] and first.year == 2008
    assert result.papers[2].abstract.endswith("with 10% more.")
    assert where(result) == [(7, "abstract"), (8, None)]
    assert "expected 7 columns" in result.rejected[1].reason
    assert [(d.line, d.field) for d in result.duplicates] == [(10, "id")]


def test_csv_field_mapping() -> None:
    fields = {
        "id": "paper_id",
        "title": "name",
        "abstract": "summary_text",
        "authors": "writers",
        "year": "published_on",
    }
    result = load_papers(DATA / "custom_fields.csv", fields=fields)
    first, second = result.papers
    assert (first.id, first.title, first.year) == ("2105.00042", "Mapped Field Names", 2021)
    assert first.abstract == "An abstract under a custom column name."
    assert first.authors == ["Alice Liddell", "Bob Dodgson"]
    assert second.line == 3
    # Without the mapping the file has no title column: one clear error, not 2 rejects.
    with pytest.raises(LoaderError, match=r"custom_fields\.csv: no column for title"):
        load_papers(DATA / "custom_fields.csv")


def test_json_field_mapping(tmp_path: Path) -> None:
    path = tmp_path / "mapped.jsonl"
    rows = [{"paper_id": "2201.00007", "heading": "Mapped", "body": "Text.", "abstract": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    fields = {"id": "paper_id", "title": "heading", "abstract": "body"}
    [paper] = load_papers(path, fields=fields).papers
    assert (paper.id, paper.title, paper.abstract) == ("2201.00007", "Mapped", "Text.")
    with pytest.raises(ValueError, match="unknown field"):
        load_papers(path, fields={"summary": "body"})
    with pytest.raises(ValueError, match="applies to"):
        load_papers(DATA / "refs.bib", fields={"title": "x"})


def test_bibtex_fixture() -> None:
    result = load_papers(DATA / "refs.bib")
    bert, rag, maths = result.papers
    assert bert.line == 4
    assert bert.title.startswith("BERT: Pre-training of Deep")
    assert bert.authors == ["Jacob Devlin", "Ming-Wei Chang", "Kenton Lee", "Kristina Toutanova"]
    assert bert.year == 2019 and bert.id == "doi:10.18653/v1/n19-1423"
    assert bert.abstract.endswith("improving GLUE by 7.7% points.")
    assert rag.id == "2005.11401" and rag.line == 20
    assert rag.title == "Retrieval-Augmented Generation for Knowledge-Intensive NLP Tasks & More"
    assert rag.categories == ["cs.CL", "cs.LG"]
    # Text macros are decoded (pylatexenc); math stays as written.
    assert maths.title == "The $\\Lambda_{\\alpha}$ Spaces and Emphasis"
    assert maths.authors == ["Hans Müller"]
    assert maths.id == "mathtitle"  # no eprint, no DOI: the entry key
    assert maths.abstract == "Math stays as it is: $\\mathcal{O}(n)$."
    assert where(result) == [(14, "abstract")]
    assert [(d.line, d.field) for d in result.duplicates] == [(30, "id")]


def test_atom_fixture() -> None:
    result = load_papers(DATA / "arxiv.atom.xml")
    first, second = result.papers
    assert first.id == "2301.00001" and first.line == 9
    assert first.title == "Dense Retrieval for Scientific Abstracts"
    assert first.abstract.endswith("a 12% gain in recall over BM25.")
    assert first.authors == ["Ada Lovelace", "Alan Turing"]
    assert first.categories == ["cs.IR", "cs.CL"] and first.year == 2023
    assert first.url == "http://arxiv.org/abs/2301.00001v2" and first.doi == "10.1000/xyz123"
    assert (second.id, second.year, second.line) == ("2212.09999", 2022, 43)
    assert where(result) == [(31, "abstract")]
    assert [(d.line, d.field) for d in result.duplicates] == [(55, "id")]


def test_hf_fixture_with_other_header_and_orphan_titles() -> None:
    result = load_papers(DATA / "hf_page.txt")
    assert [(p.title, p.line) for p in result.papers] == [
        ("Retrieval Augmented Generation with Citations", 5),
        ("Scaling Laws for Sparse Retrievers", 11),
    ]
    assert where(result) == [(9, "abstract"), (15, "abstract")]


def test_beir_fixture_and_empty_title_policy() -> None:
    result = load_papers(DATA / "beir_corpus.jsonl")
    assert [(p.id, p.line) for p in result.papers] == [("101", 1), ("102", 2)]
    untitled = result.papers[1]
    assert untitled.title == "Aspirin lowers the risk of a second heart attack."  # first sentence
    assert untitled.url == "https://example.org/102"
    assert where(result) == [(3, "abstract"), (5, "id"), (6, "title")]
    assert [(d.line, d.field) for d in result.duplicates] == [(4, "id")]


# --- bad input --------------------------------------------------------------------------------


def test_missing_file_directory_and_unknown_format(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(LoaderError, match=re.escape(f"{missing}: no such file")):
        load_papers(missing)
    with pytest.raises(LoaderError, match="no such file"):
        load_papers(missing, format="json")
    with pytest.raises(LoaderError, match="is a directory"):
        load_papers(tmp_path, format="csv")
    with pytest.raises(LoaderError, match=r"unknown format 'pdf'"):
        load_papers(DATA / "papers.json", format="pdf")
    odd = tmp_path / "notes.dat"
    odd.write_text("just a few words\n", encoding="utf-8")
    with pytest.raises(LoaderError, match=re.escape(f"{odd}: cannot tell the format")):
        load_papers(odd)


def test_file_level_errors_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('[{"title": "a", "abstract": "b"},\n {"title": ', encoding="utf-8")
    with pytest.raises(LoaderError, match=r"broken\.json: invalid JSON at line 2"):
        load_papers(broken)
    not_feed = tmp_path / "page.xml"
    not_feed.write_bytes(b"\x00\x01 no xml here")
    with pytest.raises(LoaderError, match=r"page\.xml: not an Atom feed"):
        load_papers(not_feed)
    no_pairs = tmp_path / "list.txt"
    no_pairs.write_text("one\n\ntwo\n", encoding="utf-8")
    with pytest.raises(LoaderError, match=r"list\.txt: no title line followed by an abstract"):
        load_papers(no_pairs)


ABSTRACT = "An abstract long enough to count as a paragraph. " * 4


@pytest.mark.parametrize(
    ("name", "content", "bad_line", "good"),
    [
        (
            "bytes.jsonl",
            b'{"title": "A", "abstract": "x"}\n{"title": "B\xff", "abstract": "y"}\n'
            b'{"title": "C", "abstract": "z"}\n',
            2,
            ["A", "C"],
        ),
        (
            "bytes.json",
            b'[\n{"title": "A", "abstract": "x"},\n{"title": "B",\n "abstract": "\xfe"},\n'
            b'{"title": "C", "abstract": "z"}\n]\n',
            3,
            ["A", "C"],
        ),
        (
            "bytes.csv",
            b'title,abstract\nA,x\nB,"first line\nsecond \xff line"\nC,z\n',
            3,
            ["A", "C"],
        ),
        (
            "bytes.txt",
            f"Title A\n\n{ABSTRACT}\n\nTitle B\n\n{ABSTRACT}\xff\n\nTitle C\n\n{ABSTRACT}\n".encode(
                "latin-1"
            ),
            5,
            ["Title A", "Title C"],
        ),
        (
            "bytes.bib",
            b"@misc{a, title={A}, abstract={x}}\n@misc{b, title={B},\n abstract={\xff}}\n"
            b"@misc{c, title={C}, abstract={z}}\n",
            2,
            ["A", "C"],
        ),
        (
            "bytes-corpus.jsonl",
            b'{"_id": "1", "title": "A", "text": "x"}\n{"_id": "2", "title": "\xff", "text": "y"}\n'
            b'{"_id": "3", "title": "C", "text": "z"}\n',
            2,
            ["A", "C"],
        ),
    ],
)
def test_undecodable_bytes_reject_one_record(
    tmp_path: Path, name: str, content: bytes, bad_line: int, good: list[str]
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = load_papers(path)
    assert [p.title for p in result.papers] == good
    [rejected] = result.rejected
    assert (rejected.source, rejected.line) == (str(path), bad_line)
    assert "undecodable" in rejected.reason


def test_json_records_of_wrong_types(tmp_path: Path) -> None:
    path = tmp_path / "types.jsonl"
    records = [
        {"title": "Fine", "abstract": "ok", "year": "published 2019-05-01"},
        {"title": "T", "abstract": ["not", "a", "string"]},
        {"title": "T", "abstract": "x", "authors": [1, 2]},
        {"title": "T", "abstract": "x", "year": {"y": 2020}},
        {"title": "T", "abstract": "x", "id": ["2301.00001"]},
        {"title": "T", "abstract": "x", "doi": 10.1},
        {"title": "Odd year", "abstract": "x", "year": "n.d."},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    result = load_papers(path)
    assert [(p.title, p.year) for p in result.papers] == [("Fine", 2019), ("Odd year", None)]
    assert where(result) == [(2, "abstract"), (3, "authors"), (4, "year"), (5, "id"), (6, "doi")]


# --- detection --------------------------------------------------------------------------------


def test_detect_format_from_extension_and_content(tmp_path: Path) -> None:
    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    lines = '{"title": "a", "abstract": "b"}\n{"title": "c", "abstract": "d"}\n'
    beir_lines = (
        '{"_id": "1", "title": "a", "text": "b"}\n{"_id": "2", "title": "c", "text": "d"}\n'
    )
    assert detect_format(write("a.json", '[{"title": "a"}]')) == "json"
    assert detect_format(write("b.json", '{\n  "papers": []\n}\n')) == "json"
    assert detect_format(write("c.json", lines)) == "jsonl"
    assert detect_format(write("d.jsonl", lines)) == "jsonl"
    assert detect_format(write("e.jsonl", beir_lines)) == "beir"
    assert detect_format(write("f.tsv", "title\tabstract\n")) == "csv"
    assert detect_format(write("g.bib", "")) == "bibtex"
    assert detect_format(write("h.atom", "")) == "atom"
    assert detect_format(write("i.txt", "")) == "hf"
    # Unknown extensions: from the content.
    assert detect_format(write("j.dat", lines)) == "jsonl"
    assert detect_format(write("k.dat", "@article{x, title={t}}\n")) == "bibtex"
    assert detect_format(write("l.dat", '<?xml version="1.0"?>\n<feed xmlns="x">')) == "atom"
    assert detect_format(write("m.dat", "id,title,abstract\n1,a,b\n")) == "csv"
    assert detect_format(write("n", f"header\n\nA Title\n\n{ABSTRACT}\n")) == "hf"
    assert detect_format(DATA / "hf_page.txt") == "hf"
    with pytest.raises(LoaderError, match="no such file"):
        detect_format(tmp_path / "absent.json")


def test_tsv_and_jsonl_in_a_json_file(tmp_path: Path) -> None:
    tsv = tmp_path / "p.tsv"
    tsv.write_text("title\tabstract\tid\nA, with comma\tText.\t2401.00001\n", encoding="utf-8")
    [paper] = load_papers(tsv).papers
    assert (paper.title, paper.id) == ("A, with comma", "2401.00001")
    lines = tmp_path / "p.json"
    lines.write_text('{"title": "a", "abstract": "b"}\n{"title": "c", "abstract": "d"}\n')
    assert [p.title for p in load_papers(lines).papers] == ["a", "c"]


def test_empty_files_hold_no_papers(tmp_path: Path) -> None:
    for name in ("e.jsonl", "e.csv", "e.bib", "e.txt", "corpus.jsonl"):
        path = tmp_path / name
        path.write_text("", encoding="utf-8")
        result = load_papers(path)
        assert (result.papers, result.rejected, result.duplicates) == ([], [], [])


def test_records_keep_their_own_ids(tmp_path: Path) -> None:
    """Issue 10: {"id": "pmid-21645374"} used to become a title slug."""
    rows = [
        {"id": "pmid-21645374", "title": "Own Id", "abstract": "A PubMed record."},
        {"id": "2301.01234v2", "title": "Arxiv Id", "abstract": "Versions are dropped."},
        {"id": "https://arxiv.org/abs/hep-th/9901001v1", "title": "Old", "abstract": "Old style."},
        {"id": "https://doi.org/10.1234/ABC.9", "title": "Doi Id", "abstract": "A DOI as id."},
        {"id": "doi:10.48550/arXiv.2302.00002", "title": "Arxiv Doi", "abstract": "arXiv's DOI."},
        {"id": "paper-2301.05555", "title": "Holds Digits", "abstract": "Not an arXiv id."},
        {"id": 4983, "title": "Numeric Id", "abstract": "A number as id.", "doi": "10.1000/X"},
        {"title": "No Id At All", "abstract": "Gets a title slug.", "doi": "10.5555/Y"},
        {"title": "No Id Nor Doi", "abstract": "Gets a title slug."},
        {"id": "x" * 201, "title": "Too Long", "abstract": "An id nobody can show."},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    result = load_papers(path)
    assert [p.id for p in result.papers] == [
        "pmid-21645374",
        "2301.01234",
        "hep-th/9901001",
        "doi:10.1234/abc.9",
        "2302.00002",
        "paper-2301.05555",
        "4983",
        "doi:10.5555/y",
        result.papers[8].id,
    ]
    assert result.papers[8].id.startswith("no-id-nor-doi-")
    assert result.papers[3].doi == "10.1234/abc.9"  # an id that is a DOI is the DOI too
    assert result.papers[1].url == "https://arxiv.org/abs/2301.01234"
    assert result.papers[6].doi == "10.1000/x"  # kept, while the own id is the id
    assert where(result) == [(10, "id")] and "longer than 200" in result.rejected[0].reason
    # Stable: the same file gives the same ids again; CSV id columns keep theirs too.
    assert [p.id for p in load_papers(path).papers] == [p.id for p in result.papers]
    table = tmp_path / "own.csv"
    table.write_text("id,title,abstract\nPMC-77,T,Some text.\n", encoding="utf-8")
    assert [p.id for p in load_papers(table).papers] == ["PMC-77"]


def test_bibtex_latex_decoded(tmp_path: Path) -> None:
    """Issue 10: BibTeX authors kept LaTeX (M{\"u}ller -> M\"uller)."""
    bib = tmp_path / "latex.bib"
    bib.write_text(
        r"""@article{key1,
  title = {Caf{\'e} {\&} M{\"u}ller's {BERT}: 50% faster {$O(n)$} with \sysname},
  author = {M{\"u}ller, Hans and Garc{\'\i}a, Jos{\'e} and {\AA}str{\"o}m, K. and {\v{S}}koda, A.},
  abstract = {Schr{\"o}dinger bridges; 10\% better, and $\alpha$ stays. Then more text.},
  year = {2020}
}
""",
        encoding="utf-8",
    )
    [paper] = load_papers(bib).papers
    assert paper.authors == ["Hans Müller", "José García", "K. Åström", "A. Škoda"]
    assert paper.title == "Café & Müller's BERT: 50% faster $O(n)$ with \\sysname"
    assert paper.abstract == (
        "Schrödinger bridges; 10% better, and $\\alpha$ stays. Then more text."
    )
    assert paper.id == "key1"


# --- helpers ----------------------------------------------------------------------------------


def test_clean_text() -> None:
    assert clean_text("  50\\% of \\$5\n\t and  R\\&D \\_x \\#1 ") == "50% of $5 and R&D _x #1"
    assert clean_text("{BERT}: {{Deep}} Models", braces=True) == "BERT: Deep Models"
    assert clean_text("{BERT} stays", braces=False) == "{BERT} stays"
    assert clean_text("$\\Lambda_{\\alpha}$ and \\emph{x} and \\{y\\}", braces=True) == (
        "$\\Lambda_{\\alpha}$ and \\emph{x} and \\{y\\}"
    )
    assert clean_text("a\x00b\x1fc") == "a b c"


@pytest.mark.parametrize(
    ("raw", "repaired"),
    [
        ("704.0001", "0704.0001"),
        ("704.001", "0704.0010"),
        ("704.1", "0704.1000"),
        ("0704.0001", "0704.0001"),
        ("1501.0001", "1501.00010"),
        ("2301.00001", "2301.00001"),
        ("1234.5", "1234.5"),  # month 34: not an arXiv number
        ("hep-th/9901001", "hep-th/9901001"),
    ],
)
def test_repair_arxiv_number(raw: str, repaired: str) -> None:
    assert repair_arxiv_number(raw) == repaired


def test_split_authors() -> None:
    assert split_authors("A. One, B. Two and C. Three") == ["A. One", "B. Two", "C. Three"]
    assert split_authors("Doe, Jane; Roe, Rick") == ["Doe, Jane", "Roe, Rick"]
    assert split_authors("M. Foo (1), B. Bar (2) ((1) MIT, (2) CMU)") == ["M. Foo", "B. Bar"]


# --- fuzzing: junk never escapes as anything but LoaderError -----------------------------------

_EXTENSIONS = [".txt", ".json", ".jsonl", ".csv", ".tsv", ".bib", ".xml", ".dat", ""]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(max_size=400)
    | st.text(max_size=400).map(lambda s: s.encode("utf-8", "replace")),
    suffix=st.sampled_from(_EXTENSIONS),
    fmt=st.sampled_from([None, *FORMATS]),
)
def test_fuzz_random_bytes(tmp_path: Path, data: bytes, suffix: str, fmt: str | None) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        result = load_papers(path, format=fmt)
    except LoaderError as exc:
        assert str(path) in str(exc)
        return
    for paper in result.papers:
        assert paper.title and paper.abstract and paper.source == str(path)
        paper.content_hash  # noqa: B018 - must not fail on odd characters
    for item in result.rejected + result.duplicates:
        assert item.source == str(path) and item.line >= 0


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children)
    ),
    max_leaves=10,
)
_field_names = st.sampled_from(
    [
        "_id",
        "id",
        "title",
        "abstract",
        "text",
        "summary",
        "authors",
        "year",
        "doi",
        "url",
        "categories",
    ]
)
_records = st.dictionaries(_field_names, _json_values, max_size=8) | _json_values


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=st.lists(_records, max_size=8), fmt=st.sampled_from(["jsonl", "beir", "json"]))
def test_fuzz_random_json_records(tmp_path: Path, records: list[object], fmt: str) -> None:
    path = tmp_path / "records.jsonl"
    if fmt == "json":
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    result = load_papers(path, format=fmt)  # per-record problems never raise
    assert len(result.papers) + len(result.rejected) + len(result.duplicates) == len(records)
    for paper in result.papers:
        assert paper.title.strip() and paper.abstract.strip()
        paper.content_hash  # noqa: B018 - lone surrogates from \\ud800 escapes must be gone


def test_broken_bibtex_entry_says_why(tmp_path: Path) -> None:
    """bibtexparser keeps the reason off str(error): the report must not say just 'error:'."""
    bib = tmp_path / "broken.bib"
    bib.write_text(
        "@article{good, title={A Good Paper}, abstract={An abstract long enough to keep.}}\n\n"
        "@article{bad,\n title={Broken entry\n abstract={no closing brace\n\n"
        "@article{fine, title={Another}, abstract={Also an abstract long enough to keep.}}\n"
    )
    items = list(parse_bibtex(bib))
    rejected = [r for r in items if isinstance(r, Rejected)]
    assert [p.title for p in items if not isinstance(p, Rejected)] == ["A Good Paper", "Another"]
    (bad,) = rejected
    assert bad.line == 3
    assert "Was still looking for field-value closing" in bad.reason
