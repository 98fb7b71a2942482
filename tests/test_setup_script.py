"""scripts/setup.sh decides how to get torch: the interpreter's CUDA torch, a pinned CUDA or CPU build.

The script runs for real, in a copy, with a stand-in interpreter that answers its questions (Python
version, torch present, CUDA build) and logs what the script asked it and its pip to do.
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"

# A stand-in python: `-c CODE` answers from FAKE_* variables, `-m venv [...] DIR` makes DIR with a python
# that has torch iff the venv sees the system's (--system-site-packages) and a pip that logs its arguments.
FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "python $*" >> "$FAKE_LOG"
case "$1" in
  -V) echo "Python $FAKE_VERSION" ;;
  -c) case "$2" in
        *version_info*) [ "$FAKE_VERSION_OK" = 1 ] ;;
        *torch.version.cuda*) [ "$FAKE_CUDA_TORCH" = 1 ] ;;
        *__version__*) echo 2.11.0+cu130 ;;
        *) exit 1 ;;
      esac ;;
  -m) dir="${@: -1}"; mkdir -p "$dir/bin"
      has_torch=0; [ "$3" = --system-site-packages ] && has_torch=1
      line='[ "$1 $2" = "-c import torch" ] && exit'
      printf '#!/usr/bin/env bash\necho "venv-python $*" >> "$FAKE_LOG"\n%s %s\nexit 0\n' \
        "$line" "$((1 - has_torch))" > "$dir/bin/python"
      printf '#!/usr/bin/env bash\necho "pip $*" >> "$FAKE_LOG"\n' > "$dir/bin/pip"
      chmod +x "$dir/bin/python" "$dir/bin/pip" ;;
esac
"""


def _run(
    tmp_path: Path, *, version_ok: bool, cuda_torch: bool, gpu: bool, **extra_env: str
) -> tuple[subprocess.CompletedProcess, str]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "setup.sh").write_text(SCRIPT.read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "fake-python"
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    if gpu:
        (bin_dir / "nvidia-smi").write_text("#!/usr/bin/env bash\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    log = tmp_path / "log"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHON": str(python),
        "FAKE_LOG": str(log),
        "FAKE_VERSION": "3.12.3" if version_ok else "3.10.12",
        "FAKE_VERSION_OK": "1" if version_ok else "0",
        "FAKE_CUDA_TORCH": "1" if cuda_torch else "0",
        **extra_env,
    }
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, env=env, capture_output=True, text=True)
    return done, log.read_text() if log.exists() else ""


def test_an_interpreter_with_cuda_torch_is_used_not_downloaded_again(tmp_path):
    done, log = _run(tmp_path, version_ok=True, cuda_torch=True, gpu=True)
    assert done.returncode == 0, done.stderr
    assert "python -m venv --system-site-packages .venv" in log
    assert "using the CUDA torch 2.11.0+cu130" in done.stdout
    pips = [line for line in log.splitlines() if line.startswith("pip ")]
    assert pips == ["pip install -q -e .[dev]"]  # no torch install at all


@pytest.mark.parametrize("gpu", [True, False])
def test_torch_is_pinned_on_every_path(tmp_path, gpu):
    done, log = _run(tmp_path, version_ok=True, cuda_torch=False, gpu=gpu)
    assert done.returncode == 0, done.stderr
    assert "python -m venv .venv" in log
    pips = [line for line in log.splitlines() if line.startswith("pip ")]
    if gpu:  # the CUDA build, pinned
        assert pips[0] == "pip install -q torch==2.13.0"
    else:  # the CPU build, pinned, from the CPU index
        assert pips[0] == "pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    assert pips[-1] == "pip install -q -e .[dev]"


def test_extras_and_torch_version_can_be_chosen(tmp_path):
    done, log = _run(tmp_path, version_ok=True, cuda_torch=False, gpu=True, EXTRAS="cluster", TORCH_VERSION="2.14.1")
    assert done.returncode == 0, done.stderr
    assert "pip install -q torch==2.14.1" in log and "pip install -q -e .[cluster]" in log


def test_python_older_than_3_11_is_refused_before_anything_is_made(tmp_path):
    done, log = _run(tmp_path, version_ok=False, cuda_torch=True, gpu=True)
    assert done.returncode == 1
    assert "Python 3.10.12; the harness needs Python >= 3.11 (set PYTHON=...)" in done.stderr
    assert not (tmp_path / "repo" / ".venv").exists() and "venv" not in log
