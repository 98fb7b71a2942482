"""Decode a tree's patch files into rows of the cache's ``.npy`` files, in threads or worker processes.

Decoding a 384-px band file costs ~0.5 ms of CPU, mostly tifffile's pure-Python header parsing, which
holds the GIL: threads overlap the file reads but not the decoding, so a large tree (95-Cloud: 173k
files) decodes in worker processes. Each worker maps the ``.npy`` files itself and writes its rows
there: no pixels cross a pipe, only file paths in and (row, non-empty, problems) out.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from imagecodecs import packbits_decode
from tqdm import tqdm

from .layout import BANDS, PatchFiles, Problem, is_nonempty, read_tiff, tiff_shape

#: How many patches' headers are read to decide the dataset's patch size before decoding.
_SHAPE_SAMPLE = 32
#: Patches handed to a decoding worker at a time (about 40 ms of work at 384 px).
_CHUNK = 16
#: Decoding threads when the caller does not say. Decoding is mostly tifffile's pure-Python header
#: parsing, which holds the GIL: threads only overlap the file reads, and many of them contend for the
#: GIL (with Python's default of cores + 4 threads, ingest took 1.2-2.4x as long on 2 cores as with 2;
#: benchmarks/perf/RESULTS.md).
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
#: From this many patches on, decoding runs in worker processes, which scale past the GIL. Each is a
#: fresh interpreter (``python -c``: never a fork of the caller, which may be a threaded Ray worker, and
#: never a re-import of the caller's ``__main__``) and costs ~1 s of CPU to start (numpy, pandas through
#: ``harness.data``, tifffile, imagecodecs), so smaller trees decode in threads: 4000 patches of 384 px
#: are ~5 s of decoding on one core. 38-Cloud has 8,400 training patches, 95-Cloud 34,701.
PROCESS_MIN_PATCHES = 4000
#: Decoding processes when the caller does not say: one per CPU this process may run on, at most 8
#: (beyond that storage, not decoding, is the limit).
DEFAULT_PROCESSES = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def patch_shape(patches: Sequence[PatchFiles]) -> tuple[int, int] | None:
    """The most common (H, W) among the first patches' headers; files that differ are reported later."""
    shapes: Counter[tuple[int, ...]] = Counter()
    for pf in patches[:_SHAPE_SAMPLE]:
        for path in pf.paths():
            shape = tiff_shape(path)
            if shape is not None and len(shape) == 2:
                shapes[shape] += 1
    if not shapes:
        return None
    best = max(shapes.values())
    h, w = min(s for s, n in shapes.items() if n == best)  # ties: smallest, so the choice is stable
    return h, w


# ----------------------------------------------------------------------------------- plain strip TIFFs
#: TIFF field types the fast path reads: BYTE, SHORT, LONG -> (struct code, size).
_FIELD_TYPES = {1: ("B", 1), 3: ("H", 2), 4: ("I", 4)}
#: Tags that must hold their default (or the given) value for the fast path: Compression is checked
#: apart; SamplesPerPixel, FillOrder, PlanarConfiguration, Predictor, SampleFormat (1 = unsigned).
_PLAIN = {277: 1, 266: 1, 284: 1, 317: 1, 339: 1}
_TILE_TAGS = (322, 323, 324, 325)
_NONE, _PACKBITS = 1, 32773


