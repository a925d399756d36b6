"""KV caches in schema ``starc-kv/1``: load, validate, save, and a seeded synthetic generator.

A cache holds, per layer ``l``, post-RoPE keys ``k_l`` and values ``v_l`` of shape
``[T, n_kv_heads, head_dim]`` and the queries ``q_l`` ``[S, n_q_heads, head_dim]`` of the ``S``
decode steps, plus a JSON ``meta`` (docs/architecture.md has the table). ``T = prefill_len +
decode_steps``; decode step ``s`` is the token at position ``prefill_len + s`` and attends to keys
``0 .. prefill_len + s``. Query head ``h`` uses KV head ``h // (n_q_heads // n_kv_heads)``.

Three containers carry the same content: ``.npz`` (arrays plus a ``meta`` string), a directory
of ``.npy`` files plus ``meta.json``, and ``.safetensors`` (metadata key ``starc_meta``). Every
write is atomic (temporary name, then :func:`os.replace`), so a reader never sees half a file.

Every problem is a :class:`KVError` whose message names the tensor, the problem and the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from starc.address import rows_needed_upper_bound
from starc.config import Config, ConfigError

__all__ = [
    "FP16_MAX",
    "SCHEMA",
    "KVCache",
    "KVError",
    "KVMeta",
    "load_kv",
    "qp_hash",
    "save_kv",
    "synthetic_kv",
]

SCHEMA = "starc-kv/1"
#: Largest finite FP16 magnitude; anything larger becomes Inf on the PIM.
FP16_MAX = 65504.0
_META_INT_KEYS = ("n_layers", "n_q_heads", "n_kv_heads", "head_dim", "prefill_len", "decode_steps")
_ALLOWED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


class KVError(ValueError):
    """A KV cache that cannot be used. The message names the tensor, the problem and the fix."""


@dataclass(frozen=True)
class KVMeta:
    """The ``meta`` record of a cache. ``extra`` keeps every other key of the file's JSON."""

    model: str
    n_layers: int
    n_q_heads: int
    n_kv_heads: int
    head_dim: int
    prefill_len: int
    decode_steps: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def context_len(self) -> int:
        """T, the number of key/value positions stored per layer."""
        return self.prefill_len + self.decode_steps

    @property
    def group_size(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.n_q_heads // self.n_kv_heads

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": SCHEMA, "model": self.model}
        d.update({k: getattr(self, k) for k in _META_INT_KEYS})
        d.update(self.extra)
        return d

    @classmethod
    def from_json(cls, d: Any, where: str) -> KVMeta:
        if not isinstance(d, dict):
            raise KVError(f"{where}: meta must be a JSON object, not {type(d).__name__}; write "
                          f"it as {{\"schema\": \"{SCHEMA}\", ...}}")
        schema = d.get("schema")
        if schema != SCHEMA:
            raise KVError(f"{where}: meta.schema is {schema!r}, expected {SCHEMA!r}; this reader "
                          f"only knows {SCHEMA} (docs/architecture.md)")
        missing = [k for k in _META_INT_KEYS if k not in d]
        if missing:
            raise KVError(f"{where}: meta lacks {', '.join(missing)}; add them (integers) to meta")
        vals: dict[str, int] = {}
        for k in _META_INT_KEYS:
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, int):
                raise KVError(f"{where}: meta.{k} must be an integer, not {v!r}")
            vals[k] = v
        for k in ("n_layers", "n_q_heads", "n_kv_heads", "head_dim", "prefill_len"):
            if vals[k] <= 0:
                raise KVError(f"{where}: meta.{k} must be positive, not {vals[k]}")
        if vals["decode_steps"] < 0:
            raise KVError(f"{where}: meta.decode_steps must be >= 0, not {vals['decode_steps']}")
        if vals["n_q_heads"] % vals["n_kv_heads"]:
            raise KVError(f"{where}: meta.n_q_heads ({vals['n_q_heads']}) must be a multiple of "
                          f"meta.n_kv_heads ({vals['n_kv_heads']}) (GQA groups of equal size)")
        extra = {k: v for k, v in d.items()
                 if k not in _META_INT_KEYS and k not in ("schema", "model")}
        return cls(model=str(d.get("model", "unknown")), extra=extra, **vals)


