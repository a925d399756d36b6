"""The compiled artifact folder: a versioned, hashed manifest plus ``.npy`` arrays.

==================  =========================  ==================================================
file                dtype / shape              content
==================  =========================  ==================================================
manifest.json       JSON                       schema ``starc-compiled/1``, preset name + config
                                               hash, input hash + KV meta, mode + options,
                                               geometry, one entry per (layer, KV head), stats,
                                               SHA-256 of every array file, ``digest`` of itself
image_addr.npy      int32 [n, 4]               (channel, group, bank, row) of each stored bank row
image_data.npy      uint16 [n, columns, lanes] its FP16 bits (empty slots +0); the final state
heads.npy           HEAD_DTYPE [layers x kv]   region and table offsets of each (layer, KV head)
blocks.npy          BLOCK_DTYPE [blocks]       group and relative key row of each stream block
slots.npy           int32 [blocks x tpgr]      original position of each stream slot, -1 = empty
segments.npy        SEGMENT_DTYPE [segs]       clustering windows: first/end position, ready-at
buffer.npy          BLOCK_DTYPE [buf blocks]   recent-buffer blocks
clusters.npy        CLUSTER_DTYPE [C]          cluster -> layer, head, channel, group, set, row
                                               (of its first slot), stream start, size, segment,
                                               ready-at context length
centroids.npy       float32 [C, head_dim]      centroid (mean of unit keys), also FP16 in image
tokens.npy          TOKEN_DTYPE [L x H x T]    token map: stored slot -> original position, at
                                               context T (cluster -1: recent buffer)
queries.npy         float16 [L, S, Hq, d]      decode-step queries (for ``starc eval``)
==================  =========================  ==================================================

:func:`load_artifact` checks the schema, the manifest's keys, every file's hash and the manifest
digest, and, given a preset, that it is the one the artifact was compiled for; then meaning: the
tables' index ranges, and that the token map, cluster table and memory image (centroid rows
included) re-derived from the slot table, segments, clusters and centroids equal the stored ones
bit for bit, and that the image decodes back to the compiled input. Anything else raises
:class:`ArtifactError` saying what is wrong and what to do (docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from starc.address import SLICE, Geometry
from starc.compiler.compiled import ROW_SCORES, CompiledKV, HeadMap, attach_row_scores
from starc.config import Config
from starc.kv import KVCache, KVMeta

__all__ = ["SCHEMA", "ArtifactError", "config_hash", "save_artifact", "load_artifact",
           "decode_image"]

SCHEMA = "starc-compiled/1"

HEAD_DTYPE = np.dtype([
    ("layer", np.int32), ("head", np.int32), ("channel", np.int32), ("positional", np.int8),
    ("row_base", np.int32), ("n_krows", np.int32), ("n_crows", np.int32),
    ("block_off", np.int64), ("n_blocks", np.int64), ("cl_off", np.int64),
    ("n_clusters", np.int64), ("seg_off", np.int64), ("n_segs", np.int64),
    ("buf_off", np.int64), ("n_buf", np.int64), ("buffer_cap", np.int32),
    ("sink_end", np.int32)])
BLOCK_DTYPE = np.dtype([("group", np.int16), ("row", np.int32)])
SEGMENT_DTYPE = np.dtype([("start", np.int64), ("end", np.int64), ("ready", np.int64)])
CLUSTER_DTYPE = np.dtype([
    ("layer", np.int32), ("head", np.int32), ("channel", np.int32), ("group", np.int16),
    ("set", np.int8), ("row", np.int32), ("start", np.int64), ("size", np.int32),
    ("segment", np.int32), ("ready", np.int64)])
TOKEN_DTYPE = np.dtype([
    ("layer", np.int32), ("head", np.int32), ("position", np.int32), ("channel", np.int32),
    ("group", np.int16), ("set", np.int8), ("slot", np.int8), ("row", np.int32),
    ("cluster", np.int32)])

_FILES = ("image_addr", "image_data", "heads", "blocks", "slots", "segments", "buffer",
          "clusters", "centroids", "tokens", "queries")


class ArtifactError(ValueError):
    """A compiled artifact that cannot be used; the message says why and what to do."""


def config_hash(cfg: Config) -> str:
    d = cfg.as_dict()
    d.pop("name", None)
    d.pop("description", None)
    d.pop("source", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest_digest(man: dict[str, Any]) -> str:
    body = {k: v for k, v in man.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and x != x:
        return None
    return x


def _tables(ck: CompiledKV) -> dict[str, np.ndarray]:
    geo = ck.geometry
    maps = ck.iter_heads()
    heads = np.zeros(len(maps), HEAD_DTYPE)
    blocks, slots, segs, bufs, clusters, cents, tokens = [], [], [], [], [], [], []
    off = {"block": 0, "cl": 0, "seg": 0, "buf": 0}
    T = ck.cache.meta.context_len
    for i, hm in enumerate(maps):
        heads[i] = (hm.layer, hm.head, hm.channel, int(hm.positional), hm.row_base, hm.n_krows,
                    hm.n_crows, off["block"], hm.n_blocks, off["cl"], hm.n_clusters, off["seg"],
                    len(hm.seg_start), off["buf"], len(hm.buf_group), hm.buffer_cap, hm.sink_end)
        b = np.zeros(hm.n_blocks, BLOCK_DTYPE)
        b["group"], b["row"] = hm.block_group, hm.block_row
        blocks.append(b)
        slots.append(hm.slot_pos.astype(np.int32))
        s = np.zeros(len(hm.seg_start), SEGMENT_DTYPE)
        s["start"], s["end"], s["ready"] = hm.seg_start, hm.seg_end, hm.seg_ready
        segs.append(s)
        bb = np.zeros(len(hm.buf_group), BLOCK_DTYPE)
        bb["group"], bb["row"] = hm.buf_group, hm.buf_row
        bufs.append(bb)
        c = np.zeros(hm.n_clusters, CLUSTER_DTYPE)
        c["layer"], c["head"], c["channel"] = hm.layer, hm.head, hm.channel
        first_block = hm.cl_start // hm.tpgr
        c["group"] = hm.block_group[np.minimum(first_block, max(hm.n_blocks - 1, 0))] \
            if hm.n_blocks else 0
        c["row"] = (hm.block_row[np.minimum(first_block, max(hm.n_blocks - 1, 0))]
                    + hm.row_base) if hm.n_blocks else 0
        c["set"] = (hm.cl_start % hm.tpgr) // SLICE
        c["start"], c["size"], c["segment"] = hm.cl_start, hm.cl_size, hm.cl_seg
        c["ready"] = hm.seg_ready[hm.cl_seg] if hm.n_clusters else 0
        clusters.append(c)
        cents.append(hm.centroid.astype(np.float32))
        # token map at context T
        pos = np.arange(T)
        loc = hm.locate(pos, T)
        t = np.zeros(T, TOKEN_DTYPE)
        t["layer"], t["head"], t["position"], t["channel"] = hm.layer, hm.head, pos, hm.channel
        t["group"], t["set"], t["slot"] = loc.group, loc.set, loc.slot
        t["row"] = loc.row + hm.row_base
        cl_of_slot = np.full(len(hm.slot_pos), -1, np.int64)
        if hm.n_clusters:
            from starc.compiler.compile import _ranges
            cl_of_slot[_ranges(hm.cl_start, hm.cl_size)] = off["cl"] + np.repeat(
                np.arange(hm.n_clusters), hm.cl_size)
        stream = loc.block >= 0
        t["cluster"] = -1
        t["cluster"][stream] = cl_of_slot[hm.pos_slot[pos[stream]]]
        tokens.append(t)
        off["block"] += hm.n_blocks
        off["cl"] += hm.n_clusters
        off["seg"] += len(hm.seg_start)
        off["buf"] += len(hm.buf_group)
    addr, data = ck.image()
    q = np.stack([ql.astype(np.float16) for ql in ck.cache.q]) if ck.cache.q else \
        np.zeros((0,), np.float16)
    return {
        "image_addr": addr.astype(np.int32), "image_data": data,
        "heads": heads, "blocks": np.concatenate(blocks), "slots": np.concatenate(slots),
        "segments": np.concatenate(segs), "buffer": np.concatenate(bufs),
        "clusters": np.concatenate(clusters),
        "centroids": np.concatenate(cents) if cents else np.zeros((0, geo.d), np.float32),
        "tokens": np.concatenate(tokens), "queries": q,
    }


def save_artifact(ck: CompiledKV, path: str | os.PathLike[str], *, force: bool = False,
                  inputs: Any = (), out: Any = None) -> Path:
    """Write ``ck`` as an artifact folder at ``path`` under the output rules of
    :mod:`starc.outputs` (built in a temporary sibling, swapped in when complete; an existing
    folder is replaced only if starc wrote it). ``out``: an already checked
    :class:`starc.outputs.OutputDir`."""
    from starc import outputs
    dest = Path(path)
    out = out or outputs.OutputDir(dest, command="compile", inputs=inputs, force=force)
    tables = _tables(ck)
    with out.build() as tmp:
        files = {}
        for name in _FILES:
            arr = tables[name]
            f = tmp / f"{name}.npy"
            np.save(f, arr, allow_pickle=False)
            files[name] = {"file": f.name, "sha256": _sha256_file(f), "shape": list(arr.shape),
                           "dtype": str(arr.dtype) if arr.dtype.names is None else
                           "structured"}
        geo = ck.geometry
        from importlib.metadata import PackageNotFoundError, version
        try:
            ver = version("starc-pim")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            ver = "unknown"
        man: dict[str, Any] = {
            "schema": SCHEMA,
            "created_by": f"starc-pim {ver}",
            "preset": ck.cfg.name,
            "config_hash": config_hash(ck.cfg),
            "input": {"hash": ck.input_hash, "meta": ck.cache.meta.to_json()},
            "mode": ck.mode,
            "options": _jsonable({k: v for k, v in ck.options.items() if k != "threads"}),
            "geometry": {"head_dim": geo.d, "banks_per_token": geo.bpt, "sets": geo.sets,
                         "tokens_per_group_row": geo.tpgr, "groups_per_channel": geo.G,
                         "columns": geo.cols, "lanes": geo.lanes},
            "heads": [_jsonable({"layer": hm.layer, "head": hm.head, "channel": hm.channel,
                                 "positional": hm.positional,
                                 "rows": [hm.row_base,
                                          hm.row_base + 2 * hm.n_krows + hm.n_crows],
                                 "key_rows": [hm.row_base, hm.row_base + hm.n_krows],
                                 "value_rows": [hm.row_base + hm.n_krows,
                                                hm.row_base + 2 * hm.n_krows],
                                 "blocks": hm.n_blocks, "clusters": hm.n_clusters,
                                 "buffer_cap": hm.buffer_cap, "stats": hm.stats})
                      for hm in ck.iter_heads()],
            "stats": _jsonable(ck.stats),
            "files": files,
        }
        man["digest"] = _manifest_digest(man)
        (tmp / "manifest.json").write_text(outputs.strict_json(man, indent=1, sort_keys=True)
                                           + "\n")
    return dest


def decode_image(addr: np.ndarray, data: np.ndarray, tokens: np.ndarray, geo: Geometry,
                 value_offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FP16 bits of the key and value of every token of a token map, read back from a sparse
    image. ``value_offset[i]`` is the value-row offset (``n_krows``) of token i's head."""
    a = addr.astype(np.int64)
    key = ((a[:, 0] * 64 + a[:, 1]) * 16 + a[:, 2]) * (1 << 24) + a[:, 3]
    order = np.argsort(key)
    skey = key[order]
    n = len(tokens)
    out = []
    for voff in (np.zeros(n, np.int64), value_offset.astype(np.int64)):
        vals = np.empty((n, geo.bpt, 2, geo.lanes), np.uint16)
        for h in range(geo.bpt):
            bank = tokens["set"].astype(np.int64) * geo.bpt + h
            k = ((tokens["channel"].astype(np.int64) * 64 + tokens["group"]) * 16 + bank) \
                * (1 << 24) + tokens["row"] + voff
            i = np.searchsorted(skey, k)
            i = np.minimum(i, len(skey) - 1)
            if (skey[i] != k).any():
                raise ArtifactError("the image lacks a bank row that the token map refers to; "
                                    "the artifact is inconsistent: recompile it")
            rows = data[order[i]]                                     # [n, columns, lanes]
            s = tokens["slot"].astype(np.int64)
            vals[:, h, 0] = rows[np.arange(n), 2 * s]
            vals[:, h, 1] = rows[np.arange(n), 2 * s + 1]
        out.append(vals.reshape(n, geo.d))
    return out[0], out[1]


