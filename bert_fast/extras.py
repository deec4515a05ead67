"""Optional dependencies, checked before a command starts its work.

Each extra of pyproject.toml names the packages some commands need. `require` looks them up without importing
them (a fraction of a millisecond each), so a missing one stops a command at once with the install command,
not minutes in with a ModuleNotFoundError.
"""

from __future__ import annotations

import importlib.util

from .errors import MissingDependencyError

# extra -> (distribution name, module it installs), as in pyproject.toml's [project.optional-dependencies]
EXTRAS = {
    "finetune": (("scikit-learn", "sklearn"), ("scipy", "scipy"), ("seqeval", "seqeval")),
    "wiki": (("gensim", "gensim"),),
    "plot": (("matplotlib", "matplotlib"),),
}


def missing(extra: str) -> list[str]:
    """The distributions of `extra` that are not installed."""
    return [dist for dist, module in EXTRAS[extra] if importlib.util.find_spec(module) is None]


def require(extra: str, what: str) -> None:
    """Raise MissingDependencyError naming the missing packages of `extra` and how to install them."""
    absent = missing(extra)
    if absent:
        raise MissingDependencyError(f"{what} needs {', '.join(absent)}, which is not installed: "
                                     f'pip install "bert-fast[{extra}]"')
