"""Explainers. Each module registers its methods with :func:`segxai.register_explainer`;
importing this package imports every module in it, so a new method is one new file."""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
