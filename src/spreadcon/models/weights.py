"""Local weight files for external backbones (timm, torchvision): read one, load it strictly.

    state = read_state_dict("resnet18.pth")        # {key: tensor}; .pt/.pth/.bin or .safetensors
    report = load_backbone_weights(backbone, state, classifier_prefixes=("fc",), in_chans=1)

A file is a plain state_dict, or a dict holding one under "state_dict" or "model" (timm's and
torchvision's training scripts save both); a DDP "module." prefix on every key is removed.
.pt/.pth files go through torch.load(weights_only=True): tensors only, no pickled code.
Loading is strict: only the classifier the backbone no longer has may be missing from the model
(its keys are dropped and reported). An input conv saved for 3 channels is adapted to in_chans
as timm adapts its pretrained weights (1 channel: sum over RGB; C channels: RGB repeated, scaled 3/C).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

NESTED_KEYS = ("state_dict", "model")
SHOWN = 5  # keys named in an error, per kind


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """{key: tensor} from a .safetensors file or a torch file (.pt, .pth, .bin) on local disk."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ImportError(f"reading {path.name} needs safetensors: pip install safetensors") from err
        state: Any = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickled objects other than tensors, a truncated file, not a torch file
            raise ValueError(f"weights file {str(path)!r} is not a torch state_dict readable with "
                             f"weights_only=True: {err}") from err
    return _plain(state, path)


def _plain(state: Any, path: Path) -> dict[str, Tensor]:
    """Unwrap {"state_dict": ...} / {"model": ...}, strip a DDP "module." prefix, check tensors."""
    for key in NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"weights file {str(path)!r} holds no state_dict ({{name: tensor}}, or one under "
                         f"{' or '.join(map(repr, NESTED_KEYS))})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """[O, 3, k, k] RGB conv weights -> [O, in_chans, k, k], timm's rule (same response to grey input)."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeat = -(-in_chans // weight.shape[1])
    return weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def load_backbone_weights(backbone: nn.Module, state: dict[str, Tensor], *, classifier_prefixes: tuple[str, ...] = (),
                          in_chans: int = 3, source: str = "weights") -> dict[str, list[str]]:
    """Load `state` into `backbone` strictly, save for the removed classifier.

    Keys under `classifier_prefixes` (the classifier replaced by Identity) are dropped; 4-D input
    conv weights saved for 3 channels are adapted to `in_chans`. Raises ValueError naming missing,
    unexpected and wrongly shaped keys (the first few and the counts). Returns {"dropped", "adapted"}.
    """
    own = backbone.state_dict()
    dropped = sorted(k for k in state if k not in own and any(k.startswith(p + ".") for p in classifier_prefixes))
    state = {k: v for k, v in state.items() if k not in dropped}
    adapted = [k for k, v in state.items() if k in own and _is_rgb_conv_for(v, own[k], in_chans)]
    state.update({k: adapt_input_conv(state[k], in_chans) for k in adapted})
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    problems = [_named(what, keys) for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    problems += [_named("wrongly shaped", [f"{k} (file {list(state[k].shape)}, model {list(own[k].shape)})"
                                           for k in shapes])] if shapes else []
    if problems:
        raise ValueError(f"{source}: the state_dict does not fit this backbone: {'; '.join(problems)}. Save the "
                         f"weights of the same model name (and the same image size for ViTs)")
    backbone.load_state_dict(state, strict=True)
    return {"dropped": dropped, "adapted": sorted(adapted)}


def _is_rgb_conv_for(saved: Tensor, own: Tensor, in_chans: int) -> bool:
    return (in_chans != 3 and saved.dim() == 4 and saved.shape[1] == 3 and own.shape[1] == in_chans
            and saved.shape[0] == own.shape[0] and saved.shape[2:] == own.shape[2:])


def _named(what: str, keys: list[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > SHOWN else ""
    return f"{len(keys)} {what} key(s): {', '.join(keys[:SHOWN])}{more}"
