"""GPU-path checks of the harness through its own functions (``benchmarks/perf/gpu_check.sh`` runs it).

Usage: ``python benchmarks/perf/gpu/gpu_paths.py OUT.json [SECTIONS]`` from the repo root, SECTIONS a
comma-separated subset of ``env,fit,repeat,bf16,compile,memory`` (default: all). Writes one JSON, saved
after every section; each section is independent: a failure is recorded ("error", "trace") and the next
one runs. Every figure is measured in the run.

  env        versions, device, bf16 support, cuDNN, what ``resolve_device("auto")`` and (when the harness
             has it) ``autocast_dtype`` resolve to
  fit        ``harness.training.loop.fit`` of U-Net and UNet++ (depth 4, base 32, 384 px, 4 loader workers,
             deterministic=True): per epoch losses/IoU/images/s, peak memory, warnings (ops with no
             deterministic kernel), and what fit actually did, seen from inside: its loaders' pin_memory and
             workers, the input's device and channels_last, the logits' dtype (autocast), the
             deterministic/cuDNN flags during the forward passes
  repeat     the same U-Net fit twice with one seed, deterministic True and False: equal losses? weights?
  bf16       bf16 vs fp32 masks. "eval": the fitted weights evaluated in the harness's precision and in
             fp32 (pixel agreement, IoU, eval images/s). "train" (when ``TrainConfig`` has ``precision``):
             one fit per precision through ``dataclasses.replace(config, precision=...)``, its
             ``FitResult.precision``, images/s, IoU, and the test masks' agreement with the fp32 fit
  compile    ``torch._dynamo.explain`` graph breaks of both networks; ``torch.compile`` of U-Net, train
             steps at batch 16, a last batch of 5, an eval batch of 32: seconds, recompiles, agreement
  memory     peak memory of one training step, U-Net/UNet++ x base 32/64 x batch 16/32 (how many
             0.25-GPU trials fit on one card)

Dry run on a CPU machine (``gpu_check.sh --dry-run`` sets these): GC_DEVICE=cpu GC_PATCH=64 GC_BASE=8
GC_WORKERS=2 GC_COMPILE_BACKEND=aot_eager (tiny sizes; the CUDA-only figures read null).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np
import torch

DEV = os.environ.get("GC_DEVICE", "cuda")
PATCH = int(os.environ.get("GC_PATCH", "384"))
BASE = int(os.environ.get("GC_BASE", "32"))
WORKERS = int(os.environ.get("GC_WORKERS", "4"))
CUDA = DEV.startswith("cuda")
#: torch.compile backend: inductor on CUDA; the dry run uses aot_eager (same graphs and guards, no C++ build).
BACKEND = os.environ.get("GC_COMPILE_BACKEND", "inductor")
ALL_SECTIONS = ("env", "fit", "repeat", "bf16", "compile", "memory")

out: dict = {}


def save(path: str) -> None:
    with open(path + ".tmp", "w") as fh:
        json.dump(out, fh, indent=1, default=str)
    os.replace(path + ".tmp", path)


@contextlib.contextmanager
def section(name: str, path: str):
    t0 = time.perf_counter()
    print(f"== {name}", flush=True)
    record = out.setdefault(name, {})
    try:
        yield record
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["trace"] = traceback.format_exc()[-3000:]
        print(record["trace"], flush=True)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    save(path)


# ------------------------------------------------------------------------------------------ CUDA helpers
def reset_peak() -> None:
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    if not CUDA:
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ the harness
def has_precision() -> bool:
    from harness.config import TrainConfig

    return "precision" in {f.name for f in dataclasses.fields(TrainConfig)}


def train_config(arch: str, **overrides):
    from harness.config import TrainConfig

    values = {
        "arch": arch,
        "depth": 4,
        "base_channels": BASE,
        "batch_size": 16,
        "eval_batch_size": 32,
        "epochs": 2,
        "lr": 1e-3,
        "num_workers": WORKERS,
        "device": DEV,
        "seed": 0,
        "deterministic": True,
    }
    values.update(overrides)
    return TrainConfig(**values)


def prepared_data():
    from harness.data.prepare import prepare_data

    root = os.environ.get("GC_TMP") or tempfile.mkdtemp(prefix="gc-")
    return prepare_data(
        synthetic={"scenes": 6, "patch_size": PATCH, "seed": 0, "test_scenes": 2, "grid": [4, 4]},
        cache_dir=f"{root}/paths-data/cache{PATCH}",
        split_kind="scene",
        fractions=(0.5, 0.25, 0.25),
        split_seed=0,
        nonempty_only=True,
    )


@contextlib.contextmanager
def probe(seen: dict):
    """Record what ``fit`` does from inside: the loaders it builds and its first train/eval forward pass."""
    import harness.training.loop as L

    make_loader, prepare_model = L.make_loader, L.prepare_model
    seen.setdefault("loaders", [])

    def recording_loader(*args, **kwargs):
        loader = make_loader(*args, **kwargs)
        seen["loaders"].append(
            {
                "batch_size": loader.batch_size,
                "num_workers": loader.num_workers,
                "pin_memory": loader.pin_memory,
                "persistent_workers": getattr(loader, "persistent_workers", None),
                "sampler": type(loader.sampler).__name__,
            }
        )
        return loader

    def hook(module, inputs, output):
        key = "train_forward" if module.training else "eval_forward"
        if key in seen:
            return
        x = inputs[0]
        logits = output[-1] if isinstance(output, list | tuple) else output
        seen[key] = {
            "input_device": str(x.device),
            "input_dtype": str(x.dtype),
            "input_channels_last": bool(x.is_contiguous(memory_format=torch.channels_last)),
            "logits_dtype": str(logits.dtype),
            "autocast_enabled": torch.is_autocast_enabled(x.device.type),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "grad_enabled": torch.is_grad_enabled(),
        }

    def recording_prepare(model, device):
        model = prepare_model(model, device)
        if not getattr(model, "_gc_probe", False):
            model.register_forward_hook(hook)
            model._gc_probe = True
        return model

    L.make_loader, L.prepare_model = recording_loader, recording_prepare
    try:
        yield seen
    finally:
        L.make_loader, L.prepare_model = make_loader, prepare_model


def run_fit(config, data, seen: dict | None = None):
    """(FitResult, sorted distinct warning messages, peak GiB) of ``fit(config, data, None)``."""
    from harness.training.loop import fit

    reset_peak()
    with warnings.catch_warnings(record=True) as caught, probe(seen if seen is not None else {}):
        warnings.simplefilter("always")
        result = fit(config, data, None)
    messages = sorted({f"{w.category.__name__}: {str(w.message)[:300]}" for w in caught})
    return result, messages, peak_gib()


def history_rows(result) -> list[dict]:
    keys = ("train_loss", "val_loss", "val_iou", "train_images_per_second", "epoch_seconds")
    return [{k: h.get(k) for k in keys} for h in result.history]


def first_param(model, dims: int | None = None):
    return next(p for p in model.parameters() if dims is None or p.dim() == dims)


def evaluate_masks(model, config, data, band_stats, *, fp32: bool = False, precision: str | None = None):
    """(evaluate()'s dict, test masks (N, H, W) uint8, how the precision was set) on the test split."""
    import harness.training.loop as L

    device = L.resolve_device(config.device)
    dataset = L.make_eval_dataset(config, data, "test", band_stats)
    loader = L.make_loader(dataset, batch_size=config.eval_batch_size, device=device, num_workers=WORKERS)
    masks: list[np.ndarray] = []
    kwargs = {"on_predictions": masks.append}
    how = "harness default"
    accepts_precision = "precision" in inspect.signature(L.evaluate).parameters
    if precision is not None and accepts_precision:
        kwargs["precision"] = precision
        how = f"evaluate(precision={precision!r})"
    if fp32 and accepts_precision:
        kwargs["precision"] = "fp32"
        how = "evaluate(precision='fp32')"
    elif fp32:
        if not hasattr(L, "_autocast"):
            raise RuntimeError("no way to evaluate in fp32: evaluate takes no precision and loop has no _autocast")
        original = L._autocast
        L._autocast = lambda *args, **kw: contextlib.nullcontext()
        how = "fp32: loop._autocast patched to a no-op"
    try:
        metrics = L.evaluate(model, loader, device, **kwargs)
    finally:
        if fp32 and not accepts_precision:
            L._autocast = original
    sync()
    return metrics, (np.concatenate(masks) if masks else np.zeros((0, 0, 0), np.uint8)), how


def eval_summary(metrics: dict) -> dict:
    return {
        "iou": metrics.get("iou"),
        "loss": metrics.get("loss"),
        "images": metrics.get("images"),
        "images_per_second": metrics["images"] / metrics["seconds"] if metrics.get("seconds") else None,
    }


# ------------------------------------------------------------------------------------------------ sections
def section_env(r: dict) -> None:
    import harness.training.loop as L

    r.update(
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
        cuda_available=torch.cuda.is_available(),
        device=torch.cuda.get_device_name(0) if CUDA else "cpu",
        capability=torch.cuda.get_device_capability(0) if CUDA else None,
        bf16_supported=torch.cuda.is_bf16_supported() if CUDA else None,
        device_count=torch.cuda.device_count(),
        resolve_auto=str(L.resolve_device("auto")),
        CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES"),
        cpus=os.cpu_count(),
        train_config_has_precision=has_precision(),
        fit_result_fields=[f.name for f in dataclasses.fields(L.FitResult)],
        evaluate_takes_precision="precision" in inspect.signature(L.evaluate).parameters,
    )
    autocast_dtype = getattr(L, "autocast_dtype", None)
    if autocast_dtype is None:
        r["autocast_dtype"] = "absent (harness.training.loop has no autocast_dtype)"
        return
    device = torch.device(DEV)
    table = {}
    for precision in ("auto", "bf16", "fp16", "fp32"):
        for label, bf16 in (("detected", None), ("no_bf16", False)):
            try:
                table[f"{precision}/{label}"] = str(autocast_dtype(device, precision, bf16_supported=bf16))
            except Exception as exc:
                table[f"{precision}/{label}"] = f"{type(exc).__name__}: {exc}"
    r["autocast_dtype"] = table


def section_fit(r: dict, data, fitted: dict, arch: str) -> None:
    config = train_config(arch)
    seen: dict = {}
    result, messages, peak = run_fit(config, data, seen)
    fitted[arch] = (config, result)
    r.update(
        status=result.status,
        seconds=round(result.seconds, 2),
        precision=getattr(result, "precision", "absent (FitResult has no precision)"),
        history=history_rows(result),
        param_device=str(first_param(result.model).device),
        param_channels_last=bool(first_param(result.model, 4).is_contiguous(memory_format=torch.channels_last)),
        peak_memory_gib=peak,
        warnings=messages,
        seen_inside_fit=seen,
        deterministic_after=torch.are_deterministic_algorithms_enabled(),
        cudnn_benchmark_after=torch.backends.cudnn.benchmark,
    )


def section_repeat(r: dict, data) -> None:
    for deterministic in (True, False):
        config = train_config("unet", seed=3, deterministic=deterministic, epochs=1)
        a, _, _ = run_fit(config, data)
        b, _, _ = run_fit(config, data)
        sa, sb = a.model.state_dict(), b.model.state_dict()
        r[f"deterministic_{deterministic}"] = {
            "losses": [a.history[0]["train_loss"], b.history[0]["train_loss"]],
            "loss_equal": a.history[0]["train_loss"] == b.history[0]["train_loss"],
            "weights_bitwise_equal": all(torch.equal(sa[k], sb[k]) for k in sa),
            "weights_max_abs_diff": max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa),
            "val_iou": [a.history[0]["val_iou"], b.history[0]["val_iou"]],
            "val_iou_equal": a.history[0]["val_iou"] == b.history[0]["val_iou"],
        }


