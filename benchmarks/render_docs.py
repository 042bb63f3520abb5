"""Copy the benchmarks' results tables into the docs, so the numbers there are always the ones a run wrote.

Every block

    <!-- benchmark: bench_towers -->
    ...
    <!-- /benchmark -->

in README.md and docs/*.md is replaced by the content of `benchmarks/results/bench_towers.md` (written by
`python benchmarks/bench_towers.py`). Running it again changes nothing.

    python -m benchmarks.render_docs            # rewrite the blocks in place
    python -m benchmarks.render_docs --check    # exit 1 and name the stale blocks, write nothing

Standard library only, so it runs without the project's dependencies.
"""

import argparse
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().with_name("results")
BLOCK = re.compile(r"(<!-- benchmark: (?P<name>[A-Za-z0-9_]+) -->\n)(?P<body>.*?)(<!-- /benchmark -->)", re.DOTALL)


def doc_pages(root: Path = REPO_ROOT) -> list[Path]:
    """README.md and every page of docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def results_table(name: str, results_dir: Path = RESULTS_DIR) -> str:
    path = results_dir / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"A docs block names benchmark {name!r}, but {path} does not exist: run "
                                f"`python benchmarks/{name}.py` to write it, or fix the name in the block.")
    return path.read_text().strip() + "\n"


def render(text: str, results_dir: Path = RESULTS_DIR) -> str:
    """`text` with the body of every benchmark block replaced by its results file."""
    return BLOCK.sub(lambda m: m.group(1) + results_table(m.group("name"), results_dir) + m.group(4), text)


def stale_blocks(pages: list[Path], results_dir: Path = RESULTS_DIR) -> list[str]:
    """`page: bench_x` for every block whose body differs from its results file."""
    stale = []
    for page in pages:
        for match in BLOCK.finditer(page.read_text()):
            if match.group("body") != results_table(match.group("name"), results_dir):
                stale.append(f"{page.relative_to(REPO_ROOT)}: {match.group('name')}")
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