#: Required manifest keys and their JSON types (a manifest is checked against this before use).
_MANIFEST_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema": str, "preset": str, "config_hash": str, "input": dict, "mode": str,
    "options": dict, "geometry": dict, "heads": list, "stats": dict, "files": dict,
    "digest": str}


def _check_manifest(man: dict[str, Any], mp: Path) -> None:
    for key, typ in _MANIFEST_KEYS.items():
        if key not in man:
            raise ArtifactError(f"{mp}: the manifest lacks {key!r}; the artifact is incomplete "
                                f"or from another tool: recompile it")
        if not isinstance(man[key], typ):
            raise ArtifactError(f"{mp}: manifest key {key!r} has the wrong type "
                                f"({type(man[key]).__name__}); recompile the artifact")
    inp = man["input"]
    if not isinstance(inp.get("hash"), str) or not isinstance(inp.get("meta"), dict):
        raise ArtifactError(f"{mp}: the manifest's input record lacks hash/meta; recompile")
    if not isinstance(man["geometry"].get("tokens_per_group_row"), int):
        raise ArtifactError(f"{mp}: the manifest's geometry lacks tokens_per_group_row; "
                            f"recompile")
    for name in _FILES:
        info = man["files"].get(name)
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            raise ArtifactError(f"{mp}: the manifest has no hash for {name}.npy; the artifact "
                                f"is incomplete: recompile it")
    if not all(isinstance(h, dict) for h in man["heads"]):
        raise ArtifactError(f"{mp}: malformed head list in the manifest; recompile")