def read_plain_tiff(path: Path, dtype: np.dtype | type, shape: tuple[int, int]) -> np.ndarray | None:
    """The image of a plain strip TIFF read without tifffile; None whenever ``read_tiff`` should decide.

    38/95-Cloud patches are classic TIFFs of one unsigned band in uncompressed or PackBits strips.
    For those it takes a third to a half of tifffile's time, whose per-file Python overhead dominated
    ingest (benchmarks/perf/RESULTS.md, section 8). Anything else (another layout, compression, dtype
    or shape; a truncated or inconsistent file) returns None, and ``read_tiff`` decodes it or names the
    problem, so messages stay tifffile's.
    """
    try:
        data = path.read_bytes()
        order = {b"II": "<", b"MM": ">"}.get(data[:2])
        if order is None or struct.unpack_from(order + "H", data, 2)[0] != 42:
            return None  # not a classic TIFF (BigTIFF, or not a TIFF at all)
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        tags: dict[int, tuple[int, ...]] = {}
        for k in range(count):
            tag, kind, n, field = struct.unpack_from(order + "HHI4s", data, ifd + 2 + 12 * k)
            if kind in _FIELD_TYPES:
                code, size = _FIELD_TYPES[kind]
                at = 0 if n * size <= 4 else struct.unpack(order + "I", field)[0]
                tags[tag] = struct.unpack_from(f"{order}{n}{code}", field if n * size <= 4 else data, at)
        dt = np.dtype(dtype)
        height, width = tags[257][0], tags[256][0]
        compression = tags.get(259, (_NONE,))[0]
        if (
            (height, width) != tuple(shape)
            or dt.kind != "u"
            or set(tags.get(258, (1,))) != {dt.itemsize * 8}
            or compression not in (_NONE, _PACKBITS)
            or any(set(tags.get(tag, (value,))) != {value} for tag, value in _PLAIN.items())
            or any(tag in tags for tag in _TILE_TAGS)
        ):
            return None
        offsets, counts = tags[273], tags[279]
        rows = min(tags.get(278, (height,))[0], height)
        if len(offsets) != len(counts) or len(offsets) != -(-height // rows):
            return None
        view, parts = memoryview(data), []
        for k, (start, size) in enumerate(zip(offsets, counts, strict=True)):
            expected = min(rows, height - k * rows) * width * dt.itemsize
            if start + size > len(data):
                return None  # truncated: read_tiff says so
            part = view[start : start + size] if compression == _NONE else packbits_decode(view[start : start + size])
            if len(part) != expected:
                return None
            parts.append(part)
        array = np.frombuffer(b"".join(parts), dtype=dt.newbyteorder(order)).reshape(height, width)
        return array.astype(dt, copy=False)
    except Exception:  # a malformed header or strip: tifffile decides what it is
        return None


def _read_band(path: Path, dtype: np.dtype | type, shape: tuple[int, int]) -> np.ndarray:
    array = read_plain_tiff(path, dtype, shape)
    return read_tiff(path, dtype=dtype, shape=shape) if array is None else array


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, ValueError) and text:
        return text  # read_tiff's own messages (dtype, shape, truncated) are already clear
    return f"unreadable ({type(e).__name__}: {text})" if text else f"unreadable ({type(e).__name__})"


def read_patch(pf: PatchFiles, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None, list[Problem]]:
    """Decode and check one patch: (bands (4, H, W) uint16, mask (H, W) uint8 0/1 or None, problems).

    Every file is read even after a failure so that all problems of the patch are reported.
    """
    problems: list[Problem] = []
    image = np.zeros((len(BANDS), *shape), np.uint16)
    for i, band in enumerate(BANDS):
        path = pf.bands.get(band)
        if path is None:
            continue  # scan_tree already reported it as missing
        try:
            image[i] = _read_band(path, np.uint16, shape)
        except Exception as e:  # any decoder failure is one "unreadable" problem for this file
            problems.append(Problem(path, _reason(e)))
    mask = None
    if pf.gt is not None:
        try:
            gt = _read_band(pf.gt, np.uint8, shape)
            bad = (gt != 0) & (gt != 255)
            if bad.any():
                values = ", ".join(str(v) for v in np.unique(gt[bad])[:5])
                problems.append(Problem(pf.gt, f"ground truth values other than 0/255: {values}"))
            mask = (gt == 255).astype(np.uint8)
        except Exception as e:
            problems.append(Problem(pf.gt, _reason(e)))
    return image, mask, problems


#: Where decoded rows go: (path, byte offset of row 0) of ``images.npy``, and of ``masks.npy`` or None.
Targets = tuple[tuple[Path, int], "tuple[Path, int] | None"]
#: Open row writers: (file descriptor, offset of row 0) for images, and for masks or None.
Writers = tuple[tuple[int, int], "tuple[int, int] | None"]


def _decode_chunk(
    items: Sequence[tuple[int, PatchFiles]], shape: tuple[int, int], writers: Writers | None
) -> list[tuple[int, bool, list[Problem]]]:
    """Decode patches and write each complete one to its rows; (row, nonempty, problems) each."""
    out = []
    for i, pf in items:
        image, mask, problems = read_patch(pf, shape)
        if not problems and writers is not None:
            for writer, array in zip(writers, (image, mask), strict=True):
                if writer is not None:
                    _write_row(writer, i, array)
        out.append((i, is_nonempty(image), problems))
    return out


