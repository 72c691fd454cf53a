"""Neural machine translation (WMT16 German->English): text, subwords, model, decoding, BLEU.

The bottom layer for the translation task, as plain functions: parallel text is read from
the plain one-sentence-per-line files that statmt and sacrebleu distribute, a joint
byte-level BPE tokenizer covers both languages (so source and target share ids), a
pre-norm encoder-decoder Transformer maps source ids to target logits, and greedy decoding
plus sacrebleu's corpus BLEU score a model on detokenized text, the way WMT results are
reported. Nothing here knows about the workflow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn

from .datasets import DataError, DataNotFoundError
from .files import atomic_write_bytes

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")  # trained in this order, so the ids above hold
BYTE_ALPHABET = 256  # byte-level BPE starts from one symbol per byte


# --- parallel text -------------------------------------------------------------------------


def _read_lines(path: Path) -> list[str]:
    """Lines split at "\\n" only: str.splitlines would also split at U+2028, U+0085 and
    other separators that occur inside WMT sentences, misaligning the two sides."""
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist: expected a plain-text file, one sentence per line")
    lines = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path} is not UTF-8: line {number} has an invalid byte at column {error.start + 1}"
                ) from error
            lines.append(text.rstrip("\r\n"))
    return lines


def read_parallel_text(source: Path, target: Path) -> list[tuple[str, str]]:
    """Sentence pairs from two line-aligned UTF-8 files (e.g. train.de and train.en).

    Line i of one file translates line i of the other, so the files must have the same
    number of lines; a mismatch means a truncated or wrong file, and pairing anyway would
    silently misalign everything after the first gap. Surrounding whitespace is removed (it
    carries no meaning for translation or BLEU, and the tokenizer restores text exactly only
    without it), and pairs with an empty side are dropped, as WMT training scripts do.
    """
    source, target = Path(source), Path(target)
    missing = [str(path) for path in (source, target) if not path.is_file()]
    if missing:
        raise DataNotFoundError(
            f"{' and '.join(missing)} not found: expected line-aligned plain-text files {source} and {target}"
        )
    source_lines, target_lines = _read_lines(source), _read_lines(target)
    if len(source_lines) != len(target_lines):
        raise DataError(
            f"{source} has {len(source_lines)} lines but {target} has {len(target_lines)}: "
            "parallel files must be line-aligned"
        )
    pairs = [(s.strip(), t.strip()) for s, t in zip(source_lines, target_lines, strict=True)]
    return [(s, t) for s, t in pairs if s and t]


# --- tokenizer ------------------------------------------------------------------------------


def train_tokenizer(texts: Iterable[str], vocab_size: int, out: Path) -> None:
    """Train one byte-level BPE tokenizer on `texts` (both languages together) and save it.

    A joint vocabulary lets names and numbers keep their ids across languages. Byte-level
    pre-tokenization never needs `<unk>` and decodes to exactly the input text (the prefix
    space it adds is stripped again on decoding), so BLEU sees detokenized output. The
    special tokens come first, so PAD, BOS, EOS and UNK are 0..3 in every tokenizer. The
    trainer is deterministic for the same input; the file is written atomically so a
    killed run never leaves half a tokenizer behind.
    """
    minimum = len(SPECIAL_TOKENS) + BYTE_ALPHABET + 1
    if vocab_size < minimum:
        raise ValueError(f"vocab_size {vocab_size} is too small: byte-level BPE needs at least {minimum}")
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS[UNK]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tokenizer.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    _check_special_ids(tokenizer, out)
    atomic_write_bytes(out, tokenizer.to_str(pretty=True).encode())


def load_tokenizer(path: Path) -> Tokenizer:
    """A tokenizer written by `train_tokenizer`, checked to use the fixed special ids."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist: expected a tokenizer JSON from train_tokenizer")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # the library raises a bare Exception for malformed files
        raise DataError(f"{path} is not a tokenizer JSON file: {error}") from error
    _check_special_ids(tokenizer, path)
    return tokenizer


def _check_special_ids(tokenizer: Tokenizer, path: Path) -> None:
    found = [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS]
    if found != list(range(len(SPECIAL_TOKENS))):
        raise DataError(f"{path}: special tokens {SPECIAL_TOKENS} have ids {found}, expected 0..3")


