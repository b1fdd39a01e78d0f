"""The device side works with TensorFlow unimportable, and the `device` extra needs none.

The branch model is made with TensorFlow here, in the test process; the device-side check
runs in a fresh interpreter where tensorflow/keras/tf_keras/tensorflow_* cannot be imported
(tools/device_smoke.py check).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tools" / "device_smoke.py"


def _smoke_module():
    spec = importlib.util.spec_from_file_location("device_smoke", SMOKE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("device-model")
    _smoke_module().make_branch_model(out)
    return out


def test_device_modules_work_without_tensorflow(model_dir):
    done = subprocess.run([sys.executable, str(SMOKE), "check", "--model-dir", str(model_dir)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "imports ok" in out and "TensorFlow blocked" in out
    assert re.search(r"branch int8 ok \(D=8, max \|LiteRT - Keras\|", out), out
    assert "messages + pooling ok" in out
    assert "no TensorFlow or Keras module imported" in out
    assert out.rstrip().endswith("device smoke: all steps passed")


def test_block_makes_tensorflow_and_keras_unimportable():
    """The check above could not pass by accident: the block really refuses them."""
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(SMOKE.parent)!r})\n"
        "import device_smoke\n"
        "sys.meta_path.insert(0, device_smoke.BlockTensorFlow())\n"
        "for name in ('tensorflow', 'keras', 'tf_keras', 'tensorflow_io', 'keras.layers',\n"
        "             'tensorflow.lite'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as e:\n"
        "        assert 'blocked' in str(e), (name, e)\n"
        "    else:\n"
        "        raise SystemExit(f'{name} imported')\n"
        "print('all blocked')\n"
    )
    done = _python(code)
    assert done.returncode == 0 and "all blocked" in done.stdout, done.stderr


def test_check_fails_when_tensorflow_was_imported():
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(SMOKE.parent)!r})\n"
        "import types\n"
        "sys.modules['tensorflow_probe'] = types.ModuleType('tensorflow_probe')\n"
        "import device_smoke\n"
        "device_smoke.check(None)\n"
    )
    done = _python(code)
    assert done.returncode != 0
    assert "blocked modules were imported before the check" in done.stderr


def test_importing_device_modules_pulls_in_no_tensorflow():
    done = _python(
        "import sys\n"
        "import slimedge, slimedge._core, slimedge.runtime.branch, slimedge.runtime.frames\n"
        "from slimedge.runtime.branch import BranchRunner\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', "
        "'tf_keras') or m.startswith('tensorflow_')]\n"
        "print('leaked:', bad)\n"
        "raise SystemExit(1 if bad else 0)\n"
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_device_extra_lists_no_tensorflow_or_keras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    device = project["optional-dependencies"]["device"]
    names = [re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-")
             for req in device]
    assert "ai-edge-litert" in names
    banned = [n for n in names if n in ("tensorflow", "tensorflow-cpu", "keras", "tf-keras")
              or n.startswith("tensorflow-")]
    assert not banned, f"device extra pulls in {banned}"
    # The base dependencies are installed on devices too.
    base = [re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower() for req in
            project["dependencies"]]
    assert not [n for n in base if "tensorflow" in n or "keras" in n]


def test_agent_command_line_imports_no_host_module():
    """`slimedge agent run` on a device: the agent, its transport, sources and MCU runner, and
    the command line that starts it, with TensorFlow blocked and no host-only module loaded."""
    done = _python(
        "import sys\n"
        f"sys.path.insert(0, {str(SMOKE.parent)!r})\n"
        "import device_smoke\n"
        "sys.meta_path.insert(0, device_smoke.BlockTensorFlow())\n"
        "import slimedge.runtime.agent, slimedge.runtime.commands, slimedge.runtime.mcu\n"
        "import slimedge.runtime.sources, slimedge.runtime.device_setup, slimedge.runtime.mqtt\n"
        "import slimedge.export.verify\n"
        "from slimedge import cli\n"
        "try:\n"
        "    cli.main(['agent', 'run', '--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "host = ('tensorflow', 'keras', 'tf_keras', 'pymoo', 'scipy', 'matplotlib')\n"
        "host_sub = ('slimedge.model', 'slimedge.ladder', 'slimedge.plan', 'slimedge.prune',\n"
        "            'slimedge.pipeline', 'slimedge.demo', 'slimedge.export.deploy')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in host or m.startswith(host_sub)]\n"
        "print('leaked:', bad)\n"
        "raise SystemExit(1 if bad else 0)\n"
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "--emulate-latency" in done.stdout and "leaked: []" in done.stdout