@dataclass
class KVCache:
    """One KV cache. ``k``, ``v``, ``q`` are lists over layers (see the module docstring).
    ``qp`` (optional, tensors ``qp_{l}`` ``[P', n_q_heads, head_dim]``) holds post-RoPE queries
    of a sample of prefill positions: calibration data the compiler may learn from (a live
    system has them after prefill); decode queries are never used for that."""

    meta: KVMeta
    k: list[np.ndarray]
    v: list[np.ndarray]
    q: list[np.ndarray]
    qp: list[np.ndarray] | None = None

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        for l in range(self.meta.n_layers):
            yield f"k_{l}", self.k[l]
            yield f"v_{l}", self.v[l]
            yield f"q_{l}", self.q[l]
            if self.qp is not None:
                yield f"qp_{l}", self.qp[l]

    @property
    def nbytes_fp16(self) -> int:
        """Size of K and V in FP16, the bytes the PIM stores (queries excluded)."""
        m = self.meta
        return 2 * m.n_layers * m.context_len * m.n_kv_heads * m.head_dim * 2

    def validate(self, cfg: Config | None = None) -> KVCache:
        """Check shapes, dtypes and values; with ``cfg`` also that the preset can hold the cache.
        Returns ``self``; raises :class:`KVError`."""
        m = self.meta
        T, S = m.context_len, m.decode_steps
        for name, lst in (("k", self.k), ("v", self.v), ("q", self.q)):
            if len(lst) != m.n_layers:
                raise KVError(f"{name}_*: {len(lst)} layers present, meta.n_layers is "
                              f"{m.n_layers}; store {name}_0 .. {name}_{m.n_layers - 1}")
        for l in range(m.n_layers):
            for name, arr, shape in ((f"k_{l}", self.k[l], (T, m.n_kv_heads, m.head_dim)),
                                     (f"v_{l}", self.v[l], (T, m.n_kv_heads, m.head_dim)),
                                     (f"q_{l}", self.q[l], (S, m.n_q_heads, m.head_dim))):
                _check_tensor(name, arr, shape, m)
            if self.k[l].shape[0] != self.v[l].shape[0]:  # pragma: no cover - shape check first
                raise KVError(f"k_{l}/v_{l}: lengths differ")
        if self.qp is not None:
            if len(self.qp) != m.n_layers:
                raise KVError(f"qp_*: {len(self.qp)} layers present, meta.n_layers is "
                              f"{m.n_layers}; store qp_0 .. qp_{m.n_layers - 1} or none")
            n_qp = self.qp[0].shape[0] if getattr(self.qp[0], "ndim", 0) == 3 else -1
            for l in range(m.n_layers):
                _check_tensor(f"qp_{l}", self.qp[l], (n_qp, m.n_q_heads, m.head_dim), m)
        if cfg is not None:
            check_capacity(m, cfg)
        return self

    def one_head(self, layer: int, kv_head: int) -> KVCache:
        """The cache reduced to one layer's one KV head and the query heads of its group (a
        1-layer, 1-KV-head cache; the arrays are views)."""
        m = self.meta
        if not 0 <= layer < m.n_layers or not 0 <= kv_head < m.n_kv_heads:
            raise KVError(f"layer {layer} / KV head {kv_head} out of range: the cache has "
                          f"{m.n_layers} layers and {m.n_kv_heads} KV heads")
        gs = m.group_size
        return replace(self, meta=replace(m, n_layers=1, n_kv_heads=1, n_q_heads=gs),
                       k=[self.k[layer][:, kv_head:kv_head + 1]],
                       v=[self.v[layer][:, kv_head:kv_head + 1]],
                       q=[self.q[layer][:, kv_head * gs:(kv_head + 1) * gs]],
                       qp=None if self.qp is None else
                       [self.qp[layer][:, kv_head * gs:(kv_head + 1) * gs]])

    def to_fp16(self) -> KVCache:
        """The cache rounded to FP16 (round to nearest even, as ``astype`` does)."""
        def cv(a: np.ndarray) -> np.ndarray:
            return a if a.dtype == np.float16 else a.astype(np.float16)
        return replace(self, k=[cv(a) for a in self.k], v=[cv(a) for a in self.v],
                       q=[cv(a) for a in self.q],
                       qp=None if self.qp is None else [cv(a) for a in self.qp])

    def content_hash(self) -> str:
        """SHA-256 over the FP16 image of every K, V and q tensor and the meta (the compiler's
        input hash; the prefill queries ``qp`` are calibration data, see :meth:`qp_hash`)."""
        h = hashlib.sha256()
        h.update(json.dumps(self.meta.to_json(), sort_keys=True).encode())
        for name, a in self.tensors():
            if name.startswith("qp_"):
                continue
            a16 = a if a.dtype == np.float16 else a.astype(np.float16)
            h.update(name.encode())
            h.update(np.ascontiguousarray(a16).tobytes())
        return h.hexdigest()


