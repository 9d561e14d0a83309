"""Build the network named by `model.name`, and check it against the dataset before anything runs.

    simple_cnn              the seed's SimpleCNN (widths, hidden from the config)
    torchvision:NAME        any torchvision classification builder, weights=None
    timm:NAME               any timm model, pretrained=False (optional extra: pip install 'stress[timm]')
    package.module:callable a user's factory, called as factory(num_classes=, image_size=, **model.kwargs)

`model.kwargs` goes to the torchvision and timm builders too, and `model.cifar_stem` adapts
their stem to 32x32 inputs (stress.models.layers.cifar_stem). Every failure to resolve or build
a model is a StressError with one line that names `model.name`.
"""

from __future__ import annotations

import importlib
import os
import sys

import torch
from torch import nn

from stress.config import ModelConfig
from stress.errors import StressError
from stress.models.layers import cifar_stem
from stress.models.simple_cnn import SimpleCNN

BUILTIN = "simple_cnn"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _torchvision(name: str, config: ModelConfig) -> nn.Module:
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)  # classification builders only
    if name not in known:
        close = [n for n in known if name.split("_")[0] in n][:8]
        raise StressError(f"model.name: torchvision has no classification model {name!r}"
                          f"{'; similar: ' + ', '.join(close) if close else ''}")
    return tvm.get_model(name, weights=None, num_classes=config.num_classes, **config.kwargs)


def _timm(name: str, config: ModelConfig) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise StressError(f"model.name: {config.name!r} needs timm, which is not installed; pip install 'stress[timm]'") from None
    if not timm.is_model(name):
        raise StressError(f"model.name: timm has no model {name!r}")
    return timm.create_model(name, pretrained=False, num_classes=config.num_classes, **config.kwargs)


def _search_working_directory() -> None:
    """Put the current directory first on sys.path, as `python -m` does, so that `stress run --model mymodels:net`
    finds mymodels.py there (an installed console script's path starts with its bin folder instead). Ray workers
    started by this driver search the same path."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _factory(spec: str, config: ModelConfig) -> nn.Module:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise StressError(f"model.name: {spec!r} is not simple_cnn, torchvision:NAME, timm:NAME or package.module:callable")
    _search_working_directory()
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - a user module can fail to import in any way
        raise StressError(f"model.name: cannot import {module_name!r} ({_first_line(exc)})") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise StressError(f"model.name: {module_name} has no callable {attribute!r}")
    try:
        return factory(num_classes=config.num_classes, image_size=config.image_size, **config.kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's factory raised
        raise StressError(f"model.name: {spec}(num_classes={config.num_classes}, image_size={config.image_size}"
                          f"{''.join(f', {k}={v!r}' for k, v in config.kwargs.items())}) raised {_first_line(exc)}") from None


def create_model(config: ModelConfig) -> nn.Module:
    """The untrained network of `config` (resolved: num_classes and image_size set), with no checks."""
    if config.name == BUILTIN:
        return SimpleCNN(config)
    family, _, name = config.name.partition(":")
    try:
        if family == "torchvision":
            model = _torchvision(name, config)
        elif family == "timm":
            model = _timm(name, config)
        else:
            model = _factory(config.name, config)
    except StressError:
        raise
    except Exception as exc:  # noqa: BLE001 - a builder refusing the kwargs or the class count
        raise StressError(f"model.name: building {config.name} failed ({_first_line(exc)})") from None
    if not isinstance(model, nn.Module):
        raise StressError(f"model.name: {config.name} returned a {type(model).__name__}, not a torch.nn.Module")
    if config.cifar_stem:
        model = cifar_stem(model)
    return model


def probe_batch(config: ModelConfig, n: int = 2) -> torch.Tensor:
    """A normalised-looking input batch of the configured shape: what the checks run the model on."""
    return torch.randn(n, config.in_channels, config.image_size, config.image_size, generator=torch.Generator().manual_seed(0))


def check_model(model: nn.Module, config: ModelConfig) -> None:
    """Raise StressError unless `model` maps a (2, C, S, S) batch to (2, num_classes) finite logits."""
    probe = probe_batch(config)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(probe)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's forward pass
        raise StressError(f"model.name: {config.name} cannot take a batch of shape {tuple(probe.shape)} "
                          f"({_first_line(exc)})") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise StressError(f"model.name: {config.name} returns a {type(out).__name__}, not a tensor of logits")
    if tuple(out.shape) != (len(probe), config.num_classes):
        raise StressError(f"model.name: {config.name} gives output of shape {tuple(out.shape)} for {len(probe)} images; "
                          f"expected ({len(probe)}, {config.num_classes}), one logit per class of the dataset")