def section_bf16(r: dict, data, fitted: dict) -> None:
    # 1. the weights fit trained, evaluated in the harness's precision and in fp32
    if not fitted:
        config = train_config("unet", epochs=1)
        fitted["unet"] = (config, run_fit(config, data)[0])
    r["eval"] = {}
    for arch, (config, result) in fitted.items():
        default, masks_default, how_default = evaluate_masks(
            result.model, config, data, result.band_stats, precision=getattr(config, "precision", None)
        )
        fp32, masks_fp32, how_fp32 = evaluate_masks(result.model, config, data, result.band_stats, fp32=True)
        r["eval"][arch] = {
            "how": [how_default, how_fp32],
            "harness_precision": getattr(result, "precision", None),
            "pixels": int(masks_default.size),
            "pixel_agreement": float((masks_default == masks_fp32).mean()) if masks_default.size else None,
            "harness": eval_summary(default),
            "fp32": eval_summary(fp32),
        }
    # 2. one fit per precision through the config (only where TrainConfig has the field)
    if not has_precision():
        r["train"] = "skipped: TrainConfig has no precision field on this harness"
        return
    precisions = ("bf16", "fp16", "fp32") if CUDA else ("bf16", "fp32")
    train: dict = {}
    masks: dict = {}
    for precision in precisions:
        try:
            config = dataclasses.replace(train_config("unet"), precision=precision)
            result, messages, peak = run_fit(config, data)
            metrics, masks[precision], how = evaluate_masks(
                result.model, config, data, result.band_stats, precision=precision
            )
            train[precision] = {
                "fit_result_precision": getattr(result, "precision", "absent (FitResult has no precision)"),
                "status": result.status,
                "history": history_rows(result),
                "peak_memory_gib": peak,
                "warnings": messages,
                "test": {**eval_summary(metrics), "how": how},
            }
        except Exception as exc:
            train[precision] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
    if "fp32" in masks:
        for precision, m in masks.items():
            if precision != "fp32" and m.shape == masks["fp32"].shape:
                train[precision]["test_mask_agreement_with_fp32_fit"] = float((m == masks["fp32"]).mean())
    r["train"] = train