def qp_hash(cache: KVCache) -> str | None:
    """SHA-256 of the FP16 prefill queries (``None`` without them)."""
    if cache.qp is None:
        return None
    h = hashlib.sha256()
    for l, a in enumerate(cache.qp):
        h.update(f"qp_{l}".encode())
        h.update(np.ascontiguousarray(a.astype(np.float16, copy=False)).tobytes())
    return h.hexdigest()


def _check_tensor(name: str, arr: Any, shape: tuple[int, ...], m: KVMeta) -> None:
    if not isinstance(arr, np.ndarray):
        raise KVError(f"{name}: expected a NumPy array, got {type(arr).__name__}")
    if arr.ndim != 3:
        raise KVError(f"{name}: rank {arr.ndim} (shape {tuple(arr.shape)}), expected rank 3 "
                      f"{_shape_doc(name)}; reshape it to {shape}")
    if arr.dtype not in _ALLOWED_DTYPES:
        raise KVError(f"{name}: dtype {arr.dtype} is not allowed; store float16 or float32 "
                      f"(e.g. x.astype(np.float32))")
    if tuple(arr.shape) != shape:
        what = []
        kind = name[0]
        if kind in "kv" and arr.shape[0] != shape[0]:
            other = "v" if kind == "k" else "k"
            what.append(f"length {arr.shape[0]} but prefill_len + decode_steps = {shape[0]} "
                        f"({m.prefill_len} + {m.decode_steps}); K and V must hold every position "
                        f"(check {other}_{name[2:]} too)")
        if name.startswith("qp_") and arr.shape[0] != shape[0]:
            what.append(f"{arr.shape[0]} prefill queries but qp_0 has {shape[0]}")
        elif kind == "q" and arr.shape[0] != shape[0]:
            what.append(f"{arr.shape[0]} decode steps but meta.decode_steps = {shape[0]}")
        if arr.shape[1] != shape[1]:
            heads = "n_q_heads" if kind == "q" else "n_kv_heads"
            what.append(f"{arr.shape[1]} heads but meta.{heads} = {shape[1]}")
        if arr.shape[2] != shape[2]:
            what.append(f"head size {arr.shape[2]} but meta.head_dim = {shape[2]}")
        raise KVError(f"{name}: shape {tuple(arr.shape)}, expected {shape} {_shape_doc(name)}: "
                      + "; ".join(what))
    a = arr.astype(np.float32, copy=False)
    finite = np.isfinite(a)
    if not finite.all():
        bad = np.argwhere(~finite)
        first = tuple(int(x) for x in bad[0])
        raise KVError(f"{name}: {len(bad)} NaN/Inf value(s), first at index {first} "
                      f"({a[first]}); the source model overflowed or the export is broken: "
                      f"recompute the tensor in float32")
    big = np.abs(a) > FP16_MAX
    if big.any():
        idx = tuple(int(x) for x in np.argwhere(big)[0])
        raise KVError(f"{name}: {int(big.sum())} value(s) beyond the FP16 range (|x| > "
                      f"{FP16_MAX:g}), max |x| = {float(np.abs(a).max()):.6g} at index {idx}; "
                      f"the PIM stores FP16: rescale the tensor (keys/queries by a common factor) "
                      f"before export")


def _shape_doc(name: str) -> str:
    if name.startswith("qp_"):
        return "[prefill queries, n_q_heads, head_dim]"
    return "[S, n_q_heads, head_dim]" if name[0] == "q" else "[T, n_kv_heads, head_dim]"


def check_capacity(m: KVMeta, cfg: Config) -> None:
    """Raise :class:`KVError` if ``cfg`` cannot hold the head size or the context of ``m``."""
    try:
        cfg.banks_per_token(m.head_dim)
    except ConfigError as e:
        raise KVError(f"k_*/v_*: head_dim {m.head_dim} does not fit preset {cfg.name!r}: {e}; "
                      f"pick a preset whose banks_per_group is a multiple of head_dim / "
                      f"{2 * cfg.org.elements_per_column}") from None
    need = rows_needed_upper_bound(cfg, m.head_dim, m.context_len, m.n_layers, m.n_kv_heads)
    if need > cfg.org.rows_per_bank:
        raise KVError(
            f"k_*/v_*: the context ({m.context_len} tokens x {m.n_layers} layers x "
            f"{m.n_kv_heads} KV heads) needs up to {need} rows per bank on the busiest channel, "
            f"preset {cfg.name!r} has {cfg.org.rows_per_bank}; shorten the context, drop layers, "
            f"or use a preset with more channels or rows")


