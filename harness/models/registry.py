"""The model registry: every architecture the harness can tune, described without importing torch.

A :class:`ModelSpec` names an architecture (its registry key), how the report shows it, its family, what
it can do (deep supervision, a depth range) and where its builder lives, as ``"module:attribute"``: the
module is imported only when a network is built, so validating a benchmark, listing the models or
rendering a report never loads torch. Modelled on timm's ``register_model`` / ``list_models``::

    from harness.models import ModelSpec, build_model, register_model

    register_model(ModelSpec(name="mynet", label="MyNet", family="encoder-decoder",
                             builder="mypackage.nets:MyNet"))
    net = build_model("mynet", depth=4, base_channels=32)

A builder is called as ``builder(in_channels, num_classes, depth=..., base_channels=..., norm=...)``,
plus ``deep_supervision=True`` where the spec supports it, and returns a ``torch.nn.Module`` whose
forward gives logits ``(B, num_classes, H, W)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.errors import ModelError

#: Normalisation layers every registered network offers.
NORMS = ("batch", "none")


@dataclass(frozen=True)
class ModelSpec:
    """One registered architecture: what a config, the report and the model tests need to know of it."""

    name: str
    label: str
    family: str
    builder: str
    deep_supervision: bool = False
    depth_range: tuple[int, int] = (1, 6)
    description: str = ""

    def load_builder(self) -> Callable[..., Any]:
        """The builder callable (its module imported now)."""
        module, _, attribute = self.builder.partition(":")
        return getattr(importlib.import_module(module), attribute)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (a second spec of one name is refused) and return it."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ModelError(f"architecture {spec.name!r} is already registered ({_REGISTRY[spec.name].builder})")
    if ":" not in spec.builder:
        raise ModelError(f"architecture {spec.name!r}: builder must be 'module:attribute', got {spec.builder!r}")
    low, high = spec.depth_range
    if not 1 <= low <= high:
        raise ModelError(f"architecture {spec.name!r}: depth_range must be (low, high) with 1 <= low <= high")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    """Registry keys of every architecture, in registration order."""
    return list(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The spec of architecture ``name``; ModelError listing the valid names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown architecture {name!r}; valid architectures: {', '.join(_REGISTRY)}") from None


def shape_problem(name: str, *, depth: int, deep_supervision: bool = False) -> tuple[str, str] | None:
    """(the offending argument, why) when architecture ``name`` cannot take this shape, else None.

    The argument is ``"depth"`` (outside the spec's ``depth_range``) or ``"deep_supervision"`` (the spec
    has no intermediate heads); ``name`` must be registered.
    """
    spec = get_model_spec(name)
    low, high = spec.depth_range
    if not low <= depth <= high:
        return "depth", f"{name} takes depth {low}..{high}, got {depth}"
    if deep_supervision and not spec.deep_supervision:
        with_heads = [s.name for s in _REGISTRY.values() if s.deep_supervision]
        return "deep_supervision", (
            f"only {', '.join(with_heads) or 'no architecture'} has deep supervision heads, not {name!r}"
        )
    return None


def build_model(
    arch: str,
    *,
    depth: int,
    base_channels: int,
    in_channels: int = 4,
    num_classes: int = 2,
    norm: str = "batch",
    deep_supervision: bool = False,
) -> Any:
    """Build architecture ``arch`` (a registry key) as a ``torch.nn.Module`` producing logits.

    Raises ModelError for an unknown architecture (listing the valid ones) or a depth / deep supervision
    the spec does not allow, and the builder's ValueError for any other impossible shape (a norm other
    than "batch"/"none", a non-positive width).
    """
    spec = get_model_spec(arch)
    problem = shape_problem(arch, depth=depth, deep_supervision=deep_supervision)
    if problem:
        raise ModelError(problem[1])
    kwargs: dict[str, Any] = dict(depth=depth, base_channels=base_channels, norm=norm)
    if deep_supervision:
        kwargs["deep_supervision"] = True
    return spec.load_builder()(in_channels, num_classes, **kwargs)
