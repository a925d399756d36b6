"""Run SmolLM2 on a prompt and write its KV cache in the ``starc-kv/1`` schema.

The prompt is prefilled, then ``decode_steps`` tokens are decoded greedily. Decode step ``s`` feeds
the token at position ``prefill_len + s`` (the greedy choice after position ``prefill_len + s - 1``)
and records that step's post-RoPE queries of every layer. The file then holds, per layer ``l``:

- ``k_{l}``, ``v_{l}``: ``[T, n_kv_heads, head_dim]``, ``T = prefill_len + decode_steps``
- ``q_{l}``: ``[decode_steps, n_q_heads, head_dim]`` (unscaled; scores use ``1/sqrt(head_dim)``)
- ``qp_{l}`` (with ``prefill_queries > 0``): ``[P', n_q_heads, head_dim]``, the queries of ``P'``
  evenly spaced prefill positions (``meta.prefill_query_positions``): calibration data the
  compiler's query metric and placement learn from (docs/compiler.md)

and ``meta`` (JSON): schema, model facts, ``prefill_len``, ``decode_steps``, ``prompt_ids``,
``generated_ids`` (the ``decode_steps`` tokens at positions ``prefill_len ..``),
``next_token_id`` (the greedy prediction after the last position), ``rope_base`` and the RoPE
layout. Keys and queries are in the GGUF head-dimension order (interleaved RoPE pairs); see
:func:`starc.model.llama.hf_dim_order` for the Hugging Face order.

The format follows the output path: ``*.npz`` (``meta`` is a 0-d unicode array),
``*.safetensors`` (metadata key ``starc_meta``) or a directory of ``.npy`` files plus
``meta.json``. Every format is written under a temporary name and moved into place.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .llama import DENSE_LAYERS, AttentionFn, LlamaModel

__all__ = ["SCHEMA", "Extraction", "KVFormat", "extract_kv", "kv_format", "read_kv", "write_kv"]

SCHEMA = "starc-kv/1"
KVFormat = Literal["npz", "safetensors", "npy-dir"]
_META_KEY = "starc_meta"


@dataclass
class Extraction:
    """Arrays and metadata of one extraction, plus timings."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    path: Path | None = None
    format: KVFormat | None = None
    timings: dict[str, float] = field(default_factory=dict)


def kv_format(path: str | os.PathLike[str]) -> KVFormat:
    """Format chosen by an output path: ``.npz``, ``.safetensors``, else a directory."""
    p = Path(path)
    suffix = p.suffix
    if suffix == ".npz":
        return "npz"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == "" or p.is_dir() or str(path).endswith(("/", os.sep)):
        return "npy-dir"
    raise ValueError(f"unsupported KV output {str(path)!r}: use a .npz or .safetensors file name, "
                     "or a directory (no suffix) for .npy files plus meta.json")


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=False) as prog:
        yield prog


