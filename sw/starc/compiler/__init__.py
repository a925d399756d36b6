"""Mapping compiler: a KV cache in, a clustered and placed PIM memory image out.

``compile_kv`` (in memory) and ``save_artifact`` / ``load_artifact`` (the on-disk folder with a
versioned, hashed manifest). docs/compiler.md describes the data flow and the formats.
"""

from starc.compiler.compile import MODES, CompileError, CompileOptions, compile_kv
from starc.compiler.compiled import CompiledKV, HeadMap

__all__ = ["MODES", "CompileError", "CompileOptions", "CompiledKV", "HeadMap", "compile_kv"]