def _padded(rows: Sequence[list[int]], length: int) -> torch.Tensor:
    ids = torch.full((len(rows), length), PAD, dtype=torch.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
    return ids


def _source_ids(tokenizer: Tokenizer, sentences: Sequence[str], max_length: int) -> list[list[int]]:
    """Subword ids + `</s>`, cut to `max_length` keeping `</s>`: the end marker tells the
    encoder where the sentence ends even when it was truncated."""
    encodings = tokenizer.encode_batch(list(sentences), add_special_tokens=False)
    return [[*encoding.ids[: max_length - 1], EOS] for encoding in encodings]


def encode_pairs(
    tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]], max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source and target ids, int64 (N, max_length), padded with PAD.

    Sources are `ids </s>`, targets `<s> ids </s>`; both are truncated so that `</s>` stays
    last, which the decoder must learn to emit to stop. Training feeds `targets[:, :-1]` to
    the decoder and predicts `targets[:, 1:]`.
    """
    if max_length < 3:
        raise ValueError(f"max_length must be at least 3 (<s>, one token, </s>), got {max_length}")
    sources = _source_ids(tokenizer, [s for s, _ in pairs], max_length)
    encodings = tokenizer.encode_batch([t for _, t in pairs], add_special_tokens=False)
    targets = [[BOS, *encoding.ids[: max_length - 2], EOS] for encoding in encodings]
    return _padded(sources, max_length), _padded(targets, max_length)


# --- model ----------------------------------------------------------------------------------


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """The fixed position code of Vaswani et al. (2017), (length, d_model)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    code = torch.zeros(length, d_model)
    code[:, 0::2] = torch.sin(position * frequency)
    code[:, 1::2] = torch.cos(position * frequency)[:, : d_model // 2]
    return code


class TransformerTranslator(nn.Module):
    """Pre-norm encoder-decoder Transformer (`torch.nn.Transformer`, batch-first) for translation.

    Source and target have separate embeddings (scaled by sqrt(d_model)) plus a fixed
    sinusoidal position code, kept as a non-persistent buffer: it is a function of the
    shape, not learned, so it is neither pruned, averaged in a soup nor stored in
    checkpoints. The output projection is a separate, untied `nn.Linear`.

    Pruning: `pruning.prunable_parameters` selects the `.weight` of every Conv and Linear
    module, found by module type. In this model that is, per encoder layer,
    `self_attn.out_proj.weight`, `linear1.weight` and `linear2.weight`; per decoder layer,
    `self_attn.out_proj.weight`, `multihead_attn.out_proj.weight`, `linear1.weight` and
    `linear2.weight` (all under `transformer.`); and the output projection `output.weight`
    (the last Linear, so `exclude: [classifier]` protects it). Not pruned: the source and
    target embeddings, the attention input projections (`in_proj_weight` is a bare parameter
    of `nn.MultiheadAttention`, not a Linear module, so the query/key/value weights stay
    dense), all biases and all LayerNorms.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 512,
        heads: int = 8,
        encoder_layers: int = 6,
        decoder_layers: int = 6,
        feedforward: int = 2048,
        dropout: float = 0.1,
        max_length: int = 256,
    ) -> None:
        super().__init__()
        self.vocab_size, self.d_model, self.max_length = vocab_size, d_model, max_length
        self.source_embedding = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.target_embedding = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        for embedding in (self.source_embedding, self.target_embedding):
            # scaled by sqrt(d_model) in forward, so unit-scale inputs need std d_model^-1/2
            nn.init.normal_(embedding.weight, std=d_model**-0.5)
            nn.init.zeros_(embedding.weight[PAD])
        self.register_buffer("positions", sinusoidal_positions(max_length, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, feedforward, dropout, batch_first=True, norm_first=True
        )
        # nested tensors do not support pre-norm layers; saying so avoids torch's warning
        encoder = nn.TransformerEncoder(
            layer, encoder_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.transformer = nn.Transformer(
            d_model,
            heads,
            encoder_layers,
            decoder_layers,
            feedforward,
            dropout,
            custom_encoder=encoder,
            batch_first=True,
            norm_first=True,
        )
        self.output = nn.Linear(d_model, vocab_size)

    def _embed(self, embedding: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        if length > self.max_length:
            raise ValueError(f"sequence of length {length} exceeds the model's max_length {self.max_length}")
        return self.dropout(embedding(ids) * math.sqrt(self.d_model) + self.positions[:length])

    def encode(self, source: torch.Tensor) -> torch.Tensor:
        """Encoder states (N, S, d_model); PAD positions are masked out as keys."""
        return self.transformer.encoder(
            self._embed(self.source_embedding, source), src_key_padding_mask=source == PAD
        )

    def decode(self, memory: torch.Tensor, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        """Logits (N, T, V) for the token after each target prefix: position t sees only
        target positions <= t (causal mask) and the non-PAD source positions."""
        length = target_in.shape[1]
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=target_in.device), 1)
        states = self.transformer.decoder(
            self._embed(self.target_embedding, target_in),
            memory,
            tgt_mask=causal,
            tgt_is_causal=True,
            tgt_key_padding_mask=target_in == PAD,
            memory_key_padding_mask=source == PAD,
        )
        return self.output(states)

    def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        """Logits (N, T, V) for teacher forcing: `target_in` is the target shifted right
        (starting with `<s>`)."""
        return self.decode(self.encode(source), source, target_in)


def transformer_translator(vocab_size: int, **options: object) -> TransformerTranslator:
    """Build a TransformerTranslator from a vocabulary size and the `model.*` options."""
    return TransformerTranslator(vocab_size=vocab_size, **options)  # type: ignore[arg-type]


# --- training signals -----------------------------------------------------------------------


def label_smoothed_loss(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Label-smoothed cross entropy, averaged over the non-PAD target tokens.

    PAD positions are ignored, so how much a batch is padded does not change the loss.
    Label smoothing (0.1 in Vaswani et al.) is the standard regularizer for translation.
    """
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=PAD,
        label_smoothing=smoothing,
    )