_ARRAY_DTYPES: dict[str, np.dtype | None] = {
    "image_addr": np.dtype(np.int32), "image_data": np.dtype(np.uint16), "heads": HEAD_DTYPE,
    "blocks": BLOCK_DTYPE, "slots": np.dtype(np.int32), "segments": SEGMENT_DTYPE,
    "buffer": BLOCK_DTYPE, "clusters": CLUSTER_DTYPE, "centroids": np.dtype(np.float32),
    "tokens": TOKEN_DTYPE, "queries": None}


def _check_tables(p: Path, a: dict[str, np.ndarray], meta: KVMeta, geo: Geometry) -> None:
    """Shapes, dtypes and index ranges of the tables, before anything is indexed with them."""
    def bad(what: str) -> ArtifactError:
        return ArtifactError(f"{p}: {what}; the artifact is inconsistent: recompile it")

    for name, dt in _ARRAY_DTYPES.items():
        if dt is not None and a[name].dtype != dt:
            raise bad(f"{name}.npy has dtype {a[name].dtype}, expected {dt}")
    L, H, T, d = meta.n_layers, meta.n_kv_heads, meta.context_len, meta.head_dim
    if a["image_addr"].ndim != 2 or a["image_addr"].shape[1] != 4:
        raise bad("image_addr.npy is not [rows, 4]")
    if a["image_data"].shape[1:] != (geo.cols, geo.lanes) or \
            len(a["image_data"]) != len(a["image_addr"]):
        raise bad("image_data.npy does not match image_addr.npy and the preset's row shape")
    if a["centroids"].ndim != 2 or a["centroids"].shape[1] != d:
        raise bad(f"centroids.npy is not [clusters, {d}]")
    if a["queries"].shape != (L, meta.decode_steps, meta.n_q_heads, d) or \
            a["queries"].dtype != np.float16:
        raise bad(f"queries.npy is not float16 [{L}, {meta.decode_steps}, {meta.n_q_heads}, {d}]")
    heads = a["heads"]
    if heads.ndim != 1 or len(heads) != L * H:
        raise bad(f"heads.npy has {len(heads)} entries, the cache has {L} x {H} (layer, KV head)")
    if len(a["tokens"]) != L * H * T:
        raise bad(f"tokens.npy has {len(a['tokens'])} entries, expected {L * H * T}")
    seen = set()
    for i, h in enumerate(heads):
        lh = (int(h["layer"]), int(h["head"]))
        if not (0 <= lh[0] < L and 0 <= lh[1] < H) or lh in seen:
            raise bad(f"head entry {i} names (layer, head) {lh}, out of range or repeated")
        seen.add(lh)
        for off, n, table, per in (("block_off", "n_blocks", "blocks", 1),
                                   ("cl_off", "n_clusters", "clusters", 1),
                                   ("seg_off", "n_segs", "segments", 1),
                                   ("buf_off", "n_buf", "buffer", 1),
                                   ("block_off", "n_blocks", "slots", geo.tpgr)):
            o, c = int(h[off]) * per, int(h[n]) * per
            if o < 0 or c < 0 or o + c > len(a[table]):
                raise bad(f"head entry {i}: {table} range [{o}, {o + c}) outside the table "
                          f"({len(a[table])})")
        if int(h["cl_off"]) + int(h["n_clusters"]) > len(a["centroids"]):
            raise bad(f"head entry {i}: centroid range outside centroids.npy")
        if not 0 <= int(h["sink_end"]) <= T or int(h["buffer_cap"]) < 0:
            raise bad(f"head entry {i}: sink_end / buffer_cap out of range")
        bo, nb = int(h["block_off"]), int(h["n_blocks"])
        sl = a["slots"][bo * geo.tpgr:(bo + nb) * geo.tpgr]
        if sl.size and (sl.min() < -1 or sl.max() >= T):
            raise bad(f"head entry {i}: slot table holds positions outside 0..{T - 1}")
        live = sl[sl >= 0]
        if np.unique(live).size != live.size:
            raise bad(f"head entry {i}: a position is stored in two slots of the slot table")
        blk = a["blocks"][bo:bo + nb]
        bf = a["buffer"][int(h["buf_off"]):int(h["buf_off"]) + int(h["n_buf"])]
        for tab in (blk, bf):
            if tab.size and (tab["group"].min() < 0 or tab["group"].max() >= geo.G
                             or tab["row"].min() < 0):
                raise bad(f"head entry {i}: a block's group or row is out of range")
        cl = a["clusters"][int(h["cl_off"]):int(h["cl_off"]) + int(h["n_clusters"])]
        if cl.size and (cl["start"].min() < 0 or cl["size"].min() < 0
                        or (cl["start"] + cl["size"]).max() > nb * geo.tpgr
                        or cl["segment"].min() < 0 or cl["segment"].max() >= int(h["n_segs"])):
            raise bad(f"head entry {i}: a cluster's slot range or segment is out of range")
        sg = a["segments"][int(h["seg_off"]):int(h["seg_off"]) + int(h["n_segs"])]
        # segments tile the clustered positions in order: [0, e1), [e1, e2), ...
        if sg.size and (sg["start"][0] != 0 or (sg["end"] <= sg["start"]).any()
                        or (sg["start"][1:] != sg["end"][:-1]).any()
                        or (sg["ready"] < sg["end"]).any() or sg["end"][-1] > T):
            raise bad(f"head entry {i}: the segments do not tile the positions in order")
        if cl.size:
            # every cluster's tokens lie in its segment
            pos = np.repeat(np.arange(cl.size), cl["size"])
            idx = np.concatenate([np.arange(st, st + z) for st, z in
                                  zip(cl["start"].tolist(), cl["size"].tolist(), strict=True)]) \
                if cl["size"].sum() else np.zeros(0, np.int64)
            p_ = sl[idx]
            seg = cl["segment"][pos]
            lo, hi = sg["start"][seg], sg["end"][seg]
            live = p_ >= 0
            if ((p_[live] < lo[live]) | (p_[live] >= hi[live])).any():
                raise bad(f"head entry {i}: a cluster holds tokens outside its segment")


