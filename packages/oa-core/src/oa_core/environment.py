"""What a bug report needs to know about this installation: Python, platform, the oa packages and plugins,
the versions of the libraries oa runs on, GPUs and broken plugins (``oa env``; run manifests)."""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import sys
from importlib import metadata
from typing import Any

from oa_core import __version__

OA_DISTRIBUTIONS = ("oa-core", "oa-command", "oa-data", "oa-oasst", "oa-kernels", "oa-train")
LIBRARIES = ("torch", "transformers", "accelerate", "peft", "datasets", "tokenizers", "safetensors", "deepspeed",
             "triton", "bitsandbytes", "flash-attn", "pydantic", "pluggy")


def environment_info(manager: Any = None, *, gpu: bool = True) -> dict[str, Any]:
    """A plain, JSON-ready dict: ``oa``, ``python``, ``platform``, ``packages`` (installed oa distributions ->
    version), ``plugins`` (every loaded plugin: name, distribution, version), ``disabled``, ``libraries``
    (name -> version, None where not installed), ``gpu`` and ``broken`` (plugin failures, one line each).

    ``manager``: the :class:`~oa_core.plugins.PluginManager` to describe (default: this process's). Versions
    come from package metadata; only :func:`gpu_info` imports torch (and initialises CUDA in this process):
    ``gpu=False`` skips it (``gpu`` is None).
    """
    from oa_core import plugins

    if manager is None:
        manager, registry = plugins.get_plugin_manager(), plugins.get_registry()
    else:
        registry = manager.registry()
    return {
        "oa": __version__,
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": platform.platform(),
        "packages": {name: v for name in OA_DISTRIBUTIONS if (v := _version(name)) is not None},
        "plugins": [{"name": p.plugin, "distribution": p.distribution, "version": p.version}
                    for p in manager.providers.values()],
        "disabled": manager.disabled,
        "libraries": {name: _version(name) for name in LIBRARIES},
        "gpu": gpu_info() if gpu else None,
        "broken": [str(f) for f in registry.failures],
    }


def gpu_info() -> dict[str, Any] | None:
    """CUDA as torch sees it (None when torch is not installed): the CUDA/HIP version torch was built with,
    whether a GPU is usable, the visible devices (name, compute capability, memory), NCCL, the NVIDIA driver
    and ``CUDA_VISIBLE_DEVICES``; ``error`` when torch fails to import or to query the devices."""
    if importlib.util.find_spec("torch") is None:
        return None
    info: dict[str, Any] = {"cuda_build": None, "hip_build": None, "available": False, "count": 0, "devices": [],
                            "nccl": None, "driver": _nvidia_driver(),
                            "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        import torch

        info |= {"cuda_build": torch.version.cuda, "hip_build": getattr(torch.version, "hip", None)}
        if torch.cuda.is_available():
            props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
            info |= {"available": True, "count": len(props),
                     "devices": [{"name": p.name, "capability": f"{p.major}.{p.minor}",
                                  "memory_gib": round(p.total_memory / 2**30, 1)} for p in props]}
            if torch.distributed.is_available() and torch.distributed.is_nccl_available():
                nccl = torch.cuda.nccl.version()
                info["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
    except Exception as e:  # a broken torch or driver is what the report is for
        info["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
    return info


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _nvidia_driver() -> str | None:
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as f:
            found = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d[\w.-]*)", f.read())
    except OSError:
        return None
    return found.group(1) if found else None