def extract_kv(model: LlamaModel, prompt_ids: Sequence[int], decode_steps: int, *,
               dtype: str | np.dtype[Any] = "float16", attention: AttentionFn | None = None,
               progress: bool = False, extra_meta: dict[str, Any] | None = None,
               stop_at_eos: bool = False, prefill_queries: int = 0) -> Extraction:
    """Prefill ``prompt_ids``, decode ``decode_steps`` greedy tokens, collect K/V/Q (and, with
    ``prefill_queries > 0``, the queries of that many evenly spaced prefill positions).

    With ``stop_at_eos`` decoding ends early when the model emits its end-of-turn token; the
    recorded ``decode_steps`` is then the number actually run.
    """
    cfg = model.config
    ids = [int(i) for i in prompt_ids]
    if not ids:
        raise ValueError("the prompt is empty: give text or token ids")
    if decode_steps < 0:
        raise ValueError(f"decode_steps must be >= 0, not {decode_steps}")
    if prefill_queries < 0:
        raise ValueError(f"prefill_queries must be >= 0, not {prefill_queries}")
    if len(ids) + decode_steps > cfg.context_length:
        raise ValueError(f"prompt ({len(ids)} tokens) plus {decode_steps} decode steps exceed the "
                         f"model's context of {cfg.context_length} tokens; use at most "
                         f"{cfg.context_length - decode_steps} prompt tokens")
    out_dtype = np.dtype(dtype)
    if out_dtype not in (np.float16, np.float32):
        raise ValueError(f"dtype must be float16 or float32, not {out_dtype}")

    cache = model.new_cache(len(ids) + decode_steps)
    q_steps: list[list[np.ndarray]] = [[] for _ in range(cfg.n_layers)]
    generated: list[int] = []
    n_chunks = -(-len(ids) // model.prefill_chunk)
    with _progress(progress) as prog:
        pre_task = prog.add_task("prefill", total=cfg.n_layers * n_chunks) if prog else None
        dec_task = prog.add_task("decode", total=decode_steps) if prog else None
        tick: Callable[[int, int], None] | None = None
        if prog is not None:
            def tick(_layer: int, _n: int) -> None:
                prog.advance(pre_task)

        t0 = time.perf_counter()
        res = model.forward(ids, cache, attention=attention, on_layer=tick,
                            capture_q=prefill_queries > 0)
        t1 = time.perf_counter()
        qp_pos = np.unique(np.linspace(0, len(ids) - 1, min(prefill_queries, len(ids)))
                           .round().astype(np.int64)) if prefill_queries > 0 else None
        qp = [q[qp_pos] for q in res.q] if res.q is not None and qp_pos is not None else None
        assert res.logits is not None
        nxt = int(np.argmax(res.logits[-1]))
        for _ in range(decode_steps):
            generated.append(nxt)
            res = model.forward([nxt], cache, attention=attention, capture_q=True)
            assert res.logits is not None and res.q is not None
            for layer, q in enumerate(res.q):
                q_steps[layer].append(q)
            nxt = int(np.argmax(res.logits[-1]))
            if prog is not None:
                prog.advance(dec_task)
            if stop_at_eos and nxt == cfg.eos_token_id:
                break
        t2 = time.perf_counter()

    steps = len(generated)
    arrays: dict[str, np.ndarray] = {}
    for layer in range(cfg.n_layers):
        arrays[f"k_{layer}"] = _cast(cache.keys(layer), out_dtype, f"k_{layer}")
        arrays[f"v_{layer}"] = _cast(cache.values(layer), out_dtype, f"v_{layer}")
        q = (np.concatenate(q_steps[layer], axis=0) if steps else
             np.zeros((0, cfg.n_q_heads, cfg.head_dim), np.float32))
        arrays[f"q_{layer}"] = _cast(q, out_dtype, f"q_{layer}")
        if qp is not None:
            arrays[f"qp_{layer}"] = _cast(qp[layer], out_dtype, f"qp_{layer}")
    meta: dict[str, Any] = {
        "schema": SCHEMA,
        "model": model.source.path.name.removesuffix(".gguf"),
        "model_name": cfg.name,
        "n_layers": cfg.n_layers,
        "n_q_heads": cfg.n_q_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "prefill_len": len(ids),
        "decode_steps": steps,
        "dtype": out_dtype.name,
        "rope_base": cfg.rope_base,
        "rope_layout": "interleaved pairs (2i, 2i+1), GGUF head-dimension order",
        "rms_eps": cfg.rms_eps,
        "vocab_size": cfg.vocab_size,
        "context_length": cfg.context_length,
        "dense_layers": list(DENSE_LAYERS),
        "attention": "dense" if attention is None else getattr(attention, "__name__", "custom"),
        "prompt_ids": ids,
        "generated_ids": generated,
        "next_token_id": nxt,
        "generated_text": model.tokenizer.decode(generated),
        "gguf_key": model.source.key,
    }
    if qp_pos is not None:
        meta["prefill_query_positions"] = qp_pos.tolist()
    if extra_meta:
        meta |= extra_meta
    return Extraction(arrays=arrays, meta=meta, prefill_seconds=t1 - t0, decode_seconds=t2 - t1)


def _cast(a: np.ndarray, dtype: np.dtype[Any], name: str) -> np.ndarray:
    if dtype == np.float16:
        peak = float(np.max(np.abs(a))) if a.size else 0.0
        if not np.isfinite(peak) or peak > float(np.finfo(np.float16).max):
            raise ValueError(f"{name} reaches {peak:.4g}, beyond float16; use dtype float32")
    return np.ascontiguousarray(a, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# writing and reading


def write_kv(path: str | os.PathLike[str], arrays: dict[str, np.ndarray], meta: dict[str, Any],
             *, force: bool = False, out: Any = None) -> KVFormat:
    """Write ``arrays`` and ``meta`` atomically in the format the path asks for, under the output
    rules of :mod:`starc.outputs` (an existing file needs ``force``; a folder is replaced only if
    starc wrote it). ``out``: an output already checked with :func:`starc.kv.kv_output`."""
    from starc.kv import write_arrays

    fmt = kv_format(path)
    write_arrays(path, arrays, json.dumps(meta), fmt="dir" if fmt == "npy-dir" else fmt,
                 force=force, command="kv extract", out=out)
    return fmt


def read_kv(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`write_kv` (no schema validation beyond the format)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"KV file not found: {p}")
    if p.is_dir():
        meta = json.loads((p / "meta.json").read_text())
        arrays = {f.stem: np.load(f, allow_pickle=False) for f in sorted(p.glob("*.npy"))}
        return arrays, meta
    fmt = kv_format(p)
    if fmt == "npz":
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k != "meta"}
            meta = json.loads(str(npz["meta"]))
        return arrays, meta
    from safetensors import safe_open

    with safe_open(str(p), framework="numpy") as fh:
        meta = json.loads((fh.metadata() or {})[_META_KEY])
        arrays = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
    return arrays, meta
