#!/usr/bin/env python3
"""Writes a deterministic benchmark tree: many small source-like text files and a few
large binaries. The same arguments always give the same bytes.

    bench/corpus.py DIR [--files 30000] [--binaries 3] [--binary-mib 320]
"""
import argparse
import os
import random

WORDS = ("fn let mut impl struct enum match return self pub use mod async await "
         "if else for while loop break continue where trait type const static "
         "String Vec Option Result Some None Ok Err Box Arc clone unwrap").split()


def text_file(rng, size):
    lines = []
    total = 0
    while total < size:
        indent = "    " * rng.randrange(4)
        line = indent + " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 12))) + ";\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--files", type=int, default=30000)
    parser.add_argument("--binaries", type=int, default=3)
    parser.add_argument("--binary-mib", type=int, default=320)
    args = parser.parse_args()
    rng = random.Random(2026)
    for i in range(args.files):
        path = os.path.join(args.dir, "src", f"m{i % 40:02}", f"d{i % 7}", f"file{i:05}.rs")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(text_file(rng, rng.randrange(200, 8000)))
    os.makedirs(os.path.join(args.dir, "bin"), exist_ok=True)
    for i in range(args.binaries):
        with open(os.path.join(args.dir, "bin", f"blob{i}.bin"), "wb") as out:
            for _ in range(args.binary_mib):
                out.write(rng.randbytes(1 << 20))


if __name__ == "__main__":
    main()