def section_compile(r: dict, path: str) -> None:
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    import harness.training.loop as L

    device = torch.device(DEV)
    amp = {"device_type": device.type, "dtype": torch.bfloat16, "enabled": CUDA}
    for arch in ("unet", "unetpp"):
        model = L.prepare_model(L.model_from_config(train_config(arch, device=DEV)), device)
        x = torch.rand(16 if CUDA else 4, 4, PATCH, PATCH, device=device).contiguous(memory_format=torch.channels_last)
        dynamo.reset()
        with torch.autocast(**amp):
            ex = dynamo.explain(model)(x)
        r[f"{arch}_explain"] = {
            "graphs": ex.graph_count,
            "graph_breaks": ex.graph_break_count,
            "break_reasons": [str(getattr(b, "reason", b))[:200] for b in ex.break_reasons],
        }
        save(path)  # partial results survive the step's time limit
    # compile U-Net only (UNet++'s compile takes minutes): train steps at 16, a last batch of 5, eval at 32
    batch, last, eval_batch = (16, 5, 32) if CUDA else (4, 3, 8)
    model = L.prepare_model(L.model_from_config(train_config("unet", device=DEV)), device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend=BACKEND)
    seen = r["unet_compile"] = {"backend": BACKEND}
    for i, b in enumerate((batch, batch, last, batch)):
        xb = torch.rand(b, 4, PATCH, PATCH, device=device).contiguous(memory_format=torch.channels_last)
        yb = torch.randint(0, 2, (b, PATCH, PATCH), device=device)
        t0 = time.perf_counter()
        with torch.autocast(**amp):
            logits = compiled(xb)
        torch.nn.functional.cross_entropy(logits.float(), yb).backward()
        optimiser.step()
        optimiser.zero_grad()
        sync()
        seen[f"step{i}_batch{b}_s"] = round(time.perf_counter() - t0, 3)
        save(path)
    model.eval()
    with torch.inference_mode(), torch.autocast(**amp):
        xe = torch.rand(eval_batch, 4, PATCH, PATCH, device=device).contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        ce = compiled(xe)
        sync()
        seen[f"eval_batch{eval_batch}_s"] = round(time.perf_counter() - t0, 3)
        ee = model(xe)
    seen.update(
        {
            "counters": {k: {str(kk): int(vv) for kk, vv in v.items()} for k, v in counters.items() if v},
            "compiled_vs_eager_argmax_agreement": float((ce.argmax(1) == ee.argmax(1)).float().mean()),
        }
    )


