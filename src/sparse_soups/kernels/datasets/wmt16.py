"""WMT16 German-English as plain parallel text (`dataset_files.WMT16_FILES` under
`data.root`), prepared once: the joint BPE vocabulary is trained on the training corpus
(`data.vocab_size`), every split is encoded to token ids (`data.max_length`, truncated with
the end-of-sentence kept), and the raw validation and test references are kept for BLEU.
The prepared file holds the tokenizer itself, so every later job decodes with exactly the
vocabulary the model was trained on."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..dataset_files import WMT16_FILES, wmt16_missing_files
from . import DataNotFoundError

if TYPE_CHECKING:
    from ...config import DataSettings


def prepare_wmt16(settings: DataSettings) -> dict[str, object]:
    """The prepared dataset: token ids per split (int32: a quarter of the memory of int64),
    references, the tokenizer as JSON, and its size as `num_classes` (the model's vocabulary)."""
    from ..translation import encode_pairs, read_parallel_text, train_tokenizer

    if not settings.root:
        raise DataNotFoundError("wmt16_de_en: set data.root to the directory of the parallel text files")
    root = Path(settings.root)
    missing = wmt16_missing_files(root)
    if missing:
        raise DataNotFoundError(f"wmt16_de_en: data.root {root} lacks {', '.join(map(str, missing))}")
    pairs = {split: read_parallel_text(root / de, root / en) for split, (de, en) in WMT16_FILES.items()}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "tokenizer.json"
        train_tokenizer((text for pair in pairs["train"] for text in pair), settings.vocab_size, path)
        tokenizer_json = path.read_text()
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    prepared: dict[str, object] = {
        "task": "translation",
        "tokenizer": tokenizer_json,
        "num_classes": tokenizer.get_vocab_size(),
        "max_length": settings.max_length,
        "source": str(root),
    }
    generator = torch.Generator().manual_seed(settings.split_seed)
    for split, split_pairs in pairs.items():
        if split == "train":  # shuffled once, so that data.train_subset (a prefix) is a random subset
            order = torch.randperm(len(split_pairs), generator=generator).tolist()
            split_pairs = [split_pairs[i] for i in order]
        sources, targets = encode_pairs(tokenizer, split_pairs, settings.max_length)
        prepared[f"{split}_images"] = sources.to(torch.int32)
        prepared[f"{split}_labels"] = targets.to(torch.int32)
        if split != "train":
            prepared[f"{split}_references"] = [target for _, target in split_pairs]
    return prepared
