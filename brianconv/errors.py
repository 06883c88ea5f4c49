"""Exception and warning types raised by brianconv.

Every error names the problem (the layer, argument or file concerned) and the fix.
They all derive from :class:`BrianconvError`, so ``except brianconv.errors.BrianconvError``
catches anything the package raises on purpose.
"""


class BrianconvError(Exception):
    """Base class of every error brianconv raises on purpose."""


class ConversionError(BrianconvError, ValueError):
    """The torch model cannot be represented by the chosen coding scheme."""


class ShapeError(BrianconvError, ValueError):
    """Input data does not have the shape the model or network expects."""


class InvalidValueError(BrianconvError, ValueError):
    """Weights, inputs or parameters hold values that cannot be used (NaN, Inf, out of range)."""


class CalibrationError(BrianconvError, ValueError):
    """Calibration data is missing, empty or unusable."""


class UnknownMethodError(BrianconvError, KeyError):
    """A coding scheme name that is not registered."""

    def __str__(self):  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class DataNotFoundError(BrianconvError, FileNotFoundError):
    """A data set or model file is not where brianconv looked for it."""


class BuildError(BrianconvError, RuntimeError):
    """Brian2's C++ standalone build or run failed (compiler missing, compilation error, crash)."""


class MissingExtraError(BrianconvError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install brianconv[extra]`` command."""


class ClusterError(BrianconvError, ConnectionError):
    """A Dask cluster cannot be reached, or keeps losing the workers that run a task."""


class AccuracyWarning(UserWarning):
    """The conversion works but may lose accuracy (clipping, coarse quantisation, silent neurons)."""