# ---- reading -------------------------------------------------------------------------------------
def _format_of(path: Path) -> str:
    if path.is_dir():
        return "dir"
    if path.suffix == ".npz":
        return "npz"
    if path.suffix == ".safetensors":
        return "safetensors"
    raise KVError(f"{path}: unknown KV container; use a .npz file, a .safetensors file or a "
                  f"directory of .npy files with meta.json")


def load_kv(path: str | os.PathLike[str], cfg: Config | None = None) -> KVCache:
    """Read and validate a ``starc-kv/1`` cache (see the module docstring for the containers)."""
    p = Path(path)
    if not p.exists():
        raise KVError(f"{p}: no such file or directory; give a .npz, .safetensors or .npy "
                      f"directory in schema {SCHEMA} (or run `starc compile --synthetic`)")
    fmt = _format_of(p)
    arrays: dict[str, np.ndarray]
    if fmt == "npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:
            raise KVError(f"{p}: not a readable .npz file ({e}); re-export it with np.savez") \
                from None
        if "meta" not in arrays:
            raise KVError(f"{p}: no 'meta' entry; store the JSON meta as a string array "
                          f"named 'meta'")
        meta_txt = str(arrays.pop("meta"))
    elif fmt == "dir":
        mp = p / "meta.json"
        if not mp.is_file():
            raise KVError(f"{p}: no meta.json; a .npy directory needs meta.json with the "
                          f"{SCHEMA} meta")
        meta_txt = mp.read_text()
        arrays = {}
        for f in sorted(p.glob("*.npy")):
            try:
                arrays[f.stem] = np.load(f, allow_pickle=False)
            except Exception as e:
                raise KVError(f"{f}: not a readable .npy file ({e}); re-save it with np.save") \
                    from None
    else:
        try:
            from safetensors import safe_open
            with safe_open(str(p), framework="np") as fh:
                md = fh.metadata() or {}
                arrays = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        except Exception as e:
            raise KVError(f"{p}: not a readable .safetensors file ({e})") from None
        if "starc_meta" not in md:
            raise KVError(f"{p}: metadata has no 'starc_meta' key; save with "
                          f"metadata={{'starc_meta': json.dumps(meta)}}")
        meta_txt = md["starc_meta"]
    try:
        meta_json = json.loads(meta_txt)
    except json.JSONDecodeError as e:
        raise KVError(f"{p}: meta is not valid JSON ({e})") from None
    meta = KVMeta.from_json(meta_json, str(p))
    ks, vs, qs, qps = [], [], [], []
    for l in range(meta.n_layers):
        for name, lst in ((f"k_{l}", ks), (f"v_{l}", vs), (f"q_{l}", qs)):
            if name not in arrays:
                raise KVError(f"{name}: missing from {p} (meta.n_layers = {meta.n_layers}); "
                              f"store it or lower n_layers")
            lst.append(arrays[name])
    qps = None
    if "qp_0" in arrays:
        qps = []
        for l in range(meta.n_layers):
            if f"qp_{l}" not in arrays:
                raise KVError(f"qp_{l}: missing from {p} while qp_0 is present; store the "
                              f"prefill queries of every layer or of none")
            qps.append(arrays[f"qp_{l}"])
    cache = KVCache(meta=meta, k=ks, v=vs, q=qs, qp=qps)
    return cache.validate(cfg)


# ---- writing -------------------------------------------------------------------------------------
def kv_output(path: str | os.PathLike[str], fmt: str | None = None, *, force: bool = False,
              command: str = "save_kv", inputs: Any = ()) -> Any:
    """The checked output of a KV cache at ``path`` (:mod:`starc.outputs`): a folder for
    ``dir``, a file for ``npz`` / ``safetensors``. Raises before anything is written."""
    from starc import outputs
    p = Path(path)
    fmt = fmt or _suffix_format(p)
    if fmt not in ("npz", "dir", "safetensors"):
        raise KVError(f"unknown KV format {fmt!r}; use npz, dir or safetensors")
    cls = outputs.OutputDir if fmt == "dir" else outputs.OutputFile
    return cls(p, command=command, inputs=inputs, force=force)


