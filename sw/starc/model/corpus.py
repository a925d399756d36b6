"""Long natural English text for perplexity, shipped offline by a PyPI package.

The default text is the opening of Mary Shelley's *Frankenstein; or, The Modern Prometheus*
(1818; the four letters of Robert Walton that open the novel, 31,073 characters, 6,826 SmolLM2
tokens), as Project Gutenberg e-text #84 transcribes it. The novel is in the public domain. The
file ships in the PyPI wheel of ``pyperformance`` (the Python benchmark suite, MIT licence; its
``bm_bpe_tokeniser`` benchmark tokenises it) at
``pyperformance/data-files/benchmarks/bm_bpe_tokeniser/data/frankenstein_intro.txt``; the
project pins ``pyperformance==1.14.0`` for this file alone and checks its SHA-256 before use.
The package is located with ``importlib.util.find_spec``, which does not import it.

Any UTF-8 file can be used instead (``--text FILE``); its SHA-256 then names it in sweep points.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TEXTS", "LongText", "TextError", "load_text"]


class TextError(ValueError):
    """The long text is missing, damaged or unreadable (message says what to install)."""


@dataclass(frozen=True)
class LongText:
    name: str
    title: str
    source: str
    licence: str
    sha256: str
    text: str


#: name -> (package, path inside it, title, licence, sha256 of the file)
TEXTS: dict[str, tuple[str, str, str, str, str]] = {
    "frankenstein": (
        "pyperformance",
        "data-files/benchmarks/bm_bpe_tokeniser/data/frankenstein_intro.txt",
        "Mary Shelley, Frankenstein (1818), Letters 1-4, Project Gutenberg e-text #84",
        "public domain (the novel); shipped in pyperformance 1.14.0 (MIT)",
        "6607193e67b7b459d082f5f2aea724e470615643d63ad2e205123b3076223da4",
    ),
}

_INSTALL = "pip install pyperformance==1.14.0 (or make setup)"


def _package_file(package: str, rel: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TextError(f"the {package!r} package that ships the perplexity text is not "
                        f"installed: {_INSTALL}")
    for root in spec.submodule_search_locations:
        p = Path(root) / rel
        if p.is_file():
            return p
    raise TextError(f"{package!r} is installed but has no {rel}: {_INSTALL}")


def load_text(name_or_path: str = "frankenstein") -> LongText:
    """The named shipped text (checked against its SHA-256) or a UTF-8 file."""
    if name_or_path in TEXTS:
        package, rel, title, licence, sha = TEXTS[name_or_path]
        path = _package_file(package, rel)
        data = path.read_bytes()
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            raise TextError(f"{path} has SHA-256 {got[:12]}..., expected {sha[:12]}... (a "
                            f"different {package} version?): {_INSTALL}")
        return LongText(name_or_path, title, f"{package}: {rel}", licence, sha,
                        data.decode("utf-8"))
    path = Path(name_or_path)
    if not path.is_file():
        raise TextError(f"--text {name_or_path!r} is neither a shipped text "
                        f"({', '.join(TEXTS)}) nor a file")
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except OSError as exc:
        raise TextError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TextError(f"{path} is not UTF-8 text") from None
    return LongText(path.name, path.name, str(path.resolve()), "given by the user",
                    hashlib.sha256(data).hexdigest(), text)
