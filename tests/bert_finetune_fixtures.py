"""Generated data for the BERT fine-tuning tests (not GLUE): a separable sentence task in
SST-2's file layout, with a vocabulary and tiny random BERTs to fine-tune."""

import random

from bert.tiny import build_vocab, save_tiny_bert

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "bird",
    "runs",
    "sleeps",
    "sings",
    "under",
    "over",
    "near",
    "green",
    "blue",
    "old",
    "house",
    "river",
]


def write_tsv(path, rows):
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def separable_task(folder, seed=0, train=480, dev=120, test=40):
    """train/dev/test.tsv where the label is 1 when the sentence holds "zebra", vocab.txt,
    and two tiny BERTs (hidden size 32): tiny_bert without dropout (runs that must agree
    to rounding) and tiny_bert_dropout with 0.1 (exact resume includes the dropout
    noise). Returns the folder."""
    rng = random.Random(seed)

    def sentence(label):
        words = rng.choices(WORDS, k=rng.randint(4, 9))
        if label:
            words.insert(rng.randrange(len(words) + 1), "zebra")
        return " ".join(words)

    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for name, n in (("train", train), ("dev", dev)):
        rows = [[sentence(y), str(y)] for y in (rng.randint(0, 1) for _ in range(n))]
        texts += [text for text, _ in rows]
        write_tsv(folder / f"{name}.tsv", [["sentence", "label"], *rows])
    write_tsv(
        folder / "test.tsv",
        [["index", "sentence"]] + [[str(i), sentence(i % 2)] for i in range(test)],
    )
    vocab = build_vocab(texts, folder / "vocab.txt", vocab_size=100)
    save_tiny_bert(folder / "tiny_bert", vocab, hidden_size=32, dropout=0.0)
    save_tiny_bert(folder / "tiny_bert_dropout", vocab, hidden_size=32, dropout=0.1)
    return folder


def glue_flags(data_dir, out, *extra, model=None):
    """run_glue flags for the separable task (SST-2 layout, short sequences); the model
    defaults to DATA_DIR/tiny_bert."""
    return [
        "--setup_file", "", "--task_name", "SST-2", "--data_dir", str(data_dir),
        "--init_checkpoint", str(model or data_dir / "tiny_bert"), "--output_dir", str(out),
        "--max_seq_length", "16", "--train_batch_size", "16", "--learning_rate", "3e-3",
        "--eval_batch_size", "32", "--log_freq", "10", *extra,
    ]  # fmt: skip