def _suffix_format(p: Path) -> str:
    return {".npz": "npz", ".safetensors": "safetensors"}.get(p.suffix, "dir")


def write_arrays(path: str | os.PathLike[str], arrays: dict[str, np.ndarray], meta_txt: str, *,
                 fmt: str | None = None, force: bool = False, command: str = "save_kv",
                 inputs: Any = (), out: Any = None) -> Path:
    """Write named arrays plus the JSON ``meta_txt`` atomically in a KV container (no schema
    checks; :func:`save_kv` validates first). ``out``: an already checked :func:`kv_output`."""
    p = Path(path)
    fmt = fmt or _suffix_format(p)
    out = out or kv_output(p, fmt, force=force, command=command, inputs=inputs)
    arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    with out.build() as tmp:
        if fmt == "dir":
            for name, a in arrays.items():
                np.save(tmp / f"{name}.npy", a, allow_pickle=False)
            (tmp / "meta.json").write_text(meta_txt + "\n", encoding="utf-8")
        elif fmt == "npz":
            with open(tmp, "wb") as fh:
                np.savez(fh, meta=np.array(meta_txt), **arrays)
        else:
            from safetensors.numpy import save_file
            save_file(arrays, str(tmp), metadata={"starc_meta": meta_txt})
    return p


def save_kv(cache: KVCache, path: str | os.PathLike[str], *, fmt: str | None = None,
            force: bool = False, command: str = "save_kv") -> Path:
    """Write ``cache`` atomically. ``fmt`` is ``npz``, ``dir`` or ``safetensors``; by default it
    follows the suffix (.npz, .safetensors, anything else: a directory). The output rules of
    :mod:`starc.outputs` apply: an existing file needs ``force``; a folder is replaced only if it
    is starc's own output (docs/reliability.md)."""
    cache.validate()
    meta_txt = json.dumps(cache.meta.to_json(), sort_keys=True)
    return write_arrays(path, dict(cache.tensors()), meta_txt, fmt=fmt, force=force,
                        command=command)


