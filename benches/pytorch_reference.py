"""The same jobs as `scratchgpt bench`, in PyTorch eager on the CPU, for a same-machine comparison.

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch
    /tmp/torchenv/bin/python benches/pytorch_reference.py            # all cores
    /tmp/torchenv/bin/python benches/pytorch_reference.py --threads 1
    /tmp/torchenv/bin/python benches/pytorch_reference.py --memory     # peak RSS of 3 steps
    /tmp/torchenv/bin/python benches/pytorch_reference.py --train-loop 25  # a whole training run

The model is the book's chapter-4 GPT (token and position embeddings, dropout, pre-norm blocks
of causal multi-head attention and a GELU feed-forward, final layer norm, linear head), written
here with the same shapes, dropout (0.1) and optimizer (AdamW, lr 4e-4, weight decay 0.1) as
scratchgpt's benchmark, so the two tables can be read side by side. Attention uses PyTorch's
fused `scaled_dot_product_attention`, PyTorch's fastest CPU path. Nothing is downloaded: the
weights are random, which changes nothing about the time a step takes.
"""

import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, d, heads, drop):
        super().__init__()
        self.heads, self.drop = heads, drop
        self.query = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d, bias=False)
        self.out = nn.Linear(d, d)

    def forward(self, x, cache=None):
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        # With a cache, one new query sees every cached key: no mask needed.
        causal = cache is None or t > 1
        drop = self.drop if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=causal)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d, heads, drop):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, drop)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(drop)

    def forward(self, x, cache=None):
        x = x + self.drop(self.attn(self.norm1(x), cache))
        return x + self.drop(self.ff(self.norm2(x)))


class GPT(nn.Module):
    def __init__(self, vocab, ctx, d, heads, layers, drop=0.1, tie=False):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.drop = nn.Dropout(drop)
        self.blocks = nn.ModuleList(Block(d, heads, drop) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        if tie:
            self.head.weight = self.tok.weight

    def forward(self, ids, caches=None, start=0):
        pos = torch.arange(start, start + ids.shape[1])
        x = self.drop(self.tok(ids) + self.pos(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return self.head(self.norm(x))


def best_of(reps, f):
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def row(label, secs, throughput):
    print(f"{label:<48} {secs * 1e3:>10.1f}ms {throughput}")


def bench_matmul():
    for label, m, k, n in [("sgemm 512x768 @ 768x3072 (MLP up)", 512, 768, 3072),
                           ("sgemm 512x768 @ 768x50257 (logits)", 512, 768, 50257)]:
        a, b = torch.randn(m, k), torch.randn(k, n)
        c = torch.empty(m, n)
        torch.matmul(a, b, out=c)
        secs = best_of(5, lambda: torch.matmul(a, b, out=c))
        row(label, secs, f"{2 * m * k * n / secs / 1e9:>9.1f} GFLOP/s")


def bench_attention():
    for t in (256, 1024):
        q, k, v = (torch.randn(2, 12, t, 64, requires_grad=True) for _ in range(3))
        dout = torch.randn(2, 12, t, 64)

        def step():
            F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(dout)

        step()
        row(f"causal attention fwd+bwd B2 NH12 T{t} HS64", best_of(5, step), "")


def bench_train(fused):
    configs = [("train step tiny (V256 T128 C128 L4, B16)", (256, 128, 128, 4, 4), 16, 5),
               ("train step small (V50257 T256 C256 L4, B8)", (50257, 256, 256, 4, 4), 8, 3),
               ("train step gpt2-small (T256, B2)", (50257, 256, 768, 12, 12), 2, 3)]
    for label, shape, batch, reps in configs:
        torch.manual_seed(0)
        model = GPT(*shape)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1, fused=fused)
        vocab, ctx = shape[0], shape[1]
        ids = torch.randint(vocab, (batch, ctx))
        targets = torch.randint(vocab, (batch, ctx))

        def step():
            opt.zero_grad(set_to_none=True)
            logits = model(ids)
            F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
            opt.step()

        step()
        secs = best_of(reps, step)
        row(label + (" fused AdamW" if fused else ""), secs, f"{batch * ctx / secs:>9.0f} tokens/s")


@torch.no_grad()
def bench_generate(new_tokens):
    torch.manual_seed(0)
    model = GPT(50257, 1024, 768, 12, 12, tie=True)
    model.eval()
    prompt = torch.tensor([[15496, 11, 314, 716]])

    def generate():
        caches = [{} for _ in model.blocks]
        logits = model(prompt, caches, 0)
        pos = prompt.shape[1]
        for _ in range(new_tokens):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            logits = model(nxt, caches, pos)
            pos += 1

    generate()
    secs = best_of(3, generate)
    row(f"generate gpt2-small, KV cache, {new_tokens} tokens", secs, f"{new_tokens / secs:>9.1f} tokens/s")


def peak_memory(steps=3):
    """Peak RSS of GPT-2 small training steps (context 256, batch 2, fused AdamW)."""
    import resource

    torch.manual_seed(0)
    model = GPT(50257, 256, 768, 12, 12)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1, fused=True)
    ids, targets = torch.randint(50257, (2, 256)), torch.randint(50257, (2, 256))
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(ids).flatten(0, 1), targets.flatten()).backward()
        opt.step()
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS after {steps} GPT-2 small training steps: {kib / 1e6:.2f} GB")


def train_loop(steps):
    """The tiny configuration trained as a command-line run would: `steps` optimizer steps over
    consecutive windows of a token stream, dropout 0.1, fused AdamW, gradient clipping at 1.0,
    the loss read back every step. Timed as a whole process (N steps minus 5 steps), this is
    the PyTorch side of the comparison with `scratchgpt train`."""
    torch.manual_seed(0)
    vocab, ctx, batch = 256, 128, 16
    model = GPT(vocab, ctx, 128, 4, 4)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1, fused=True)
    stream = torch.randint(vocab, (steps * batch * ctx + 1,))
    for s in range(steps):
        start = s * batch * ctx
        window = stream[start : start + batch * ctx + 1]
        ids, targets = window[:-1].view(batch, ctx), window[1:].view(batch, ctx)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(ids).flatten(0, 1), targets.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--memory", action="store_true", help="only measure the peak RSS of training")
    parser.add_argument("--train-loop", type=int, metavar="STEPS", help="only train the tiny configuration for STEPS steps")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train_loop:
        return train_loop(args.train_loop)
    if args.memory:
        return peak_memory()
    print(f"PyTorch {torch.__version__}, threads: {torch.get_num_threads()}")
    print(f"{'benchmark':<48} {'time':>12} throughput")
    bench_matmul()
    bench_attention()
    for fused in (False, True):
        bench_train(fused)
    bench_generate(args.new_tokens)


if __name__ == "__main__":
    main()
