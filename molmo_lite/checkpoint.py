"""Checkpoints as safetensors weights + a JSON config, never pickle. Every saved model of the course uses these.

    directory/model.safetensors   the state dict
    directory/config.json         {section: the config dataclass as a dict, ...any extra facts}
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import TypeVar

from safetensors.torch import load_file, save_file
from torch import nn

C = TypeVar("C")


def save_checkpoint(model: nn.Module, directory: Path, section: str, extra: dict | None = None) -> Path:
    """Write ``model``'s weights and its ``model.config`` (a dataclass) under ``section``, plus ``extra`` facts."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "model.safetensors")
    meta = {section: asdict(model.config), **(extra or {})}
    (directory / "config.json").write_text(json.dumps(meta, indent=2))
    return directory


def read_config(directory: Path, section: str, config_class: type[C]) -> C:
    """The config saved under ``section`` (JSON lists back to tuples; keys the class does not know are ignored)."""
    saved = json.loads((Path(directory) / "config.json").read_text())[section]
    known = {f.name for f in fields(config_class)}
    return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known})


def load_weights(model: nn.Module, directory: Path) -> nn.Module:
    """Load ``directory``'s weights into ``model`` (strict) and put it in eval mode."""
    model.load_state_dict(load_file(Path(directory) / "model.safetensors"))
    return model.eval()


def hub_folder(source: str | Path, allow_patterns: list[str] | None = None) -> Path:
    """A local folder for ``source``: the folder itself when it exists, else a Hugging Face repository id downloaded
    (or found in the local Hub cache) with huggingface_hub. Offline and not cached: a RuntimeError saying what to do."""
    path = Path(source)
    if path.exists():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(source), allow_patterns=allow_patterns))
    except Exception as err:  # offline, unknown repo, gated model: say which and how to proceed
        raise RuntimeError(
            f"could not get {source!r} from the Hugging Face Hub ({type(err).__name__}: {err}). Offline? On a machine "
            f"with network access run `hf download {source} --local-dir DIR` (huggingface_hub's CLI) and pass DIR instead."
        ) from err