# ---- synthetic caches ----------------------------------------------------------------------------
def _rope(x: np.ndarray, pos: np.ndarray, base: float) -> np.ndarray:
    """Rotate interleaved pairs (2i, 2i+1) of the last axis by pos * base**(-2i/d)."""
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[:, None].astype(np.float64) * inv[None, :]
    shape = (len(pos),) + (1,) * (x.ndim - 2) + (d // 2,)
    cos = np.cos(ang).reshape(shape).astype(np.float32)
    sin = np.sin(ang).reshape(shape).astype(np.float32)
    xe, xo = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = xe * cos - xo * sin
    out[..., 1::2] = xe * sin + xo * cos
    return out


def _queries_vectorised(r: np.random.Generator, qpos: np.ndarray, g: int, topic_of: np.ndarray,
                        dom: np.ndarray, topics: np.ndarray, posvec: np.ndarray) -> np.ndarray:
    """The decode queries of :func:`synthetic_kv` (before RoPE) for every position of ``qpos``
    at once: per step 1-2 topics shared by the GQA group and 0-1 own topics per query head, each
    the topic of a uniformly drawn position seen so far (the per-step draws' distribution)."""
    S, d = len(qpos), dom.shape[1]
    seen = qpos.astype(np.int64) + 1                                   # positions 0 .. p
    n_shared = r.integers(1, 3, size=S)                                # 1 or 2
    shared = topic_of[(r.random((S, 2)) * seen[:, None]).astype(np.int64)]   # [S, 2]
    n_own = r.integers(0, 2, size=(S, g))                              # 0 or 1
    own = topic_of[(r.random((S, g)) * seen[:, None]).astype(np.int64)]      # [S, g]
    sh_mask = (np.arange(2)[None, :] < n_shared[:, None]).astype(np.float32)
    sh_sum = np.einsum("sk,skd->sd", sh_mask, topics[shared])          # [S, d]
    tsum = sh_sum[:, None, :] + n_own[..., None].astype(np.float32) * topics[own]
    count = (n_shared[:, None] + n_own).astype(np.float32)             # [S, g]
    qv = 0.6 * dom[0] + tsum * (2.2 / np.sqrt(count))[..., None]
    qv += 0.35 * r.standard_normal((S, g, d)).astype(np.float32)
    qv += 0.25 * posvec
    return 4.0 * qv


def synthetic_kv(*, n_layers: int = 4, n_q_heads: int = 9, n_kv_heads: int = 3,
                 head_dim: int = 64, prefill_len: int = 4096, decode_steps: int = 8,
                 seed: int = 0, rope_base: float = 100000.0, n_topics: int = 48,
                 mean_segment: float = 24.0, dtype: Any = np.float16,
                 prefill_queries: int = 0, query_draws: str = "sequential") -> KVCache:
    """A seeded synthetic cache with the structure real post-RoPE caches show.

    Per layer and KV head: a few dominant directions shared by all keys, a handful of outlier
    channels with large constant offsets, topic segments (runs of ~``mean_segment`` tokens whose
    keys share one of ``n_topics`` recurring directions: local clusters that also recur far apart),
    an attention sink at position 0, and RoPE applied to every key and query (interleaved pairs,
    ``rope_base``) with semantic content in the slowly rotating low-frequency pairs and a small
    position-only component in the fast pairs (a recency bias). Queries look for 1-3 topics each,
    shared in part by the query heads of a GQA group, so attention is peaked but not one-hot.
    The same arguments give the same cache on every machine (NumPy's PCG64 stream).
    ``prefill_queries > 0`` adds that many calibration queries (``qp``) per layer, drawn the same
    way at random prefill positions from a separate stream (K, V and q do not change).
    ``query_draws="vectorised"`` draws the decode queries from the same distribution in one
    vectorised pass on a separate stream (K and V do not change; q does): for long decodes (e.g.
    24000 steps) it is about ten times faster than the default per-step draws.
    """
    for name, v in (("n_layers", n_layers), ("n_q_heads", n_q_heads), ("n_kv_heads", n_kv_heads),
                    ("head_dim", head_dim), ("prefill_len", prefill_len)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise KVError(f"synthetic: {name} must be a positive integer, not {v!r}")
    if decode_steps < 0:
        raise KVError(f"synthetic: decode_steps must be >= 0, not {decode_steps}")
    if not 0 <= prefill_queries <= prefill_len:
        raise KVError(f"synthetic: prefill_queries must be in 0 .. prefill_len ({prefill_len}), "
                      f"not {prefill_queries}")
    if query_draws not in ("sequential", "vectorised"):
        raise KVError(f"synthetic: query_draws must be 'sequential' or 'vectorised', not "
                      f"{query_draws!r}")
    if n_q_heads % n_kv_heads:
        raise KVError(f"synthetic: n_q_heads ({n_q_heads}) must be a multiple of n_kv_heads "
                      f"({n_kv_heads})")
    if head_dim % 2:
        raise KVError(f"synthetic: head_dim must be even (RoPE pairs), not {head_dim}")
    T, S, d, H, g = prefill_len + decode_steps, decode_steps, head_dim, n_kv_heads, \
        n_q_heads // n_kv_heads
    half = d // 2
    n_low = max(1, half // 2)            # slowly rotating pairs (largest i): semantic content
    slow_pairs = np.arange(half - n_low, half)
    low_dims = np.sort(np.concatenate([2 * slow_pairs, 2 * slow_pairs + 1]))
    high_dims = np.setdiff1d(np.arange(d), low_dims)
    pos = np.arange(T)
    qpos = prefill_len + np.arange(S)
    ks, vs, qs, qps = [], [], [], []
    for l in range(n_layers):
        rng = np.random.default_rng([seed, l])
        # segments: topic runs of geometric length; topics follow a Zipf-like popularity
        n_seg = int(T / mean_segment * 2) + 8
        lens = rng.geometric(1.0 / mean_segment, size=n_seg)
        starts = np.concatenate([[0], np.cumsum(lens)])
        seg_of = np.searchsorted(starts, pos, side="right") - 1
        pop = 1.0 / np.arange(1, n_topics + 1) ** 0.8
        seg_topic = rng.choice(n_topics, size=n_seg, p=pop / pop.sum())
        topic_of = seg_topic[seg_of]                                     # [T]
        k = np.zeros((T, H, d), np.float32)
        v = np.zeros((T, H, d), np.float32)
        q = np.zeros((S, H * g, d), np.float32)
        qp = np.zeros((prefill_queries, H * g, d), np.float32)
        for h in range(H):
            hr = np.random.default_rng([seed, l, h])
            def unit(n: int, dims: np.ndarray, _hr: np.random.Generator = hr) -> np.ndarray:
                x = np.zeros((n, d), np.float32)
                x[:, dims] = _hr.standard_normal((n, len(dims)))
                return x / np.linalg.norm(x, axis=1, keepdims=True)
            dom = unit(3, low_dims)                                      # dominant directions
            topics = unit(n_topics, low_dims)
            posvec = unit(1, high_dims)[0]                               # recency component
            outl = hr.choice(low_dims, size=3, replace=False)            # outlier channels
            w_dom = hr.normal(0, 1.0, (T, 3)).astype(np.float32) + np.array([6.0, 2.0, 1.0])
            pre = w_dom @ dom
            pre += 5.0 * topics[topic_of]
            pre += 1.2 * hr.standard_normal((T, d)).astype(np.float32)
            pre += 2.0 * posvec
            pre[:, outl] += np.array([9.0, -7.0, 5.0], np.float32)
            sink = 30.0 * dom[0] + 4.0 * unit(1, low_dims)[0]
            pre[0] = sink
            k[:, h] = _rope(pre, pos, rope_base)
            tv = hr.standard_normal((n_topics, d)).astype(np.float32)
            v[:, h] = 0.8 * tv[topic_of] + 0.6 * hr.standard_normal((T, d)).astype(np.float32)
            v[0, h] *= 0.1                                                # sinks carry little
            # queries: 1-3 topics seen in the context, shared in part across the GQA group
            def query(p: int, r: np.random.Generator, topic_of: np.ndarray = topic_of,
                      dom: np.ndarray = dom, topics: np.ndarray = topics,
                      posvec: np.ndarray = posvec) -> np.ndarray:
                seen = topic_of[: p + 1]
                shared = r.choice(seen, size=r.integers(1, 3))
                out = np.empty((g, d), np.float32)
                for j in range(g):
                    own = r.choice(seen, size=r.integers(0, 2))
                    tsel = np.concatenate([shared, own])
                    qv = 0.6 * dom[0] + topics[tsel].sum(0) * (2.2 / np.sqrt(len(tsel)))
                    qv = qv + 0.35 * r.standard_normal(d).astype(np.float32)
                    qv = qv + 0.25 * posvec
                    out[j] = 4.0 * qv
                return out
            if query_draws == "vectorised":
                q[:, h * g:(h + 1) * g] = _queries_vectorised(
                    np.random.default_rng([seed, l, h, 11]), qpos, g, topic_of, dom, topics,
                    posvec)
            else:
                for s in range(S):
                    q[s, h * g:(h + 1) * g] = query(int(qpos[s]), hr)
            if prefill_queries:
                pr = np.random.default_rng([seed, l, h, 7])
                ppos = np.sort(pr.choice(prefill_len, prefill_queries, replace=False))
                for i, p0 in enumerate(ppos):
                    qp[i, h * g:(h + 1) * g] = _rope(query(int(p0), pr), np.full(g, p0),
                                                     rope_base)
        if S:
            q = _rope(q, qpos, rope_base)
        ks.append(k.astype(dtype))
        vs.append(v.astype(dtype))
        qs.append(q.astype(dtype))
        qps.append(qp.astype(dtype))
    meta = KVMeta(model="synthetic", n_layers=n_layers, n_q_heads=n_q_heads, n_kv_heads=n_kv_heads,
                  head_dim=head_dim, prefill_len=prefill_len, decode_steps=decode_steps,
                  extra={"generator": "starc.kv.synthetic_kv", "seed": seed,
                         "rope_base": rope_base, "n_topics": n_topics,
                         "mean_segment": mean_segment})
    return KVCache(meta=meta, k=ks, v=vs, q=qs, qp=qps if prefill_queries else None).validate()


def describe(cache: KVCache) -> dict[str, Any]:
    """Short summary for tables and logs."""
    m = cache.meta
    return {"model": m.model, "layers": m.n_layers, "q_heads": m.n_q_heads,
            "kv_heads": m.n_kv_heads, "head_dim": m.head_dim, "prefill": m.prefill_len,
            "decode_steps": m.decode_steps, "kv_MiB": cache.nbytes_fp16 / 2**20,
            "max_abs_k": float(max(np.abs(a.astype(np.float32)).max() for a in cache.k)),
            "log2_T": math.log2(m.context_len)}
