"""Importing this package registers every model module in it (registered by file stem)."""
import importlib as _importlib
import pkgutil as _pkgutil

for _mod in _pkgutil.iter_modules(__path__):
    if _mod.name != "base" and not _mod.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_mod.name}")
