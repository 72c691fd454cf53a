"""The translation kernel: parallel text, the joint BPE tokenizer, the Transformer, loss,
greedy decoding and BLEU."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import sacrebleu
import torch
import torch.nn.functional as F

from sparse_soups.kernels.datasets import DataError, DataNotFoundError
from sparse_soups.kernels.pruning import excluded_parameters, prunable_parameters
from sparse_soups.kernels.translation import (
    BOS,
    EOS,
    PAD,
    UNK,
    TransformerTranslator,
    bleu,
    encode_pairs,
    greedy_decode,
    label_smoothed_loss,
    load_tokenizer,
    read_parallel_text,
    token_accuracy,
    train_tokenizer,
    transformer_translator,
    translate,
)

GERMAN = ["der Hund", "die Katze", "das Haus", "ein Mann", "eine Frau", "das Kind", "der Straße", "Köln"]
ENGLISH = ["the dog", "the cat", "the house", "a man", "a woman", "the child", "the street", "Cologne"]
VERBS_DE = ["sieht", "mag", "hört", "grüßt", "kennt"]
VERBS_EN = ["sees", "likes", "hears", "greets", "knows"]


def corpus(n: int = 300, seed: int = 0) -> list[tuple[str, str]]:
    """Short German-English pairs with umlauts, ß, punctuation and double spaces inside."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        a, b, v = rng.randrange(len(GERMAN)), rng.randrange(len(GERMAN)), rng.randrange(len(VERBS_DE))
        end = rng.choice([".", "!", "?", " -  \u201cja\u201d."])
        pairs.append(
            (
                f"{GERMAN[a].capitalize()} {VERBS_DE[v]} {GERMAN[b]}{end}",
                f"{ENGLISH[a]} {VERBS_EN[v]} {ENGLISH[b]}{end}",
            )
        )
    return pairs


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest, and steadiest on shared CPUs, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer([text for pair in corpus() for text in pair], 400, path)
    return path


# --- reading --------------------------------------------------------------------------------


def test_parallel_text_round_trips(tmp_path: Path) -> None:
    de, en = tmp_path / "train.de", tmp_path / "train.en"
    de.write_bytes("Grüße aus Köln.\r\n\nZeile\u2028mit Trenner\n  Hallo  \nnur Deutsch\n".encode())
    en.write_bytes("Greetings from Cologne.\r\nempty German\nline\u2028with separator\nHello\n\n".encode())
    assert read_parallel_text(de, en) == [
        ("Grüße aus Köln.", "Greetings from Cologne."),
        ("Zeile\u2028mit Trenner", "line\u2028with separator"),  # U+2028 is not a line break
        ("Hallo", "Hello"),
    ]


def test_line_count_mismatch_names_both_files(tmp_path: Path) -> None:
    de, en = tmp_path / "train.de", tmp_path / "train.en"
    de.write_text("a\nb\nc\n", encoding="utf-8")
    en.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.de has 3 lines but .*train\.en has 2"):
        read_parallel_text(de, en)


def test_missing_file_is_named(tmp_path: Path) -> None:
    de = tmp_path / "newstest2016.de"
    de.write_text("Hallo\n", encoding="utf-8")
    with pytest.raises(DataNotFoundError, match=r"newstest2016\.en"):
        read_parallel_text(de, tmp_path / "newstest2016.en")


def test_non_utf8_names_file_and_line(tmp_path: Path) -> None:
    de, en = tmp_path / "train.de", tmp_path / "train.en"
    de.write_bytes(b"Hallo\n" + "Grüße\n".encode("latin-1"))
    en.write_text("Hello\nGreetings\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.de is not UTF-8: line 2"):
        read_parallel_text(de, en)


# --- tokenizer ------------------------------------------------------------------------------


def test_tokenizer_decodes_to_the_original_text(tokenizer_file: Path) -> None:
    tokenizer = load_tokenizer(tokenizer_file)
    for pair in corpus(20, seed=1):
        for text in pair:
            ids = tokenizer.encode(text, add_special_tokens=False).ids
            assert UNK not in ids
            assert tokenizer.decode(ids) == text
    assert 4 + 256 < tokenizer.get_vocab_size() <= 400  # the corpus runs out of merges before 400


def test_special_ids_are_fixed(tokenizer_file: Path) -> None:
    tokenizer = load_tokenizer(tokenizer_file)
    assert (PAD, BOS, EOS, UNK) == (0, 1, 2, 3)
    assert [tokenizer.token_to_id(t) for t in ("<pad>", "<s>", "</s>", "<unk>")] == [PAD, BOS, EOS, UNK]


