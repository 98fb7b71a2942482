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
# that has torch iff the venv sees the system's (--system-site-packages), torchvision iff FAKE_TORCHVISION=1,
# and a pip that logs its arguments.
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
      cat > "$dir/bin/python" <<VENV
#!/usr/bin/env bash
echo "venv-python \$*" >> "\$FAKE_LOG"
case "\$2" in
  "import torch") exit $((1 - has_torch)) ;;
  "import torchvision") [ "\$FAKE_TORCHVISION" = 1 ]; exit ;;
  *split*) echo 11 ;;
esac
exit 0
VENV
      cat > "$dir/bin/pip" <<'PIP'
#!/usr/bin/env bash
echo "pip $*" >> "$FAKE_LOG"
case "$*" in *--index-url*) [ "$FAKE_CPU_INDEX" != down ] ;; esac
PIP
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
        "FAKE_TORCHVISION": "0",
        "FAKE_CPU_INDEX": "up",
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
    # No torch install at all: torchvision of torch 2.11's line (0.26), without dependencies that could
    # replace the interpreter's torch.
    assert pips == ["pip install -q --no-deps torchvision==0.26.*", "pip install -q -e .[dev]"]


def test_a_torchvision_already_there_is_kept(tmp_path):
    done, log = _run(tmp_path, version_ok=True, cuda_torch=True, gpu=True, FAKE_TORCHVISION="1")
    assert done.returncode == 0, done.stderr
    assert [line for line in log.splitlines() if line.startswith("pip ")] == ["pip install -q -e .[dev]"]


@pytest.mark.parametrize("gpu", [True, False])
def test_torch_is_pinned_on_every_path(tmp_path, gpu):
    done, log = _run(tmp_path, version_ok=True, cuda_torch=False, gpu=gpu)
    assert done.returncode == 0, done.stderr
    assert "python -m venv .venv" in log
    pips = [line for line in log.splitlines() if line.startswith("pip ")]
    if gpu:  # the CUDA builds, pinned
        assert pips[0] == "pip install -q torch==2.14.1 torchvision==0.29.1"
    else:  # the CPU builds, pinned, from the CPU index (tried once, briefly)
        assert pips[0] == (
            "pip install -q torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu"
            " --retries 1 --timeout 5"
        )
    assert pips[-1] == "pip install -q -e .[dev]"


def test_an_unreachable_cpu_index_falls_back_to_the_same_pins_from_the_package_index(tmp_path):
    done, log = _run(tmp_path, version_ok=True, cuda_torch=False, gpu=False, FAKE_CPU_INDEX="down")
    assert done.returncode == 0, done.stderr
    pips = [line for line in log.splitlines() if line.startswith("pip ")]
    assert pips[0].endswith("--index-url https://download.pytorch.org/whl/cpu --retries 1 --timeout 5")
    assert pips[1:] == ["pip install -q torch==2.14.1 torchvision==0.29.1", "pip install -q -e .[dev]"]
    assert "installing them from the package index" in done.stdout


def test_extras_and_torch_version_can_be_chosen(tmp_path):
    done, log = _run(
        tmp_path,
        version_ok=True,
        cuda_torch=False,
        gpu=True,
        EXTRAS="cluster",
        TORCH_VERSION="2.13.0",
        TORCHVISION_VERSION="0.28.0",
    )
    assert done.returncode == 0, done.stderr
    assert "pip install -q torch==2.13.0 torchvision==0.28.0" in log and "pip install -q -e .[cluster]" in log


def test_python_older_than_3_11_is_refused_before_anything_is_made(tmp_path):
    done, log = _run(tmp_path, version_ok=False, cuda_torch=True, gpu=True)
    assert done.returncode == 1
    assert "Python 3.10.12; the harness needs Python >= 3.11 (set PYTHON=...)" in done.stderr
    assert not (tmp_path / "repo" / ".venv").exists() and "venv" not in log