def _write_row(writer: tuple[int, int], i: int, array: np.ndarray) -> None:
    # pwrite of disjoint rows: safe from threads and processes, and cheap for the kernel (stores into a
    # memmap of the new sparse file fault page by page: 2-10x the system time here).
    if os.pwrite(writer[0], array.data, writer[1] + i * array.nbytes) != array.nbytes:
        raise OSError(f"short write of row {i} (disk full?)")


def _open_writers(targets: Targets | None) -> Writers | None:
    if targets is None:
        return None
    images, masks = targets
    return (os.open(images[0], os.O_WRONLY), images[1]), (os.open(masks[0], os.O_WRONLY), masks[1]) if masks else None


def _close_writers(writers: Writers | None) -> None:
    for writer in writers or ():
        if writer is not None:
            os.fsync(writer[0])  # on disk before the cache folder is renamed into place
            os.close(writer[0])


def _serve() -> None:
    """A decoding worker process: (shape, targets), then chunks on stdin; each chunk's results on stdout."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the result stream
    shape, targets = pickle.load(inp)
    writers = _open_writers(targets)
    while True:
        try:
            items = pickle.load(inp)
        except EOFError:
            break
        pickle.dump(_decode_chunk(items, shape, writers), out)
        out.flush()
    _close_writers(writers)


def decode_all(
    patches: Sequence[PatchFiles],
    shape: tuple[int, int],
    targets: Targets | None,
    *,
    workers: int | None,
    processes: bool | None,
    progress: bool,
    desc: str,
) -> tuple[list[Problem], list[bool]]:
    """Decode every patch and write the complete ones to the rows of ``targets`` (see ``Targets``), if given.

    ``processes``: decode in ``workers`` worker processes (default ``DEFAULT_PROCESSES``) or, when
    False, in ``workers`` threads (default ``DEFAULT_WORKERS``); None picks processes from
    ``PROCESS_MIN_PATCHES`` patches on. Returns every problem and the non-empty flag of each patch.
    """
    n = len(patches)
    if processes is None:
        processes = n >= PROCESS_MIN_PATCHES and DEFAULT_PROCESSES > 1 and bool(sys.executable)
    workers = max(1, min(workers or (DEFAULT_PROCESSES if processes else DEFAULT_WORKERS), -(-n // _CHUNK)))
    chunks = iter(range(0, n, _CHUNK))
    lock = threading.Lock()
    failed = threading.Event()
    problems: list[Problem] = []
    nonempty = [False] * n

    def take() -> list[tuple[int, PatchFiles]] | None:
        with lock:
            start = None if failed.is_set() else next(chunks, None)
        return None if start is None else [(i, patches[i]) for i in range(start, min(start + _CHUNK, n))]

    def record(results: list[tuple[int, bool, list[Problem]]], bar: tqdm) -> None:
        with lock:
            for i, flag, found in results:
                nonempty[i] = flag
                problems.extend(found)
        bar.update(len(results))

    def in_thread(bar: tqdm, writers: Writers | None) -> None:
        try:
            while (items := take()) is not None:
                record(_decode_chunk(items, shape, writers), bar)
        except BaseException:
            failed.set()  # the other workers stop taking chunks
            raise

    def in_process(bar: tqdm) -> None:
        # The worker imports this module from the caller's sys.path (a checkout run without installing).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        code = "from harness.data.decode import _serve; _serve()"
        with subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        ) as proc:
            try:
                lost = False
                try:
                    pickle.dump((shape, targets), proc.stdin)
                    while (items := take()) is not None:
                        pickle.dump(items, proc.stdin)
                        proc.stdin.flush()
                        record(pickle.load(proc.stdout), bar)
                    proc.stdin.close()
                except (EOFError, BrokenPipeError):
                    lost = True  # the worker went away with a chunk unanswered
                if proc.wait() != 0 or lost:
                    raise RuntimeError(f"a decoding worker process died (exit status {proc.returncode})")
            except BaseException:
                failed.set()  # the other workers stop taking chunks
                proc.kill()
                raise
            finally:
                with contextlib.suppress(OSError):  # data still buffered for a dead worker
                    proc.stdin.close()

    with (
        tqdm(total=n, desc=desc, unit="patch", file=sys.stderr, disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        if processes:
            futures = [pool.submit(in_process, bar) for _ in range(workers)]
        else:
            writers = _open_writers(targets)  # shared by every thread
            futures = [pool.submit(in_thread, bar, writers) for _ in range(workers)]
        try:
            for future in futures:
                future.result()
        finally:
            if not processes:
                pool.shutdown()  # every thread done with the files before they are closed
                _close_writers(writers)
    return problems, nonempty
