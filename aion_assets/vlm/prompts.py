"""Versioned prompts shipped in the package (``prompts/<name>_<version>.txt``, read through importlib.resources so
an installed wheel finds them as a source checkout does).

The version id goes into every stored row and, with the content hash, into the code version of the assets that
use it: editing the file without bumping the version still changes the hash, so the UI never hides a new prompt.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable

PROMPT_DIR: Traversable = files("aion_assets.vlm") / "prompts"
DESCRIBE_PROMPT_VERSION = "v1"
RERANK_PROMPT_VERSION = "v1"


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str
    text: str
    sha256: str  # hex digest of the file's bytes

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    @property
    def version_id(self) -> str:
        """``v1:3f2a9c...``: what code versions and run metadata carry."""
        return f"{self.version}:{self.short_hash}"


@lru_cache(maxsize=None)
def load_prompt(name: str, version: str) -> Prompt:
    """Load ``prompts/<name>_<version>.txt``; a missing version is an error naming the ones that exist."""
    path = PROMPT_DIR / f"{name}_{version}.txt"
    if not path.is_file():
        known = sorted(p.name.removesuffix(".txt") for p in PROMPT_DIR.iterdir()
                       if p.name.startswith(f"{name}_") and p.name.endswith(".txt"))
        raise FileNotFoundError(f"no prompt {name!r} version {version!r} (have: {', '.join(known) or 'none'})")
    data = path.read_bytes()
    return Prompt(name=name, version=version, text=data.decode("utf-8").strip(), sha256=hashlib.sha256(data).hexdigest())


def describe_prompt(version: str = DESCRIBE_PROMPT_VERSION) -> Prompt:
    return load_prompt("describe", version)


def rerank_prompt(version: str = RERANK_PROMPT_VERSION) -> Prompt:
    return load_prompt("rerank", version)
