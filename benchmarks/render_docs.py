"""Copy the benchmarks' results tables into the docs, so the numbers there are always the ones a run wrote.

Every block

    <!-- benchmark: bench_towers -->
    ...
    <!-- /benchmark -->

in README.md and docs/*.md is replaced by the content of `benchmarks/results/bench_towers.md` (written by
`python benchmarks/bench_towers.py`), and every single number quoted as

    <!-- result: bench_vs_clip row "mobileclip-s0 (fused)" column "speed-up vs CLIP ViT-B/16" -->...<!-- /result -->

(the row is named by its leading cell(s), each quoted) by that cell of `benchmarks/results/bench_vs_clip.json`; the
marker holds no `|`, so it can sit in a table cell. Running it again changes nothing.

    python -m benchmarks.render_docs            # rewrite the blocks in place
    python -m benchmarks.render_docs --check    # exit 1 and name the stale blocks, write nothing

Standard library only, so it runs without the project's dependencies.
"""

import argparse
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().with_name("results")
# A marker right after a backtick is inline code that shows the syntax (docs/benchmarks.md), not a marker.
BLOCK = re.compile(r"(?<!`)(<!-- benchmark: (?P<name>[A-Za-z0-9_]+) -->\n)(?P<body>.*?)(<!-- /benchmark -->)",
                   re.DOTALL)
CELL = re.compile(r"(?<!`)(<!-- result: (?P<spec>[^>]*?) -->)(?P<body>[^<]*)(<!-- /result -->)")
CELL_SPEC = re.compile(r'(?P<name>[A-Za-z0-9_]+) row(?P<row>(?: "[^"]*")+) column "(?P<column>[^"]*)"')


def doc_pages(root: Path = REPO_ROOT) -> list[Path]:
    """README.md and every page of docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def results_table(name: str, results_dir: Path = RESULTS_DIR) -> str:
    path = results_dir / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"A docs block names benchmark {name!r}, but {path} does not exist: run "
                                f"`python benchmarks/{name}.py` to write it, or fix the name in the block.")
    return "\n" + path.read_text().strip() + "\n\n"  # blank lines keep the markers out of the table


def results_cell(spec: str, results_dir: Path = RESULTS_DIR) -> str:
    """The cell that `bench_x row "leading cell" ... column "column"` names in bench_x.json's tables."""
    parsed = CELL_SPEC.fullmatch(spec.strip())
    if parsed is None:
        raise ValueError(f'<!-- result: {spec} --> should read `bench_name row "leading cell" ... column "column"`.')
    name, column = parsed.group("name"), parsed.group("column")
    row_key = re.findall(r'"([^"]*)"', parsed.group("row"))
    path = results_dir / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"<!-- result: {spec} --> reads {path}, which does not exist: run "
                                f"`python benchmarks/{name}.py` to write it, or fix the marker.")
    for table in json.loads(path.read_text())["tables"]:
        if column not in table["columns"]:
            continue
        for row in table["rows"]:
            if row[:len(row_key)] == row_key:
                return row[table["columns"].index(column)]
    raise ValueError(f"<!-- result: {spec} -->: no row starting with {row_key} and column {column!r} in {path}; "
                     "fix the marker to name a row and column of that table.")


def render(text: str, results_dir: Path = RESULTS_DIR) -> str:
    """`text` with the body of every benchmark block replaced by its results file, and every quoted result by its
    cell."""
    text = BLOCK.sub(lambda m: m.group(1) + results_table(m.group("name"), results_dir) + m.group(4), text)
    return CELL.sub(lambda m: m.group(1) + results_cell(m.group("spec"), results_dir) + m.group(4), text)


def stale_blocks(pages: list[Path], results_dir: Path = RESULTS_DIR) -> list[str]:
    """`page: bench_x` for every block (or quoted result) whose body differs from its results file."""
    stale = []
    for page in pages:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            if match.group("body") != results_table(match.group("name"), results_dir):
                stale.append(f"{page.relative_to(REPO_ROOT)}: {match.group('name')}")
        for match in CELL.finditer(text):
            if match.group("body") != results_cell(match.group("spec"), results_dir):
                stale.append(f"{page.relative_to(REPO_ROOT)}: result {match.group('spec')}")
    return stale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale blocks (exit 1 if any)")
    args = parser.parse_args(argv)
    pages = doc_pages()
    if args.check:
        stale = stale_blocks(pages)
        for block in stale:
            print(f"stale: {block}")
        return 1 if stale else 0
    for page in pages:
        text = page.read_text()
        rendered = render(text)
        if rendered != text:
            page.write_text(rendered)
            print(f"rendered {page.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
