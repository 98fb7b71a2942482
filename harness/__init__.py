"""Reference benchmark harness for cloud-mask segmentation on Landsat-8 imagery."""

__version__ = "0.1.0"


def lazy_exports(package: str, exports: dict[str, str]):
    """A module ``__getattr__`` (PEP 562) that imports each name of ``exports`` from its module on first use.

    ``exports`` maps a public name to the module defining it. A package facade uses it so that importing
    the package loads none of its heavy dependencies (ray, mlflow, torch), as optuna's facades do.
    """
    import importlib

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
