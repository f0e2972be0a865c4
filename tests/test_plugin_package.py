"""A third-party plugin package, installed into a fresh virtual environment, just works; where
it is not installed, its archives fail with one line naming the stage and the package."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "rftpack-dct"
KMEANS = ROOT / "plugins" / "rftpack-kmeans"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv that sees this environment's packages (rftpack and its dependencies) and
    gets the example plugin installed with pip, as a user would."""
    env = tmp_path_factory.mktemp("venv") / "env"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env)
    python = env / "bin" / "python"
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "--quiet", "--no-deps", "--no-build-isolation", str(PLUGIN),
                           str(KMEANS)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "no such option: --python" in done.stderr:
        pytest.skip("this pip cannot install into another interpreter")
    assert done.returncode == 0, done.stderr
    return python


def rftpack_in(python: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "rftpack", *args], capture_output=True,
                          text=True, timeout=300)


def test_installed_plugin_is_listed(plugin_env: Path) -> None:
    done = rftpack_in(plugin_env, "plugins", "--json")
    assert done.returncode == 0, done.stderr
    stages = {(s["kind"], s["id"]): s for s in json.loads(done.stdout)["stages"]}
    entry = stages[("transform", "example.dct2")]
    assert entry["provider"] == "rftpack-dct" and entry["version"] == "0.1.0"
    assert stages[("quantizer", "example.kmeans")]["provider"] == "rftpack-kmeans"


def test_plugin_round_trip_and_missing_plugin_error(plugin_env: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.normal(size=(64, 256)), axis=1).astype(np.float32) * 0.01
    source = tmp_path / "m.safetensors"
    save_file({"conv.weight": smooth, "ids": np.arange(4)}, str(source))
    archive, restored = tmp_path / "m.rftp", tmp_path / "r.safetensors"
    done = rftpack_in(plugin_env, "compress", str(source), "-o", str(archive), "-q",
                      "--transform", "example.dct2", "--no-predictor")
    assert done.returncode == 0, done.stderr
    done = rftpack_in(plugin_env, "extract", str(archive), "-o", str(restored), "-q")
    assert done.returncode == 0, done.stderr
    done = rftpack_in(plugin_env, "info", str(archive), "--json")
    assert "transform:example.dct2" in json.loads(done.stdout)["stages"]["lossy"]

    # This interpreter does not have the plugin: one line naming the stage and the package.
    done = rftpack_in(sys.executable, "extract", str(archive), "-o", str(tmp_path / "x.st"))
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "'example.dct2'" in done.stderr and "rftpack-dct" in done.stderr


def test_kmeans_plugin_round_trip(plugin_env: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    source = tmp_path / "m.safetensors"
    weight = (rng.laplace(size=(128, 128)) * 0.02).astype(np.float32)
    save_file({"w": weight}, str(source))
    archive, restored = tmp_path / "k.rftp", tmp_path / "k.safetensors"
    done = rftpack_in(plugin_env, "compress", str(source), "-o", str(archive), "-q",
                      "--transform", "identity", "--quantizer", "example.kmeans",
                      "--no-predictor", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["metrics"]["weight_snr_db"] > 15  # 16 levels, Laplacian
    done = rftpack_in(plugin_env, "extract", str(archive), "-o", str(restored), "-q")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("package", [PLUGIN, KMEANS], ids=lambda p: p.name)
def test_plugin_own_tests_pass(plugin_env: Path, package: Path) -> None:
    done = subprocess.run([str(plugin_env), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(package), str(package / "tests")],
                          capture_output=True, text=True, timeout=300, cwd=package)
    assert done.returncode == 0, done.stdout + done.stderr