@torch.no_grad()
def token_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """(correctly predicted, counted) non-PAD target tokens, summable over batches into a
    per-epoch training accuracy."""
    counted = targets != PAD
    correct = (logits.argmax(-1) == targets) & counted
    return int(correct.sum()), int(counted.sum())


# --- decoding and scoring -------------------------------------------------------------------


@torch.no_grad()
def greedy_decode(model: TransformerTranslator, source: torch.Tensor, max_length: int) -> torch.Tensor:
    """Most likely next token at every step, for a batch: ids (N, <= max_length) without `<s>`.

    Each sentence ends at its `</s>` (kept; PAD after it); decoding stops when all have
    ended or `max_length` tokens were produced. The model runs in eval mode (no dropout)
    and is put back into its previous mode afterwards. The source is encoded once.
    """
    was_training = model.training
    model.eval()
    try:
        memory = model.encode(source)
        tokens = torch.full((source.shape[0], 1), BOS, dtype=torch.int64, device=source.device)
        finished = torch.zeros(source.shape[0], dtype=torch.bool, device=source.device)
        for _ in range(max_length):
            following = model.decode(memory, source, tokens)[:, -1].argmax(-1)
            following = following.masked_fill(finished, PAD)
            tokens = torch.cat([tokens, following.unsqueeze(1)], dim=1)
            finished |= following == EOS
            if bool(finished.all()):
                break
        return tokens[:, 1:]
    finally:
        model.train(was_training)


def bleu(hypotheses: list[str], references: list[str]) -> tuple[float, str]:
    """Corpus BLEU (0-100) of detokenized hypotheses against one reference each, with
    sacrebleu's defaults (13a tokenization, exponential smoothing), and sacrebleu's signature
    string, which records those choices and its version so that scores stay comparable."""
    from sacrebleu.metrics import BLEU

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("BLEU needs at least one sentence")
    metric = BLEU()
    score = metric.corpus_score(hypotheses, [references])
    return float(score.score), str(metric.get_signature())


def translate(
    model: TransformerTranslator, tokenizer: Tokenizer, sources: list[str], max_length: int, batch_size: int
) -> list[str]:
    """Detokenized greedy translations of `sources`, in their order.

    Sentences are batched by length (less padding, so less wasted compute) on the model's
    device; each source is truncated to `max_length` ids and each output to `max_length`
    tokens.
    """
    device = next(model.parameters()).device
    ids = _source_ids(tokenizer, sources, max_length)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    translations = [""] * len(ids)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        rows = [ids[i] for i in chosen]
        batch = _padded(rows, max(len(row) for row in rows)).to(device)
        for i, output in zip(chosen, greedy_decode(model, batch, max_length).tolist(), strict=True):
            if EOS in output:
                output = output[: output.index(EOS)]
            translations[i] = tokenizer.decode(output, skip_special_tokens=True)
    return translations