def test_tokenizer_training_is_deterministic(tmp_path: Path, tokenizer_file: Path) -> None:
    again = tmp_path / "again.json"
    train_tokenizer([text for pair in corpus() for text in pair], 400, again)
    assert again.read_bytes() == tokenizer_file.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["again.json"]  # no temp file left behind


# --- encode_pairs ---------------------------------------------------------------------------


def test_encode_pairs_places_special_tokens(tokenizer_file: Path) -> None:
    tokenizer = load_tokenizer(tokenizer_file)
    pairs = corpus(3, seed=2)
    sources, targets = encode_pairs(tokenizer, pairs, 40)
    assert sources.shape == targets.shape == (3, 40)
    assert sources.dtype == targets.dtype == torch.int64
    for (source_text, target_text), source, target in zip(pairs, sources, targets, strict=True):
        source_ids = tokenizer.encode(source_text, add_special_tokens=False).ids
        target_ids = tokenizer.encode(target_text, add_special_tokens=False).ids
        assert source.tolist() == [*source_ids, EOS] + [PAD] * (40 - len(source_ids) - 1)
        assert target.tolist() == [BOS, *target_ids, EOS] + [PAD] * (40 - len(target_ids) - 2)


def test_truncation_keeps_eos(tokenizer_file: Path) -> None:
    tokenizer = load_tokenizer(tokenizer_file)
    pair = ("Der Hund sieht die Katze und das Haus und eine Frau.", "the dog sees the cat and the house.")
    sources, targets = encode_pairs(tokenizer, [pair], 5)
    source_ids = tokenizer.encode(pair[0], add_special_tokens=False).ids
    target_ids = tokenizer.encode(pair[1], add_special_tokens=False).ids
    assert len(source_ids) > 5 and len(target_ids) > 5
    assert sources[0].tolist() == [*source_ids[:4], EOS]
    assert targets[0].tolist() == [BOS, *target_ids[:3], EOS]


# --- BLEU -----------------------------------------------------------------------------------


def test_bleu_matches_sacrebleu() -> None:
    refs = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."]]
    sys = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    score, signature = bleu(sys, refs[0])
    assert score == pytest.approx(sacrebleu.corpus_bleu(sys, refs).score)
    assert 0 < score < 100
    assert "tok:13a" in signature and f"version:{sacrebleu.__version__}" in signature


def test_identical_hypotheses_score_100() -> None:
    references = ["Die Katze sitzt auf der Matte.", "Grüße aus Köln!"]
    assert bleu(list(references), references)[0] == pytest.approx(100.0)


# --- loss -----------------------------------------------------------------------------------


def test_pad_positions_do_not_change_the_loss() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 10)
    targets = torch.tensor([[5, 6, 7, EOS], [4, EOS, PAD, PAD]])
    padded_logits = torch.cat([logits, 100 * torch.randn(2, 3, 10)], dim=1)
    padded_targets = torch.cat([targets, torch.full((2, 3), PAD)], dim=1)
    for smoothing in (0.0, 0.1):
        assert label_smoothed_loss(padded_logits, padded_targets, smoothing) == pytest.approx(
            float(label_smoothed_loss(logits, targets, smoothing))
        )
    changed = logits.clone()
    changed[1, 3] = 100 * torch.randn(10)  # a PAD position
    assert label_smoothed_loss(changed, targets, 0.1) == pytest.approx(
        float(label_smoothed_loss(logits, targets, 0.1))
    )


def test_unsmoothed_loss_is_cross_entropy_on_real_tokens() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 10)
    targets = torch.tensor([[5, 6, 7, EOS], [4, EOS, PAD, PAD]])
    real = targets != PAD
    expected = F.cross_entropy(logits[real], targets[real])
    assert label_smoothed_loss(logits, targets, 0.0) == pytest.approx(float(expected))
    assert label_smoothed_loss(logits, targets, 0.1) != pytest.approx(float(expected))


def test_token_accuracy_counts_only_real_tokens() -> None:
    targets = torch.tensor([[5, 6, EOS], [4, PAD, PAD]])
    logits = F.one_hot(torch.tensor([[5, 9, EOS], [4, 7, 8]]), 10).float()
    assert token_accuracy(logits, targets) == (3, 4)


# --- model ----------------------------------------------------------------------------------


def tiny_model(vocab_size: int = 14) -> TransformerTranslator:
    return transformer_translator(
        vocab_size,
        d_model=32,
        heads=2,
        encoder_layers=1,
        decoder_layers=1,
        feedforward=64,
        dropout=0.0,
        max_length=16,
    )


