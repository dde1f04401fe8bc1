"""Times tiktoken's GPT-2 encoding of a text file: the reference for `scratchgpt tokenize`'s
throughput (README, "Corpora larger than memory").

    python benches/tokenize_reference.py FILE [--encoder-dir DIR] [--threads 2] [--rounds 3]
        [--ids OUT.bin]

tiktoken downloads its GPT-2 files on first use; without network, the encoding is built from
OpenAI's original `encoder.json` and `vocab.bpe` in --encoder-dir (tiktoken's own
`data_gym_to_mergeable_bpe_ranks` reads local paths). The file is cut into documents at blank
lines, as `scratchgpt tokenize --documents blank-lines` does; each document is encoded with
`encode_ordinary` (single thread: one call per document), with `encode_ordinary_batch`
(tiktoken's thread pool, --threads, one task per document), and with --threads Python threads
each encoding runs of 1,000 documents (tiktoken releases the GIL while it encodes): the best
2-thread figure tiktoken's Python API gives when the documents are small. `--ids` writes the ids as scratchgpt's shards hold them
(<|endoftext|> before each document, uint16) so the two can be compared byte for byte.
"""

import argparse
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

# GPT-2's pre-tokenizer pattern (tiktoken's r50k_base / gpt2)
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def gpt2_encoding(encoder_dir):
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception:
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=os.path.join(encoder_dir, "vocab.bpe"),
            encoder_json_file=os.path.join(encoder_dir, "encoder.json"),
        )
        return tiktoken.Encoding(
            "gpt2-local",
            pat_str=GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": 50256},
        )


def documents(text):
    """Blank-line documents, trimmed, empty ones dropped (scratchgpt's --documents blank-lines)."""
    docs, current = [], []
    for line in text.split("\n"):
        if line.strip() == "":
            if current:
                docs.append("\n".join(current).strip())
                current = []
        else:
            current.append(line)
    if current:
        docs.append("\n".join(current).strip())
    return [d for d in docs if d]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file")
    p.add_argument("--encoder-dir", default=os.path.join(os.path.dirname(__file__), "../../shared/data/gpt2"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ids", help="write the ids (uint16, <|endoftext|> before each document) here")
    a = p.parse_args()
    enc = gpt2_encoding(a.encoder_dir)
    t = time.perf_counter()
    with open(a.file, encoding="utf-8") as f:
        text = f.read()
    docs = documents(text)
    mb = len(text.encode()) / 1e6
    print(f"tiktoken {tiktoken.__version__}: {a.file}, {mb:.1f} MB, {len(docs)} documents "
          f"(read and split in {time.perf_counter() - t:.1f} s, not timed below)")
    for r in range(a.rounds):
        t = time.perf_counter()
        ids1 = [enc.encode_ordinary(d) for d in docs]
        s1 = time.perf_counter() - t
        t = time.perf_counter()
        idsn = enc.encode_ordinary_batch(docs, num_threads=a.threads)
        sn = time.perf_counter() - t
        assert idsn == ids1
        chunks = [docs[i:i + 1000] for i in range(0, len(docs), 1000)]
        t = time.perf_counter()
        with ThreadPoolExecutor(a.threads) as pool:
            idsc = [ids for chunk in pool.map(lambda c: [enc.encode_ordinary(d) for d in c], chunks)
                    for ids in chunk]
        sc = time.perf_counter() - t
        assert idsc == ids1
        tokens = sum(map(len, ids1)) + len(docs)
        print(f"round {r + 1}: 1 thread {s1:.2f} s = {mb / s1:.2f} MB/s; "
              f"{a.threads} threads: encode_ordinary_batch {sn:.2f} s = {mb / sn:.2f} MB/s, "
              f"runs of 1000 documents {sc:.2f} s = {mb / sc:.2f} MB/s; "
              f"{tokens} tokens with <|endoftext|>")
    if a.ids:
        import array
        out = array.array("H")
        for d in ids1:
            out.append(50256)
            out.extend(d)
        with open(a.ids, "wb") as f:
            out.tofile(f)


if __name__ == "__main__":
    sys.exit(main())
