"""pandas imported when something uses it, not when pyarrow first converts a value.

pyarrow keeps a lazy handle on pandas (``pyarrow.lib._pandas_api``), but the first time it
converts almost anything (an array from numpy, a typed scalar) it asks whether pandas is
installed, and asking imports it: 0.3 s, a third of a small ``chanbatch run``, although a run
whose stages all run on Arrow never touches a DataFrame (apache/arrow#34994).

:func:`defer_pandas` answers that question "not yet" for this process: right after pyarrow's
core module loads, its pandas handle is tried once with pandas hidden, so it records pandas as
absent. While pandas is not imported that answer is true, since no pandas object can exist.
The moment anything imports pandas (a stage that needs pandas, a UDF module, pyarrow itself
when it infers a type), the handle is tried again, so pyarrow sees pandas objects from then on
exactly as it would have. The CLI calls it once per process; the Python API leaves pyarrow as
it is (a program that imports chanbatch has usually imported pandas already).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import importlib.abc
    import importlib.machinery

# The finders and loaders here follow the import protocol (find_spec; create_module and
# exec_module) without subclassing importlib.abc's classes: importing importlib.abc loads
# importlib.resources, tempfile and shutil, about 5 ms of every command.

__all__ = ["defer_pandas"]


def defer_pandas() -> None:
    """Keep pyarrow from importing pandas until something imports pandas (see the module
    docstring). Does nothing if pandas is imported already; safe to call more than once."""
    if "pandas" in sys.modules or any(isinstance(f, _When) for f in sys.meta_path):
        return
    if "pyarrow.lib" in sys.modules:
        _ask_without_pandas(sys.modules["pyarrow.lib"])
    else:
        sys.meta_path.insert(
            0, _When("pyarrow.lib", lambda loader: _Then(loader, _ask_without_pandas))
        )
    # pyarrow._dataset (loaded by the first grouped aggregate) converts a Python value as it
    # loads, which imports pandas: it loads with pandas hidden unless pandas is there already
    sys.meta_path.insert(0, _When("pyarrow._dataset", _WithoutPandas))


def _ask_without_pandas(lib: ModuleType) -> None:
    """pyarrow's pandas handle tried once with pandas hidden; tried again when pandas loads."""
    if "pandas" in sys.modules:
        return
    with _hidden("pandas"):
        _ = lib._pandas_api.have_pandas  # tries the import once; pandas is now "absent"
    # ``pd`` imports pandas again when the handle last found it absent: it is found now
    sys.meta_path.insert(
        0, _When("pandas", lambda loader: _Then(loader, lambda _: lib._pandas_api.pd))
    )
    if "pandas" in sys.modules:  # another thread imported it meanwhile (it was hidden here only)
        _ = lib._pandas_api.pd


@contextlib.contextmanager
def _hidden(name: str) -> Iterator[None]:
    """Module ``name`` cannot be imported meanwhile by this thread (unless it is imported
    already): an import of it raises ImportError, which pyarrow catches and records. Another
    thread (a run imports pyarrow on one while it plans: :mod:`chanbatch.run.runner`) imports
    it as ever."""
    hide = _Hide(name)
    sys.meta_path.insert(0, hide)
    try:
        yield
    finally:
        sys.meta_path.remove(hide)


class _Hide:
    def __init__(self, name: str) -> None:
        self.name = name
        self.thread = threading.get_ident()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == self.name and threading.get_ident() == self.thread:
            raise ImportError(f"{fullname} is imported when it is used", name=fullname)


class _When:
    """Module ``name``, found as it would be without this finder, loaded by ``wrap(its
    loader)``; once, then this finder leaves ``sys.meta_path``."""

    def __init__(self, name: str, wrap: Callable[[Any], _Wrapped]) -> None:
        self.name = name
        self.wrap = wrap

    def find_spec(
        self, fullname: str, path: Any, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:  # found by whoever would have found it
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    # a loader by protocol, not by class (see the imports)
                    spec.loader = cast("importlib.abc.Loader", self.wrap(spec.loader))
                return spec
        return None


class _Wrapped:
    """A module's own loader; subclasses add to how the module runs."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:  # resources, get_source, ...: the real loader's
        return getattr(self.loader, name)


class _Then(_Wrapped):
    """Calls ``then(module)`` once the module has run."""

    def __init__(self, loader: Any, then: Callable[[ModuleType], object]) -> None:
        super().__init__(loader)
        self.then = then

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.then(module)


class _WithoutPandas(_Wrapped):
    """Runs the module with pandas hidden, unless pandas is imported already."""

    def exec_module(self, module: ModuleType) -> None:
        if "pandas" in sys.modules:
            self.loader.exec_module(module)
            return
        with _hidden("pandas"):
            self.loader.exec_module(module)
