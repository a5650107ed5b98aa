"""The method contract: a card describing the method, and an adapter with two abstract calls.

Room: what every reconstruction method looks like to the runner. Subclasses implement
:meth:`Method.load` and :meth:`Method.predict`; availability checks, file resolution,
revision hashing, batching, timing and error capture are concrete here. A method's own
cropping, detection and alignment live in its adapter, never in the runner.

Heavy third-party imports belong inside ``load()`` so that ``python -m benchmark ls methods``
stays cheap; a missing extra makes the method *skipped* (with the install command), never a
failure.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib.util
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from benchmark.provenance import file_sha256
from benchmark.types import Availability, FaceSample, Prediction

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RequiredFile:
    """A file a method needs that the suite cannot ship (official weights, model files).

    Attributes:
        key: option name (``--method-option deep3d.checkpoint=PATH`` / config key).
        env: environment variable that may hold the path.
        description: what the file is and where a user gets it.
    """

    key: str
    env: str
    description: str


@dataclasses.dataclass(frozen=True)
class MethodCard:
    """Metadata of a method, importable without its heavy dependencies.

    Attributes:
        name: registry id (lower-kebab).
        description: one line for listings.
        topology: name of the mesh topology it outputs.
        license: licence of the method's code/weights as used here.
        reference: URL of the paper or official code.
        citation: BibTeX or plain citation.
        revision: bump when the adapter's output changes (invalidates cached predictions).
        training_datasets: datasets its weights saw (contamination footnotes).
        required_files: files a user must supply.
        extra: pip extra that installs its dependencies, if any.
        python_modules: modules the extra must make importable.
        eyes_open_by_construction: the method cannot close eyes (e.g. MICA's neutral shape).
        batch_size: samples per call when the run does not say (``--batch-size``); larger
            for methods whose per-call cost hardly grows with the batch (per-image fitting
            in one optimisation), as long as a prediction does not depend on its batch.
    """

    name: str
    description: str
    topology: str
    license: str
    reference: str
    citation: str = ""
    revision: str = "1"
    training_datasets: tuple[str, ...] = ()
    required_files: tuple[RequiredFile, ...] = ()
    extra: str | None = None
    python_modules: tuple[str, ...] = ()
    eyes_open_by_construction: bool = False
    batch_size: int = 8


def read_torch_file(path: str | Path | None, what: str, fmt: str | None = None,
                    keys: tuple[str, ...] = ("state_dict",),
                    error: type[ValueError] = ValueError) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (no pickle code runs).

    Args:
        path: the file (its existence is the caller's check: messages differ).
        what: what the file is, for messages (``"ELAM+LDL checkpoint"``).
        fmt: when given, the file must be a dict with ``"format": fmt`` and every key of
            ``keys`` (this project's own checkpoint files).
        keys: keys a file of format ``fmt`` must hold.
        error: the ``ValueError`` subclass to raise.

    Raises:
        error: unreadable file, or not of format ``fmt`` (the message names the file).
    """
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise error(f"cannot read {what} {str(path)!r}: {exc}") from exc
    if fmt is not None and (not isinstance(data, dict) or data.get("format") != fmt
                            or any(k not in data for k in keys)):
        raise error(f"{str(path)!r} is not an eyebench {what} (format {fmt!r}).")
    return data


class Method(abc.ABC):
    """Base class of every reconstruction method adapter.

    Args:
        options: adapter options (paths to required files, hyper-parameters); a required
            file not given here is looked up in its environment variable.
    """

    card: ClassVar[MethodCard]

    #: Option keys the adapter reads besides its required files' keys (``--method-option
    #: NAME.KEY=VALUE``); any other key is refused (a contract test checks the list).
    option_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.check_options(options or {})
        self.options: dict[str, Any] = dict(options or {})
        self.device = "cpu"
        self._loaded = False

    @classmethod
    def accepted_options(cls) -> list[str]:
        """Every option key the method accepts: required files' keys and ``option_keys``."""
        return sorted({f.key for f in cls.card.required_files} | set(cls.option_keys))

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Raises ``ValueError`` (one line, the valid keys listed) for an unknown key."""
        unknown = sorted(set(options) - set(cls.accepted_options()))
        if unknown:
            valid = ", ".join(cls.accepted_options()) or "none"
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for method {cls.card.name!r}; "
                f"valid keys: {valid}."
            )

    # -- what subclasses implement -------------------------------------------------------
    @abc.abstractmethod
    def load(self, device: str) -> None:
        """Imports dependencies and loads weights onto ``device`` ("cpu" or "cuda")."""

    @abc.abstractmethod
    def predict(self, sample: FaceSample) -> Prediction:
        """Reconstructs one sample. May raise; :meth:`predict_safe` records the error."""

    def predict_batch(self, samples: Sequence[FaceSample]) -> list[Prediction]:
        """Reconstructs several samples; override when the method batches efficiently."""
        return [self.predict(s) for s in samples]

    def supports(self, dataset: Any) -> Availability:
        """Whether the method can run on ``dataset`` (e.g. an oracle needs ground truth)."""
        return Availability(True)

    def own_files(self) -> list[Path]:
        """Files shipped with the project that determine the output (e.g. checkpoints)."""
        return []

    # -- concrete machinery --------------------------------------------------------------
    def samples_per_call(self, requested: int | None = None) -> int:
        """Samples the runner hands :meth:`predict_batch` at once.

        One for a method that does not batch (each prediction is cached the moment it
        exists); else ``requested`` (the run's ``--batch-size``) or the card's batch size.
        """
        if type(self).predict_batch is Method.predict_batch:
            return 1
        return int(requested or self.card.batch_size)

    def resolve_file(self, key: str) -> Path | None:
        """The path given for required file ``key`` (option, then environment), or None."""
        spec = next((f for f in self.card.required_files if f.key == key), None)
        value = self.options.get(key)
        if value is None and spec is not None:
            value = os.environ.get(spec.env)
        return Path(value).expanduser() if value else None

    def load_checkpoint(self, key: str = "checkpoint", required: tuple[str, ...] = ()) -> dict:
        """Reads required file ``key`` with ``torch.load(weights_only=True)`` (no pickle code).

        Raises:
            ValueError: unreadable file, not a dict, or one of ``required`` keys missing
                (the message names the file and the keys).
        """
        path = self.resolve_file(key)
        ckpt = read_torch_file(path, f"{self.card.name} {key}")
        missing = [k for k in required if not isinstance(ckpt, dict) or k not in ckpt]
        if not isinstance(ckpt, dict) or missing:
            raise ValueError(f"{path} lacks {missing or 'a state dict'}; is it the official "
                             f"{self.card.name} {key}?")
        return ckpt

    def availability(self) -> Availability:
        """Checks extras and required files without loading anything heavy."""
        for module in self.card.python_modules:
            if importlib.util.find_spec(module) is None:
                extra = self.card.extra or self.card.name
                return Availability(
                    False,
                    f"python module {module!r} is not installed",
                    f"pip install -e '.[{extra}]'",
                )
        for spec in self.card.required_files:
            path = self.resolve_file(spec.key)
            if path is None:
                return Availability(
                    False,
                    f"needs {spec.description}",
                    f"set {spec.env}=/path or --method-option {self.card.name}.{spec.key}=/path",
                )
            if not path.is_file():
                return Availability(
                    False,
                    f"{spec.key} file {str(path)!r} does not exist",
                    f"point {spec.env} at the real file",
                )
        return Availability(True)

    def checkpoint_hashes(self) -> dict[str, str]:
        """sha256 of every file that determines the output (for provenance)."""
        paths = [self.resolve_file(f.key) for f in self.card.required_files] + self.own_files()
        return {str(p): file_sha256(p) for p in paths if p is not None and p.is_file()}

    def revision(self) -> str:
        """Identity of this method's output: card revision + hashes of the files it uses."""
        h = hashlib.sha256(f"{self.card.name}:{self.card.revision}".encode())
        for digest in sorted(self.checkpoint_hashes().values()):
            h.update(digest.encode())
        for key in sorted(self.options):
            if key not in {f.key for f in self.card.required_files}:
                h.update(f"{key}={self.options[key]!r}".encode())
        return h.hexdigest()[:12]

    def ensure_loaded(self, device: str = "cpu") -> None:
        """Calls :meth:`load` once."""
        if not self._loaded:
            self.device = device
            self.load(device)
            self._loaded = True

    def predict_safe(self, samples: Sequence[FaceSample]) -> list[Prediction]:
        """Like :meth:`predict_batch`, but a raising sample becomes an ``error`` record.

        If the batch call raises, samples are retried one by one so a single bad sample does
        not fail its neighbours. Wall time per sample is stored in ``extras["seconds"]``.
        """
        t0 = time.perf_counter()
        try:
            preds = self.predict_batch(samples)
            if len(preds) != len(samples):
                raise RuntimeError(
                    f"{self.card.name} returned {len(preds)} predictions for {len(samples)} samples"
                )
            dt = (time.perf_counter() - t0) / max(len(samples), 1)
            for p in preds:
                p.extras.setdefault("seconds", dt)
            return preds
        except KeyboardInterrupt:
            raise
        except Exception:
            if len(samples) == 1:
                return [self._error_prediction(samples[0], time.perf_counter() - t0)]
        out = []
        for s in samples:
            t1 = time.perf_counter()
            try:
                p = self.predict(s)
                p.extras.setdefault("seconds", time.perf_counter() - t1)
            except KeyboardInterrupt:
                raise
            except Exception:
                p = self._error_prediction(s, time.perf_counter() - t1)
            out.append(p)
        return out

    def _error_prediction(self, sample: FaceSample, seconds: float) -> Prediction:
        import sys

        exc = sys.exc_info()[1]
        msg = f"{type(exc).__name__}: {exc}"
        logger.debug("%s failed on %s", self.card.name, sample.id, exc_info=True)
        pred = Prediction.failed("error", msg)
        pred.extras["seconds"] = seconds
        return pred
