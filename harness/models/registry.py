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
plus ``deep_supervision=True`` where the spec supports it and ``encoder=...`` where the spec lists
encoders, and returns a ``torch.nn.Module`` whose forward gives logits ``(B, num_classes, H, W)``.

What a spec declares is checked before any network is built (a benchmark is validated without torch):
the depth range, the encoders it takes (the first is its default), the norms it offers, whether
``base_channels`` sets a width in it, the smallest training batch it can take (batch norm after a
global pooling needs two images), and whether its training step repeats on a GPU under
``train.deterministic`` (tests/models/test_registry.py checks that claim against the autograd graph).
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
    #: Encoder (backbone) names the builder takes, the default first; empty: the network has no choice.
    encoders: tuple[str, ...] = ()
    #: Normalisations offered (a subset of :data:`NORMS`).
    norms: tuple[str, ...] = NORMS
    #: Whether ``base_channels`` sets a width of the network (LinkNet's decoder follows its encoder).
    uses_width: bool = True
    #: The smallest training batch: 2 where batch norm follows a global pooling (a 1x1 map of one image).
    min_batch: int = 1
    #: False where a training step uses an op that torch documents as nondeterministic on CUDA.
    cuda_deterministic: bool = True
    #: Where the network comes from (a paper, a library), shown by ``cloudmask models``.
    source: str = ""
    #: The published shape (depth, base_channels) that ``cloudmask models`` costs: the paper's or the
    #: library's defaults (smp: encoder depth 5, decoder widths 256..16 = base 16); a depth outside
    #: ``depth_range`` is brought to its nearest end.
    reference_shape: tuple[int, int] = (4, 32)

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
    if not spec.norms or set(spec.norms) - set(NORMS):
        raise ModelError(f"architecture {spec.name!r}: norms must be a non-empty subset of {NORMS}")
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


def shape_problem(
    name: str,
    *,
    depth: int,
    deep_supervision: bool = False,
    encoder: str = "",
    norm: str | None = None,
    batch_size: int | None = None,
) -> tuple[str, str] | None:
    """(the offending argument, why) when architecture ``name`` cannot take this shape, else None.

    The argument is ``"depth"`` (outside the spec's ``depth_range``), ``"deep_supervision"`` (the spec
    has no intermediate heads), ``"encoder"`` (not one the spec lists; ``""`` is its default),
    ``"norm"`` (not offered) or ``"batch_size"`` (below its ``min_batch``); ``name`` must be registered.
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
    if encoder and encoder not in spec.encoders:
        if not spec.encoders:
            return "encoder", f"{name} has no encoder to choose (leave encoder empty), got {encoder!r}"
        return "encoder", f"{name} takes encoder {', '.join(spec.encoders)}, got {encoder!r}"
    if norm is not None and norm not in spec.norms:
        return "norm", f"{name} offers norm {', '.join(spec.norms)}, got {norm!r}"
    if batch_size is not None and batch_size < spec.min_batch:
        return "batch_size", (
            f"{name} trains on batches of at least {spec.min_batch} (batch norm after its global pooling), "
            f"got {batch_size}"
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
    encoder: str = "",
) -> Any:
    """Build architecture ``arch`` (a registry key) as a ``torch.nn.Module`` producing logits.

    Raises ModelError for an unknown architecture (listing the valid ones) or a depth / deep supervision
    / encoder / norm the spec does not allow, and the builder's ValueError for any other impossible
    shape (a norm other than "batch"/"none", a non-positive width). ``encoder=""`` is the spec's default.
    """
    spec = get_model_spec(arch)
    known_norm = norm if norm in NORMS else None  # an unknown word is the builder's ValueError, as before
    problem = shape_problem(arch, depth=depth, deep_supervision=deep_supervision, encoder=encoder, norm=known_norm)
    if problem:
        raise ModelError(problem[1])
    kwargs: dict[str, Any] = dict(depth=depth, base_channels=base_channels, norm=norm)
    if deep_supervision:
        kwargs["deep_supervision"] = True
    if spec.encoders:
        kwargs["encoder"] = encoder or spec.encoders[0]
    return spec.load_builder()(in_channels, num_classes, **kwargs)
