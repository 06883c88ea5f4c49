"""Typed scheme options: one frozen dataclass per scheme, every value checked once.

A scheme declares its options as a subclass of :class:`Options` whose fields are made with
:func:`option` (the default and the rule a value must follow: choices, integer, range, Brian2
unit). :class:`Options` checks every field when it is created and raises
:class:`~brianconv.errors.InvalidValueError` naming the option and what it accepts; unknown names
are rejected by :meth:`Options.create` with the list of valid ones. Values are read as attributes
(``scheme.options.t_max``). Brian2 checks method options against their defaults the same way
(``extract_method_options`` in ``brian2/stateupdaters/base.py``).

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Example(Options):
...     steps: int = option(8, integer=True, minimum=1)
>>> Example(steps=4).steps
4
"""

import dataclasses
import numbers
from dataclasses import dataclass, field

import numpy as np
from brian2 import get_dimensions, ms, mV, second, volt

from ..errors import InvalidValueError

__all__ = ["Options", "SchemeState", "option", "positive_number", "percentile_option", "dt_option", "v_unit_option"]

#: Words for the dimensions of :func:`option` units, used in messages.
_QUANTITY_NAMES = {get_dimensions(second): "time", get_dimensions(volt): "voltage"}


@dataclass(frozen=True)
class _Rule:
    """What a value of one option must be; ``describe`` says it in words, ``checked`` enforces it."""

    choices: tuple = None
    integer: bool = False
    minimum: float = None
    maximum: float = None
    greater_than: float = None
    unit: object = None
    optional: bool = False

    def describe(self):
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        if self.unit is not None:
            kind = _QUANTITY_NAMES.get(get_dimensions(self.unit), "quantity")
            return f"a positive {kind} (a Brian2 quantity, e.g. in {self.unit})" + (" or None" if self.optional else "")
        words = "an integer" if self.integer else "a number"
        low = (f"[{self.minimum}" if self.minimum is not None else
               f"({self.greater_than}" if self.greater_than is not None else "(-inf")
        high = f"{self.maximum}]" if self.maximum is not None else "inf)"
        return f"{words} in {low}, {high}"

    def accepts(self, value):
        if self.optional and value is None:
            return True
        if self.choices is not None:
            return any(value == choice and type(value) is type(choice) for choice in self.choices)
        if self.unit is not None:
            return _positive_quantity(value, self.unit)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
            return False
        if self.integer and int(value) != value:
            return False
        return ((self.minimum is None or value >= self.minimum) and (self.maximum is None or value <= self.maximum)
                and (self.greater_than is None or value > self.greater_than))

    def checked(self, scheme, name, value):
        """``value`` (an integer option as ``int``), or raise naming the option and what it accepts."""
        if not self.accepts(value):
            raise InvalidValueError(f"Option {name}={value!r} of method {scheme!r} is not valid: {name} must be "
                                    f"{self.describe()}.")
        return int(value) if self.integer else value


def _positive_quantity(value, unit):
    try:
        return get_dimensions(value) == get_dimensions(unit) and float(value / unit) > 0
    except Exception:  # not a number
        return False


def option(default, *, choices=None, integer=False, minimum=None, maximum=None, greater_than=None, unit=None,
           optional=False):
    """A field of an :class:`Options` dataclass: its default and the rule its values follow.

    Parameters
    ----------
    default
        The default value (Brian2 quantities are fine: they are given through a factory).
    choices : sequence, optional
        The only values allowed (compared with ``==`` and by type).
    integer : bool
        An integer (``4.0`` is accepted and stored as ``4``).
    minimum, maximum, greater_than : float, optional
        Inclusive bounds, and an exclusive lower bound.
    unit : brian2 unit, optional
        A positive Brian2 quantity with the dimensions of ``unit``.
    optional : bool
        None is allowed as well.
    """
    rule = _Rule(tuple(choices) if choices is not None else None, integer, minimum, maximum, greater_than, unit,
                 optional)
    metadata = {"rule": rule}
    if getattr(type(default), "__hash__", None) is None:  # e.g. a Brian2 Quantity (an ndarray)
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


def positive_number(name, value):
    """``float(value)`` for a real number > 0 (a run-time parameter such as ``threshold_scale``), else an
    :class:`~brianconv.errors.InvalidValueError` naming ``name``."""
    if not _Rule(greater_than=0).accepts(value):
        raise InvalidValueError(f"{name} must be a number > 0, got {value!r}.")
    return float(value)


def percentile_option(default):
    """The percentile (in (0, 100]) of a layer's calibration activations used as its scale."""
    return option(default, greater_than=0, maximum=100)


def dt_option(default=0.1 * ms):
    """The simulation step (a positive time)."""
    return option(default, unit=ms)


def v_unit_option(default=1 * mV):
    """Volts per ANN unit (a positive voltage)."""
    return option(default, unit=mV)


@dataclass(frozen=True)
class Options:
    """Base class of scheme options: a frozen dataclass whose fields are made with :func:`option`.

    Every field is checked against its rule when the object is created; :meth:`validate` adds
    checks that involve several options. :attr:`scheme` names the scheme in messages.
    """

    #: The scheme's name, for messages (set by each subclass).
    scheme = "scheme"

    def __post_init__(self):
        for f in dataclasses.fields(self):
            rule = f.metadata.get("rule")
            if rule is not None:
                object.__setattr__(self, f.name, rule.checked(self.scheme, f.name, getattr(self, f.name)))
        self.validate()

    def validate(self):
        """Raise :class:`~brianconv.errors.InvalidValueError` for combinations of values (default: none)."""

    @classmethod
    def names(cls):
        """The option names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def create(cls, **values):
        """The options from keyword arguments; unknown names raise, listing the valid ones."""
        unknown = [name for name in values if name not in cls.names()]
        if unknown:
            valid = ", ".join(cls.names()) or "none"
            raise InvalidValueError(f"Unknown option(s) {', '.join(map(repr, unknown))} for method {cls.scheme!r}; "
                                    f"its options are: {valid}.")
        return cls(**values)

    def as_dict(self):
        """``name -> value`` of every option (shallow)."""
        return {name: getattr(self, name) for name in self.names()}


@dataclass(frozen=True)
class SchemeState:
    """What a scheme needs after ``describe`` (attached to the description as ``description.state``).

    Each scheme subclasses it with its own fields (e.g. ``TTFSState.layout``); ``setup``,
    ``population_values`` and ``decode`` read them as attributes.

    Attributes
    ----------
    options : Options
        The options the network was described with.
    scales : dict
        ``layer name -> activation scale`` (ANN units) from calibration.
    """

    options: Options
    scales: dict
