"""The torch-free rule: every runtime module imports, and a whole run works, in a process where
importing torch (or distill, which needs it) fails. The torch backend imports there too and fails
only when used."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from runtime.standin import build_standin as build_model
from tests.test_runtime import write_video

ROOT = Path(__file__).resolve().parents[1]

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "distill", "torchvision"):
                raise ImportError(f"blocked in this test: {name}")
            return None

    sys.meta_path.insert(0, Block())
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], cwd=ROOT, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, start_new_session=True)


def test_every_runtime_module_imports_without_torch():
    p = _run("""
        import pkgutil, importlib, json, sys
        import runtime
        names = ["runtime"] + [m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime.")
                               if not m.name.endswith("__main__")]
        for n in names:
            importlib.import_module(n)
        assert not any(k.split(".")[0] in ("torch", "distill") for k in sys.modules)
        print(json.dumps(names))
    """)
    assert p.returncode == 0, p.stderr
    names = json.loads(p.stdout)
    for must in ("runtime.pipeline", "runtime.bench", "runtime.doctor", "runtime.commands",
                 "runtime.backends.torch", "runtime.backends.tensorrt", "runtime.backends.onnxruntime"):
        assert must in names


def test_run_and_doctor_without_torch_and_torch_backend_fails_only_when_used(tmp_path):
    model = build_model(tmp_path / "m.onnx")
    video = write_video(tmp_path / "v.mp4", 3)
    pt2 = tmp_path / "m.pt2"
    pt2.write_bytes(b"not used")
    p = _run(f"""
        import sys
        from runtime.cli import main
        from runtime.pipeline import run
        from runtime.backends.base import BackendError
        from runtime.backends.torch import TorchBackend
        s = run({str(model)!r}, {str(video)!r}, out={str(tmp_path / 'o.mp4')!r})
        assert s["frames"] == 3, s
        assert main("python -m runtime", "", ["runtime.commands"], ["doctor"]) == 0
        assert not TorchBackend.is_available()
        try:
            TorchBackend({str(pt2)!r}).open()
        except BackendError as e:
            print("refused:", e)
        assert not any(k.split(".")[0] in ("torch", "distill") for k in sys.modules)
    """)
    assert p.returncode == 0, p.stderr
    assert "refused: the torch backend needs PyTorch" in p.stdout
