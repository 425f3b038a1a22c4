"""The package as pip sees it: metadata, dependencies, wheel contents.

The wheel is built (setuptools' PEP 517 backend, no network) from a copy of
the files it is made of, so the work tree gets no build/ or egg-info/.
"""

import ast
import configparser
import email
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "keras_compact")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    source = tmp_path_factory.mktemp("source")
    for name in _SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns(
                "__pycache__", "*.pyc"))
        else:
            shutil.copy(path, source / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import "
         "build_meta; print(build_meta.build_wheel(sys.argv[1]))", str(out)],
        cwd=source, check=True, capture_output=True, timeout=300)
    (path,) = out.glob("*.whl")
    return zipfile.ZipFile(path)


def _dist_info(wheel, name):
    (member,) = [n for n in wheel.namelist()
                 if n.endswith(f".dist-info/{name}")]
    return wheel.read(member).decode()


def _version_in_source():
    tree = ast.parse(open(os.path.join(ROOT, "keras_compact",
                                       "__init__.py")).read())
    (value,) = [node.value.value for node in tree.body
                if isinstance(node, ast.Assign)
                and node.targets[0].id == "__version__"]
    return value


def test_tensorflow_is_never_a_hard_requirement(wheel):
    metadata = email.message_from_string(_dist_info(wheel, "METADATA"))
    requires = metadata.get_all("Requires-Dist")
    tensorflow = [r for r in requires if r.startswith("tensorflow")]
    # Every TensorFlow build comes only with an extra the user picks.
    assert tensorflow and all("extra ==" in r for r in tensorflow), tensorflow
    assert any(r.startswith("keras") and "extra" not in r for r in requires)
    extras = set(metadata.get_all("Provides-Extra"))
    assert {"cpu", "and-cuda"} <= extras
    cpu = [r for r in tensorflow if 'extra == "cpu"' in r]
    assert any(r.startswith("tensorflow-cpu") for r in cpu)


def test_metadata_has_one_version_license_readme_urls(wheel):
    metadata = email.message_from_string(_dist_info(wheel, "METADATA"))
    assert metadata["Name"] == "keras_compact"
    assert metadata["Version"] == _version_in_source()
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "keras-compact-cifar" in metadata.get_payload()  # the README
    assert metadata.get_all("Project-URL")
    assert any(c.startswith("Programming Language :: Python :: 3")
               for c in metadata.get_all("Classifier"))
    assert "Apache License" in wheel.read(
        [n for n in wheel.namelist() if n.endswith("licenses/LICENSE")][0]
    ).decode()
    # One version source, keras_compact.__version__: no literal version.
    pyproject = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert not re.search(r'^version\s*=\s*"', pyproject, re.M)
    assert 'dynamic = ["version"]' in pyproject
    assert not os.path.exists(os.path.join(ROOT, "setup.py"))


def test_only_keras_compact_is_installed(wheel):
    top = {name.split("/")[0] for name in wheel.namelist()}
    (dist_info,) = [t for t in top if t.endswith(".dist-info")]
    assert top == {"keras_compact", dist_info}
    names = set(wheel.namelist())
    # The recipes and command-line code ship inside the package.
    for module in ("configs/xnet.py", "configs/loader.py", "cli.py",
                   "trainers/cifar.py", "tools/profile.py"):
        assert f"keras_compact/{module}" in names


def test_console_scripts_name_a_run_function(wheel):
    entry_points = configparser.ConfigParser()
    entry_points.read_string(_dist_info(wheel, "entry_points.txt"))
    scripts = dict(entry_points["console_scripts"])
    assert {"keras-compact-cifar", "keras-compact-imagenet",
            "keras-compact-profile", "keras-compact-export",
            "keras-compact-benchmark", "keras-compact-contract"} <= set(
                scripts)
    for target in scripts.values():
        module, function = target.split(":")
        assert function == "run"
        spec = importlib.util.find_spec(module)
        source = open(spec.origin).read()
        assert "\ndef run():" in source, module
