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
    """Load ``directory``'s weights into ``model`` (strict) and put it in eval mode. A file that safetensors cannot
    read (truncated, damaged, not safetensors) or whose tensors do not fit the model (names, shapes) is a ValueError
    that says which file and what is wrong."""
    path = Path(directory) / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"no weights at {path}")
    try:
        state = load_file(path)
    except Exception as err:  # safetensors' own error types differ between versions
        raise ValueError(f"{path} ({path.stat().st_size:,} bytes) cannot be read as safetensors: it is truncated or "
                         f"damaged ({type(err).__name__}: {err}). Rebuild it with the command that made it, or "
                         "restore it (git checkout for a shipped backbone).") from err
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"the tensors of {path} do not fit the model its config.json describes: {err}") from err
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