def section_memory(r: dict) -> None:
    import harness.training.loop as L
    from harness.training.losses import cross_entropy_loss

    device = torch.device(DEV)
    amp = {"device_type": device.type, "dtype": torch.bfloat16, "enabled": CUDA}
    for arch in ("unet", "unetpp"):
        for base in (32, 64) if CUDA else (BASE,):
            for batch in (16, 32) if CUDA else (4,):
                key = f"{arch}_b{base}_batch{batch}"
                reset_peak()
                try:
                    model = L.prepare_model(L.model_from_config(train_config(arch, base_channels=base)), device)
                    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
                    xb = torch.rand(batch, 4, PATCH, PATCH, device=device).contiguous(memory_format=torch.channels_last)
                    yb = torch.randint(0, 2, (batch, PATCH, PATCH), device=device)
                    for _ in range(2):
                        with torch.autocast(**amp):
                            loss = cross_entropy_loss(model(xb), yb)
                        loss.backward()
                        optimiser.step()
                        optimiser.zero_grad()
                    r[key] = peak_gib() if CUDA else "n/a on cpu"
                    del model, optimiser, xb, yb, loss
                except torch.cuda.OutOfMemoryError:
                    r[key] = "oom"
    r["card_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 2) if CUDA else None
    if CUDA:
        worst = max(v for k, v in r.items() if k.endswith("batch32") and isinstance(v, float))
        r["quarter_card_gib"] = round(r["card_gib"] / 4, 2)
        r["largest_batch32_step_fits_quarter_card"] = worst < r["card_gib"] / 4


def main(argv: list[str]) -> int:
    path = argv[1]
    sections = argv[2].split(",") if len(argv) > 2 else list(ALL_SECTIONS)
    unknown = sorted(set(sections) - set(ALL_SECTIONS))
    if unknown:
        print(f"unknown section(s) {unknown}; known: {','.join(ALL_SECTIONS)}", file=sys.stderr)
        return 2
    out["settings"] = {"device": DEV, "patch": PATCH, "base_channels": BASE, "workers": WORKERS, "sections": sections}
    if "env" in sections:
        with section("env", path) as r:
            section_env(r)
    data = None
    if {"fit", "repeat", "bf16"} & set(sections):
        with section("data", path) as r:
            t0 = time.perf_counter()
            data = prepared_data()
            r.update({k: len(data.indices(k)) for k in ("train", "val", "test")})
            r["prepare_seconds"] = round(time.perf_counter() - t0, 2)
    fitted: dict = {}
    if data is not None:
        if "fit" in sections:
            for arch in ("unet", "unetpp"):
                with section(f"fit_{arch}", path) as r:
                    section_fit(r, data, fitted, arch)
        if "repeat" in sections:
            with section("repeat", path) as r:
                section_repeat(r, data)
        if "bf16" in sections:
            with section("bf16", path) as r:
                section_bf16(r, data, fitted)
    if "compile" in sections:
        with section("compile", path) as r:
            section_compile(r, path)
    if "memory" in sections:
        with section("memory", path) as r:
            section_memory(r)
    save(path)
    failed = [k for k, v in out.items() if isinstance(v, dict) and "error" in v]
    print(
        json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "trace"} for k, v in out.items()}, default=str)[:6000]
    )
    print(f"sections with an error: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