def test_output_shape() -> None:
    torch.manual_seed(0)
    model = tiny_model()
    source = torch.tensor([[5, 6, 7, EOS, PAD], [8, EOS, PAD, PAD, PAD]])
    target_in = torch.tensor([[BOS, 5, 6, 7], [BOS, 8, PAD, PAD]])
    assert model(source, target_in).shape == (2, 4, 14)
    assert "positions" not in model.state_dict()
    assert all(p is not model.positions for p in model.parameters())


def test_decoder_is_causal_and_source_padding_is_masked() -> None:
    torch.manual_seed(0)
    model = tiny_model().eval()
    source = torch.tensor([[5, 6, 7, EOS], [8, 9, EOS, PAD]])
    target_in = torch.tensor([[BOS, 5, 6, 7, 8, 9], [BOS, 8, 9, 10, 11, 12]])
    logits = model(source, target_in)
    changed = target_in.clone()
    changed[:, 3] = 13
    changed_logits = model(source, changed)
    torch.testing.assert_close(changed_logits[:, :3], logits[:, :3])
    assert not torch.allclose(changed_logits[:, 3:], logits[:, 3:])
    # more PAD columns on the source side change nothing
    padded = torch.cat([source, torch.full((2, 3), PAD)], dim=1)
    torch.testing.assert_close(model(padded, target_in), logits, atol=1e-5, rtol=1e-5)


def test_prunable_parameters_match_the_docstring() -> None:
    model = TransformerTranslator(40, d_model=16, heads=2, encoder_layers=2, decoder_layers=1, feedforward=32)
    encoder = [
        f"transformer.encoder.layers.{i}.{name}.weight"
        for i in range(2)
        for name in ("self_attn.out_proj", "linear1", "linear2")
    ]
    decoder = [
        f"transformer.decoder.layers.0.{name}.weight"
        for name in ("self_attn.out_proj", "multihead_attn.out_proj", "linear1", "linear2")
    ]
    prunable = prunable_parameters(model)
    assert list(prunable) == [*encoder, *decoder, "output.weight"]
    assert not any("in_proj" in name or "embedding" in name for name in prunable)
    assert excluded_parameters(model, ["classifier"]) == {"output.weight"}
    doc = " ".join(TransformerTranslator.__doc__.split())
    for name in prunable:
        assert name.split(".layers.")[-1].split(".", 1)[-1] in doc
    assert "`in_proj_weight` is a bare parameter" in doc and "embeddings" in doc


def test_translate_keeps_order_and_batches_like_single_sentences(tokenizer_file: Path) -> None:
    torch.manual_seed(0)
    tokenizer = load_tokenizer(tokenizer_file)
    model = tiny_model(tokenizer.get_vocab_size())
    sources = [german for german, _ in corpus(7, seed=3)]
    batched = translate(model, tokenizer, sources, 8, batch_size=3)
    single = [translate(model, tokenizer, [source], 8, batch_size=1)[0] for source in sources]
    assert batched == single
    assert all(isinstance(text, str) for text in batched)
    assert len(set(batched)) > 1  # outputs depend on the source


# --- greedy decoding ------------------------------------------------------------------------


def random_sequences(
    generator: torch.Generator, n: int, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sources `ids </s>` of 5 or 6 ids (padded) and the targets `<s> ids </s>` to copy them."""
    lengths = torch.randint(5, 7, (n,), generator=generator)
    ids = torch.randint(4, vocab_size, (n, 6), generator=generator)
    ids[torch.arange(6) >= lengths.unsqueeze(1)] = PAD
    sources = torch.cat([ids, torch.full((n, 1), PAD)], dim=1)
    sources[torch.arange(n), lengths] = EOS
    targets = torch.cat([torch.full((n, 1), BOS), sources], dim=1)
    return sources, targets


def test_greedy_decoding_learns_to_copy() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    vocab_size = 14
    model = tiny_model(vocab_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        sources, targets = random_sequences(generator, 64, vocab_size)
        logits = model(sources, targets[:, :-1])
        loss = label_smoothed_loss(logits, targets[:, 1:], 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sources, _ = random_sequences(torch.Generator().manual_seed(1), 200, vocab_size)
    model.train()
    decoded = greedy_decode(model, sources, 10)
    assert model.training  # mode restored
    assert decoded.shape[0] == 200 and decoded.shape[1] <= 10
    exact = [
        decoded[i, : sources.shape[1]].tolist() == sources[i].tolist()
        and bool((decoded[i, sources.shape[1] :] == PAD).all())
        for i in range(200)
    ]
    assert sum(exact) >= 180