def _check_meaning(p: Path, ck: CompiledKV, a: dict[str, np.ndarray]) -> None:
    """The tables agree: re-deriving the token map, the cluster table and the memory image
    (centroid rows included) from the loaded slot table, segments, clusters and centroids gives
    the stored files bit for bit."""
    try:
        derived = _tables(ck)
    except (IndexError, ValueError, AssertionError) as e:
        raise ArtifactError(f"{p}: the slot table, segments and clusters do not describe a "
                            f"valid layout ({e}); recompile the artifact") from None
    what = {"tokens": "the token map (tokens.npy) disagrees with the slot table (slots.npy, "
                      "blocks.npy, segments.npy)",
            "clusters": "the cluster table (clusters.npy) disagrees with the slot table",
            "image_addr": "the memory image's addresses disagree with the tables",
            "image_data": "the memory image (image_data.npy) disagrees with the tables: its "
                          "key, value or centroid rows (centroids.npy) differ",
            "heads": "the head table disagrees with itself"}
    for name, msg in what.items():
        x, y = derived[name], a[name]
        if x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y):
            raise ArtifactError(f"{p}: {msg}; the artifact was edited or is corrupted: "
                                f"recompile it")


def load_artifact(path: str | os.PathLike[str], cfg: Config | None = None, *,
                  verify: bool = True) -> CompiledKV:
    """Read an artifact folder; see the module docstring for the checks. Without ``cfg`` the
    preset named in the manifest is loaded and must hash the same. ``verify`` (default) also
    checks hashes and that the tables agree with each other (:func:`_check_meaning`)."""
    from starc import config as cfgmod

    p = Path(path)
    mp = p / "manifest.json"
    if not p.is_dir():
        raise ArtifactError(f"{p}: not a compiled artifact folder (no such directory); run "
                            f"`starc compile` first")
    if not mp.is_file():
        raise ArtifactError(f"{p}: no manifest.json; this is not a compiled artifact (or it was "
                            f"not finished): recompile it")
    try:
        man = json.loads(mp.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{mp}: corrupted manifest (not JSON: {e}); recompile") from None
    if not isinstance(man, dict) or man.get("schema") != SCHEMA:
        got = man.get("schema") if isinstance(man, dict) else None
        raise ArtifactError(f"{mp}: schema {got!r}, this reader knows {SCHEMA!r}; recompile "
                            f"with this version")
    _check_manifest(man, mp)
    if verify and man.get("digest") != _manifest_digest(man):
        raise ArtifactError(f"{mp}: the manifest was modified after it was written (digest "
                            f"mismatch); recompile the artifact")
    if cfg is None:
        try:
            cfg = cfgmod.load(man["preset"].removesuffix("+overrides"))
        except cfgmod.ConfigError as e:
            raise ArtifactError(f"{p}: compiled for preset {man['preset']!r}, which cannot be "
                                f"loaded ({e}); pass the preset (--preset/--set) it was compiled "
                                f"with") from None
    if config_hash(cfg) != man["config_hash"]:
        raise ArtifactError(f"{p}: compiled for preset {man['preset']!r} (config hash "
                            f"{man['config_hash'][:12]}), but the given preset {cfg.name!r} "
                            f"hashes {config_hash(cfg)[:12]}; pass the same preset and --set "
                            f"overrides, or recompile for this one")
    arrays: dict[str, np.ndarray] = {}
    for name in _FILES:
        info = man["files"][name]
        f = p / f"{name}.npy"
        if not f.is_file():
            raise ArtifactError(f"{p}: {name}.npy is missing; the artifact is incomplete: "
                                f"recompile it")
        if verify and _sha256_file(f) != info["sha256"]:
            raise ArtifactError(f"{f}: contents do not match the manifest hash (corrupted or "
                                f"edited); recompile the artifact")
        try:
            arrays[name] = np.load(f, allow_pickle=False)
        except Exception as e:
            raise ArtifactError(f"{f}: unreadable ({e}); recompile the artifact") from None
    try:
        meta = KVMeta.from_json(man["input"]["meta"], f"{p} manifest")
        geo = Geometry(cfg, meta.head_dim)
    except (ValueError, cfgmod.ConfigError) as e:
        raise ArtifactError(f"{p}: {e}; recompile the artifact") from None
    if geo.tpgr != man["geometry"]["tokens_per_group_row"]:
        raise ArtifactError(f"{p}: geometry mismatch with preset {cfg.name!r}; recompile")
    if man["mode"] not in ("artifact", "row-aligned", "global", "dense"):
        raise ArtifactError(f"{p}: unknown compile mode {man['mode']!r}; recompile")
    if len(man["heads"]) != meta.n_layers * meta.n_kv_heads:
        raise ArtifactError(f"{p}: the manifest's head list does not cover every (layer, KV "
                            f"head); recompile")
    _check_tables(p, arrays, meta, geo)
    heads_tab = arrays["heads"]
    tok = arrays["tokens"]
    T = meta.context_len
    L, H, d = meta.n_layers, meta.n_kv_heads, meta.head_dim
    for i, h in enumerate(heads_tab):
        sl = tok[i * T:(i + 1) * T]
        if not (np.array_equal(sl["position"], np.arange(T)) and (sl["layer"] == h["layer"]).all()
                and (sl["head"] == h["head"]).all()):
            raise ArtifactError(f"{p}: the token map is not head by head, position by position; "
                                f"recompile the artifact")
        if (sl["slot"] < 0).any() or (sl["slot"] >= SLICE).any() or (sl["set"] < 0).any() \
                or (sl["set"] >= geo.sets).any():
            raise ArtifactError(f"{p}: the token map has slots outside the bank rows; recompile")
    voff = np.zeros(len(tok), np.int64)
    # tokens are stored head by head, T each, in heads-table order
    for i, h in enumerate(heads_tab):
        voff[i * T:(i + 1) * T] = h["n_krows"]
    kbits, vbits = decode_image(arrays["image_addr"], arrays["image_data"], tok, geo, voff)
    ks = [np.zeros((T, H, d), np.float16) for _ in range(L)]
    vs = [np.zeros((T, H, d), np.float16) for _ in range(L)]
    kf, vf = kbits.view(np.float16), vbits.view(np.float16)
    for i, h in enumerate(heads_tab):
        sl = slice(i * T, (i + 1) * T)
        pos = tok["position"][sl]
        ks[h["layer"]][pos, h["head"]] = kf[sl]
        vs[h["layer"]][pos, h["head"]] = vf[sl]
    q = arrays["queries"]
    qs = [q[l] for l in range(L)]
    cache = KVCache(meta=meta, k=ks, v=vs, q=qs)
    if verify and cache.content_hash() != man["input"]["hash"]:
        raise ArtifactError(f"{p}: the memory image does not decode back to the compiled input "
                            f"(input hash mismatch); recompile the artifact")
    heads: list[list[HeadMap | None]] = [[None] * H for _ in range(L)]
    for i, h in enumerate(heads_tab):
        bo, nb = int(h["block_off"]), int(h["n_blocks"])
        co, nc = int(h["cl_off"]), int(h["n_clusters"])
        so, ns = int(h["seg_off"]), int(h["n_segs"])
        fo, nf = int(h["buf_off"]), int(h["n_buf"])
        blk = arrays["blocks"][bo:bo + nb]
        cl = arrays["clusters"][co:co + nc]
        sg = arrays["segments"][so:so + ns]
        bf = arrays["buffer"][fo:fo + nf]
        tp = geo.tpgr
        slot_off = bo * tp
        entry = man["heads"][i]
        heads[int(h["layer"])][int(h["head"])] = HeadMap(
            layer=int(h["layer"]), head=int(h["head"]), channel=int(h["channel"]),
            positional=bool(h["positional"]), tpgr=tp, row_base=int(h["row_base"]),
            n_krows=int(h["n_krows"]), n_crows=int(h["n_crows"]),
            block_group=blk["group"].astype(np.int64), block_row=blk["row"].astype(np.int64),
            slot_pos=arrays["slots"][slot_off:slot_off + nb * tp].astype(np.int64),
            seg_start=sg["start"].astype(np.int64), seg_end=sg["end"].astype(np.int64),
            seg_ready=sg["ready"].astype(np.int64), cl_start=cl["start"].astype(np.int64),
            cl_size=cl["size"].astype(np.int64), cl_seg=cl["segment"].astype(np.int64),
            centroid=arrays["centroids"][co:co + nc].astype(np.float32),
            buf_group=bf["group"].astype(np.int64), buf_row=bf["row"].astype(np.int64),
            buffer_cap=int(h["buffer_cap"]), sink_end=int(h["sink_end"]),
            stats=dict(entry.get("stats", {})))
    if any(hm is None for row in heads for hm in row):
        raise ArtifactError(f"{p}: the head table does not cover every (layer, KV head); "
                            f"recompile")
    ck = CompiledKV(cfg=cfg, cache=cache, mode=man["mode"], options=dict(man["options"]),
                    heads=heads, stats=dict(man.get("stats", {})),  # type: ignore[arg-type]
                    input_hash=man["input"]["hash"])
    if ck.mode != "dense":      # derived from the keys; the image check below covers them
        rule = ck.options.get("row_scores") or "centroid"
        if rule not in ROW_SCORES:
            raise ArtifactError(f"{p}: unknown row_scores {rule!r} in the manifest; recompile "
                                f"the artifact with this version")
        attach_row_scores(ck, rule)
    if verify:
        _check_meaning(p, ck, arrays)
    return ck
