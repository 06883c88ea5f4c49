"""Biophysical perturbations of a converted network: leak, noise, refractoriness, failures, mismatch, delays.

(Longer than the ~400 lines of a module, 460 lines of which 60 are this docstring: the knobs'
equations, their counter-based generator in three code targets (C++, Cython, numpy) and the run-
value plumbing stay in one module, so that the one place that rewrites descriptions is read at
once.)

``convert(model, method, perturbations=("tau_m", "sigma_v", ...))`` (or ``"all"``) compiles the
terms of the chosen knobs into the description once (:func:`compile_knobs`); the knobs are then
run-time parameters of ``simulate`` and ``sweep`` with the same names in every scheme, applied
through the run values (Brian2 ``run_args`` in standalone), so no value of a knob recompiles
anything. ``convert`` without ``perturbations`` builds exactly the network it always did.

The knobs act on the populations a scheme marks with a :class:`~brianconv.description.Membrane`
(its spiking neurons; inputs, readouts, gates and helper neurons stay ideal) and on every
projection with a weight ``w``:

``tau_m`` (Brian2 time or None)
    Membrane leak: every step ``v <- v exp(-dt / tau_m)`` (None: no leak).
``t_ref`` (Brian2 time)
    Refractory period: the threshold is blocked for ``t_ref`` after a spike (Brian2's
    ``refractory``); input is still integrated, so a rate saturates at ``1 / t_ref``.
``sigma_v`` (Brian2 voltage, or a plain number: a fraction of the neuron's threshold)
    White membrane noise, Euler-Maruyama: every step ``v <- v + sigma_v * g`` with ``g`` standard
    normal, so a free membrane's variance grows as ``sigma_v**2 * t / dt``. The noise is set per
    step: at a fixed ``sigma_v`` a finer ``dt`` means more noise per unit time; to keep a diffusion
    constant ``D`` (V**2/s) use ``sigma_v = sqrt(D * dt)``. A plain number is relative to the
    largest threshold of the population in this run (one threshold for rate and ttfs layers,
    the first neuron's of an AMOS unit); tdsnn's threshold is 0 V, there it is relative to the
    potential of ``lambda`` ANN units at the end of the inhibition (``Membrane.reference``).
``sigma_th`` (plain number)
    Threshold mismatch: neuron ``i``'s threshold times ``max(1 + sigma_th * g_i, 0)``, a fixed
    pattern for a given ``seed``, wherever the neuron compares with or resets by its threshold
    (a spike still carries what the scheme sends, e.g. rate's ``v_th_pre``).
``p_fail`` (probability)
    Each transmission (synapse and spike) fails independently with probability ``p_fail``.
``sigma_w`` (plain number)
    Multiplicative weight noise: synapse ``(i, j)`` transmits ``w (1 + sigma_w * g_ij)``, a fixed
    pattern for a given ``seed``.
``sigma_delay`` (Brian2 time)
    Synaptic delay jitter: synapse ``(i, j)`` transmits ``round(|g_ij| * sigma_delay / dt)`` steps
    later than the scheme's own delay (half-normal, a fixed pattern for a given ``seed``: a delay
    can only be longer; at most one image period). A spike that the jitter carries past the end of
    its image's period at the target is lost, never added to the next image (so batching changes
    nothing). The delays of a projection with this knob are stored per synapse and set before
    every run from the run's ``seed`` and ``sigma_delay``
    (:attr:`~brianconv.description.Projection.before_run`).
``weight_bits`` (int or None)
    Weights rounded to ``2**(bits - 1) - 1`` levels of each projection's largest ``|w|`` (signed,
    symmetric); None: full precision.
``seed`` (int)
    Keys every draw.

Every draw comes from the counter-based generator :func:`perturb_normal` (two SplitMix64 uniforms,
:func:`perturb_uniform`, as the Poisson input's :func:`~brianconv.schemes.rate.uniform_hash`, and
Box-Muller; a failure is a normal draw below the ``p_fail`` quantile) keyed on ``(seed, stream, neuron
or synapse, step)``, where the stream names the knob and the population or projection, and the
step counts from the first image of the whole input: the same draws on every device, batch
size and number of workers. (Refractoriness is the exception to batch-size independence in
one respect: a spike at the end of one batch's last image does not block the next batch.)
Where ``sigma_v`` is the (only) membrane knob a scheme keeps at its default, the compiled terms
multiply by 1 and add 0: every knob at its default reproduces the unperturbed spikes exactly.
"""

import re
from dataclasses import replace

import numpy as np
from brian2 import Equations, check_units, declare_types, get_dimensions, implementation, ms, second, volt
from brian2.utils.stringtools import word_substitute

from .errors import InvalidValueError
from .schemes.poisson import _np_mix, uniform_hash

__all__ = ["KNOBS", "DEFAULTS", "compile_knobs", "setup_run", "check_run_parameters", "perturb_uniform",
           "perturb_normal"]

#: Knob -> default (the unperturbed network).
DEFAULTS = dict(tau_m=None, t_ref=0 * ms, sigma_v=0.0, sigma_th=0.0, p_fail=0.0, sigma_w=0.0, sigma_delay=0 * ms,
                weight_bits=None, seed=0)
KNOBS = tuple(DEFAULTS)
#: Knobs acting on neurons (need a Membrane) and on projections (need a weight ``w``).
NEURON_KNOBS = ("tau_m", "t_ref", "sigma_v", "sigma_th")
SYNAPSE_KNOBS = ("p_fail", "sigma_w", "sigma_delay", "weight_bits")
#: Stream ids: the knob in the high bits, the population/projection number in the low 24.
_STREAM = dict(sigma_v=1 << 24, sigma_th=2 << 24, p_fail=3 << 24, sigma_w=4 << 24, sigma_delay=5 << 24)
_SECOND_UNIFORM = 1 << 30   # the second uniform of a Box-Muller pair comes from stream | 2**30
_SLOT = "before_thresholds"
#: Run-time variable of a synapse knob: a transmission fails when its normal draw is below
#: ``p_fail_z``, the ``p_fail`` quantile of the standard normal (one draw function in the code).
_VARIABLE = dict(weight_bits="weight_levels", p_fail="p_fail_z", sigma_delay="sigma_delay_steps")
_NEVER = 1e300   # the quantile of p_fail = 0 (-) and 1 (+)

# ---------------------------------------------------------------------------------------------
# counter-based draws (C++, Cython and numpy agree bit for bit; uniform_hash's mixer is shared)
# ---------------------------------------------------------------------------------------------

_CPP = """
static inline double perturb_uniform(int32_t seed, int32_t stream, int32_t a, int32_t b, int32_t step) {
    const uint64_t g = 0x9E3779B97F4A7C15ULL;
    uint64_t z = _brianconv_mix((uint64_t)(uint32_t)seed + g);
    z = _brianconv_mix(z ^ ((uint64_t)(uint32_t)stream + g));
    z = _brianconv_mix(z ^ ((uint64_t)(uint32_t)a + g));
    z = _brianconv_mix(z ^ ((uint64_t)(uint32_t)b + g));
    z = _brianconv_mix(z ^ ((uint64_t)(uint32_t)step + g));
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}
static inline double perturb_normal(int32_t seed, int32_t stream, int32_t a, int32_t b, int32_t step) {
    const double u1 = _perturb_u(seed, stream, a, b, step);
    const double u2 = _perturb_u(seed, stream | 1073741824, a, b, step);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}
"""
_CYTHON = """
from libc.stdint cimport uint64_t, uint32_t
from libc.math cimport sqrt, log, cos
cdef inline double perturb_uniform(int seed, int stream, int a, int b, int step):
    cdef uint64_t g = <uint64_t>0x9E3779B97F4A7C15ULL
    cdef uint64_t z = _brianconv_mix(<uint64_t><uint32_t>seed + g)
    z = _brianconv_mix(z ^ (<uint64_t><uint32_t>stream + g))
    z = _brianconv_mix(z ^ (<uint64_t><uint32_t>a + g))
    z = _brianconv_mix(z ^ (<uint64_t><uint32_t>b + g))
    z = _brianconv_mix(z ^ (<uint64_t><uint32_t>step + g))
    return <double>(z >> 11) * (1.0 / 9007199254740992.0)

cdef inline double perturb_normal(int seed, int stream, int a, int b, int step):
    cdef double u1 = _perturb_u(seed, stream, a, b, step)
    cdef double u2 = _perturb_u(seed, stream | 1073741824, a, b, step)
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2)
"""
_TYPES = dict(seed="integer", stream="integer", a="integer", b="integer", step="integer", result="float")
_UNITS = dict(seed=1, stream=1, a=1, b=1, step=1, result=1)


def _uniform_numpy(seed, stream, a, b, step):
    def word(value):
        return np.asarray(value, dtype=np.int64).astype(np.uint32).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)

    with np.errstate(over="ignore"):
        z = _np_mix(word(seed))
        for value in (stream, a, b, step):
            z = _np_mix(z ^ word(value))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


@implementation("cpp", _CPP.split("static inline double perturb_normal")[0],
                dependencies={"uniform_hash": uniform_hash})
@implementation("cython", _CYTHON.split("cdef inline double perturb_normal")[0],
                dependencies={"uniform_hash": uniform_hash})
@declare_types(**_TYPES)
@check_units(**_UNITS)
def perturb_uniform(seed, stream, a, b, step):
    """A uniform number in [0, 1) that depends only on its five integer arguments (53-bit resolution).

    >>> float(perturb_uniform(1, 2, 3, 4, 5)) == float(perturb_uniform(1, 2, 3, 4, 5))
    True
    """
    return _uniform_numpy(seed, stream, a, b, step)


@implementation("cpp", _CPP.replace("double perturb_uniform", "double _perturb_u"),
                dependencies={"uniform_hash": uniform_hash})
@implementation("cython", _CYTHON.replace("double perturb_uniform", "double _perturb_u"),
                dependencies={"uniform_hash": uniform_hash})
@declare_types(**_TYPES)
@check_units(**_UNITS)
def perturb_normal(seed, stream, a, b, step):
    """A standard normal number from two :func:`perturb_uniform` draws (Box-Muller, streams ``s`` and ``s | 2**30``)."""
    stream = np.asarray(stream, dtype=np.int64)
    u1 = _uniform_numpy(seed, stream, a, b, step)
    u2 = _uniform_numpy(seed, stream | _SECOND_UNIFORM, a, b, step)
    return np.sqrt(-2.0 * np.log(1.0 - u1)) * np.cos(6.283185307179586 * u2)


# ---------------------------------------------------------------------------------------------
# compiling the knobs into a description
# ---------------------------------------------------------------------------------------------

_COMMON = """
perturb_seed : integer (constant, shared)
perturb_first_image : integer (constant, shared)   # index of the batch's first image in the whole input
"""
_ODE = re.compile(r"\s*d\w+\s*/\s*dt\s*=")
_GLOBAL_STEP = "(perturb_first_image * period_steps + t_in_timesteps)"


def requested_knobs(scheme, perturbations):
    """The knobs to compile: ``perturbations`` (names or ``"all"``), checked against the scheme.

    ``"all"`` means every knob the scheme supports; a named knob the scheme cannot take raises
    :class:`~brianconv.errors.InvalidValueError` with the scheme's reason.
    """
    if perturbations is None or perturbations == ():
        return ()
    unsupported = scheme.unsupported_perturbations()
    if perturbations == "all":
        return tuple(k for k in KNOBS if k not in unsupported)
    names = (perturbations,) if isinstance(perturbations, str) else tuple(perturbations)
    unknown = [k for k in names if k not in KNOBS]
    if unknown:
        raise InvalidValueError(f"Unknown perturbation(s) {unknown}; the knobs are {', '.join(KNOBS)} (or 'all').")
    rejected = {k: unsupported[k] for k in names if k in unsupported}
    if rejected:
        reasons = "; ".join(f"{k}: {reason}" for k, reason in rejected.items())
        raise InvalidValueError(f"Method {scheme.name!r} cannot take the perturbation(s) {sorted(rejected)}. {reasons}")
    return tuple(k for k in KNOBS if k in names or k == "seed")


def compile_knobs(description, knobs):
    """A copy of ``description`` with the terms of ``knobs`` (from :func:`requested_knobs`) compiled in."""
    if not knobs:
        return description
    neuron_knobs = [k for k in knobs if k in NEURON_KNOBS]
    synapse_knobs = [k for k in knobs if k in SYNAPSE_KNOBS]
    weighted = {q.name for q in description.projections if synapse_knobs and _has_weight(q)}
    targets = {q.target for q in description.projections if q.name in weighted}
    populations = []
    for number, p in enumerate(description.populations):
        extra, p = "", p
        if p.membrane is not None and neuron_knobs:
            p = _perturbed_neurons(p, number, neuron_knobs)
        if p.name in targets:
            extra += "".join(f"{_VARIABLE.get(k, k)} : 1 (constant, shared)\n" for k in synapse_knobs)
        if p.name in targets or (p.membrane is not None and neuron_knobs):
            p = replace(p, equations=p.equations + _COMMON + extra)
        populations.append(p)
    _check_targets(description, populations, neuron_knobs, synapse_knobs, weighted)
    projections = [_perturbed_projection(q, number, synapse_knobs) if q.name in weighted else q
                   for number, q in enumerate(description.projections)]
    return replace(description, populations=populations, projections=projections, perturbations=tuple(knobs))


def _has_weight(projection):
    return "w" in Equations(projection.model).names


def _check_targets(description, populations, neuron_knobs, synapse_knobs, weighted):
    """Raise for a knob that has nothing to act on in this network."""
    membranes = [p for p in populations if p.membrane is not None]
    missing = [k for k in neuron_knobs if not membranes]
    if "tau_m" in neuron_knobs and not any(p.membrane.integrates for p in membranes):
        missing.append("tau_m")
    if "sigma_th" in neuron_knobs and not any(p.membrane.threshold for p in membranes):
        missing.append("sigma_th")
    if synapse_knobs and not weighted:
        missing += synapse_knobs
    if missing:
        raise InvalidValueError(f"The {description.scheme} network has nothing for the perturbation(s) "
                                f"{sorted(set(missing))} to act on (no spiking neurons with a membrane, threshold "
                                "or leak, or no weighted synapses); leave them out of perturbations=.")


def _perturbed_neurons(p, number, knobs):
    """Population ``p`` with the neuron knobs' variables, per-step code, refractoriness and threshold gain."""
    m = p.membrane
    equations, regular, refractory = p.equations, dict(p.regular), p.refractory
    terms = []
    if "tau_m" in knobs and m.integrates:
        equations += "leak_factor : 1 (constant, shared)   # exp(-dt / tau_m), 1 without leak\n"
        terms.append(f"{m.variable} = {m.variable} * leak_factor")
    if "sigma_v" in knobs:
        equations += "noise_sigma : volt (constant, shared)   # noise added per step\n"
        terms.append(f"{m.variable} = {m.variable} + started * noise_sigma * perturb_normal(perturb_seed, "
                     f"{_STREAM['sigma_v'] + number}, i, 0, {_GLOBAL_STEP})")
    if terms:
        regular["perturb_membrane"] = ("\n".join(terms), _SLOT)
    if "t_ref" in knobs and p.threshold:
        equations += "t_ref : second (constant, shared)\n"
        refractory = "t_ref"
    threshold, reset, events = p.threshold, p.reset, p.events
    if "sigma_th" in knobs and m.threshold:
        equations = _substitute_subexpressions(equations, m.threshold) + "threshold_gain : 1 (constant)\n"
        gain = {m.threshold: f"({m.threshold} * threshold_gain)"}
        threshold = word_substitute(threshold, gain) if threshold else threshold
        reset = word_substitute(reset, gain) if reset else reset
        events = {name: (word_substitute(event[0], gain), word_substitute(event[1], gain)) + tuple(event[2:])
                  for name, event in events.items()}
    namespace = dict(p.namespace, perturb_normal=perturb_normal)
    return replace(p, equations=equations, regular=regular, refractory=refractory, threshold=threshold, reset=reset,
                   events=events, namespace=namespace)


def _substitute_subexpressions(equations, threshold):
    """``equations`` with ``threshold`` times ``threshold_gain`` in every subexpression that reads it."""
    lines = []
    for line in equations.splitlines():
        body = line.split("#")[0]
        if "=" in body and not _ODE.match(body) and threshold in Equations(body).identifiers:
            name, rest = body.split("=", 1)
            expr, unit = rest.rsplit(":", 1)
            body = f"{name}= {word_substitute(expr, {threshold: f'({threshold} * threshold_gain)'})}:{unit}"
            line = body
        lines.append(line)
    return "\n".join(lines) + "\n"


def _perturbed_projection(q, number, knobs):
    """Projection ``q`` whose ``w`` is quantised, noisy and may fail, and whose delays jitter, per the knobs."""
    weight = "w"
    if "weight_bits" in knobs:
        scale = float(np.max(np.abs(q.connections.weight))) if len(q.connections) else 1.0
        scale = (scale or 1.0) * float(q.weight_unit / volt if get_dimensions(q.weight_unit) == volt.dim
                                       else q.weight_unit)
        unit = " * volt" if get_dimensions(q.weight_unit) == volt.dim else ""
        on = "int(weight_levels_post > 0)"
        levels = "clip(weight_levels_post, 1, 1e300)"
        weight = (f"(w * (1 - {on}) + {on} * ({scale!r}{unit}) * "
                  f"floor(w / ({scale!r}{unit}) * {levels} + 0.5) / {levels})")
    if "sigma_w" in knobs:
        weight += f" * (1 + sigma_w_post * perturb_normal(perturb_seed_post, {_STREAM['sigma_w'] + number}, i, j, 0))"
    if "p_fail" in knobs:
        weight += (f" * int(perturb_normal(perturb_seed_post, {_STREAM['p_fail'] + number}, i, j, "
                   f"perturb_first_image_post * period_steps_post + t_in_timesteps) >= p_fail_z_post)")
    model, before_run = q.model, q.before_run
    if "sigma_delay" in knobs:
        # the image whose window reads this transmission (one step after it arrives), with and without the jitter
        weight += " * int(" + " == ".join(f"((t_in_timesteps + 1{late} - window_start_post) // period_steps_post)"
                                          for late in ("", " - delay_jitter")) + ")"
        model += "\ndelay_jitter : integer (constant)   # steps added to this synapse's delay (sigma_delay)\n"
        jitter = (f"abs(sigma_delay_steps_post * perturb_normal(perturb_seed_post, {_STREAM['sigma_delay'] + number}, "
                  "i, j, 0))")
        before_run += (("delay_jitter", f"int(floor(clip({jitter}, 0, period_steps_post) + 0.5))"),
                       ("delay", "delay + delay_jitter * dt"))
    namespace = dict(q.namespace, perturb_normal=perturb_normal)
    return replace(q, model=model, on_pre=word_substitute(q.on_pre, {"w": f"({weight})"}), namespace=namespace,
                   before_run=before_run)


# ---------------------------------------------------------------------------------------------
# run-time values
# ---------------------------------------------------------------------------------------------

def check_run_parameters(scheme, description, parameters):
    """Raise for names that are neither run-time parameters of the scheme nor compiled knobs."""
    compiled = set(description.perturbations)
    knobs = [name for name in parameters if name in KNOBS and name in compiled]
    stray = [name for name in parameters if name in KNOBS and name not in compiled
             and name not in (scheme.run_parameters() or ())]
    if stray:
        raise InvalidValueError(f"{', '.join(map(repr, stray))} is a perturbation knob not compiled into this network; "
                                f"convert with perturbations={tuple(stray)!r} (or 'all') to set it at run time.")
    scheme.check_run_parameters([name for name in parameters if name not in knobs])
    return parameters


def setup_run(scheme, description, parameters):
    """The scheme's :class:`~brianconv.schemes.RunSetup` for ``parameters``, plus the knobs' run values."""
    check_run_parameters(scheme, description, parameters)
    compiled = tuple(description.perturbations)
    knobs = {k: parameters[k] for k in parameters if k in compiled}
    own = {k: v for k, v in parameters.items() if k not in knobs or _also_scheme_seed(scheme, description, k)}
    setup = scheme.setup(description, **own)
    if not compiled:
        return setup
    values = dict(DEFAULTS, **knobs)
    _check_values(values)
    run_values, targets = _knob_values(description, setup, compiled, values)
    setup.values.update(run_values)
    setup.image_index_targets = tuple(setup.image_index_targets) + tuple(targets)
    setup.parameters.update({k: values[k] for k in compiled})
    return setup


def _also_scheme_seed(scheme, description, name):
    """``seed`` keys the scheme's own draws too (rate's Poisson input, whose population has a seed)."""
    if name != "seed" or "seed" not in (scheme.run_parameters() or ()):
        return False
    return "seed" in description.population(description.input_population).values


def _check_values(v):
    if v["tau_m"] is not None:
        _positive_quantity("tau_m", v["tau_m"], second, "time (or None)")
    _non_negative_quantity("t_ref", v["t_ref"], second)
    if not _is_number(v["sigma_v"]):
        _non_negative_quantity("sigma_v", v["sigma_v"], volt)
    elif v["sigma_v"] < 0:
        raise InvalidValueError(f"sigma_v must be >= 0 (a voltage or a fraction of the threshold), got {v['sigma_v']}.")
    _non_negative_quantity("sigma_delay", v["sigma_delay"], second)
    for name in ("sigma_th", "sigma_w"):
        if not _is_number(v[name]) or v[name] < 0:
            raise InvalidValueError(f"{name} is a relative spread and must be a number >= 0, got {v[name]!r}.")
    if not _is_number(v["p_fail"]) or not 0 <= v["p_fail"] <= 1:
        raise InvalidValueError(f"p_fail is a probability and must be in [0, 1], got {v['p_fail']!r}.")
    bits = v["weight_bits"]
    if bits is not None and (isinstance(bits, bool) or int(bits) != bits or not 2 <= bits <= 32):
        raise InvalidValueError(f"weight_bits must be an integer in [2, 32] or None, got {bits!r}.")
    seed = v["seed"]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 31:
        raise InvalidValueError(f"seed must be an integer in [0, 2**31), got {seed!r}.")


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and \
        get_dimensions(value).is_dimensionless


def _positive_quantity(name, value, unit, kind):
    if get_dimensions(value) != get_dimensions(unit) or not float(value / unit) > 0:
        raise InvalidValueError(f"{name} must be a positive {kind} (e.g. 20 * ms), got {value!r}.")


def _non_negative_quantity(name, value, unit):
    if get_dimensions(value) != get_dimensions(unit) or not float(value / unit) >= 0:
        raise InvalidValueError(f"{name} must be a Brian2 quantity >= 0 in units of {unit}, got {value!r}.")


def _knob_values(description, setup, compiled, v):
    """``(population, variable) -> value`` of the knobs, and the populations told the batch's first image."""
    values, targets = {}, []
    dt = description.dt
    for number, p in enumerate(description.populations):
        variables = _declared(p)
        if "perturb_seed" not in variables:
            continue
        values[(p.name, "perturb_seed")] = int(v["seed"])
        targets.append((p.name, "perturb_first_image"))
        if "leak_factor" in variables:
            values[(p.name, "leak_factor")] = 1.0 if v["tau_m"] is None else float(np.exp(-float(dt / v["tau_m"])))
        if "noise_sigma" in variables:
            values[(p.name, "noise_sigma")] = _noise_volts(p, setup, v["sigma_v"])
        if "t_ref" in variables:
            values[(p.name, "t_ref")] = v["t_ref"]
        if "threshold_gain" in variables:
            draws = perturb_normal(int(v["seed"]), _STREAM["sigma_th"] + number, np.arange(p.size), 0, 0)
            values[(p.name, "threshold_gain")] = np.maximum(1.0 + float(v["sigma_th"]) * draws, 0.0)
        if "sigma_w" in variables:
            values[(p.name, "sigma_w")] = float(v["sigma_w"])
        if "sigma_delay_steps" in variables:
            values[(p.name, "sigma_delay_steps")] = float(v["sigma_delay"] / dt)
        if "p_fail_z" in variables:
            values[(p.name, "p_fail_z")] = _normal_quantile(float(v["p_fail"]))
        if "weight_levels" in variables:
            bits = v["weight_bits"]
            values[(p.name, "weight_levels")] = 0.0 if bits is None else 2.0 ** (int(bits) - 1) - 1
    return values, targets


def _normal_quantile(p):
    """``z`` with ``P(g < z) = p`` for a standard normal ``g`` (-/+ :data:`_NEVER` at 0 and 1)."""
    from statistics import NormalDist

    return -_NEVER if p <= 0 else _NEVER if p >= 1 else NormalDist().inv_cdf(p)


def _declared(population):
    return set(Equations(population.equations).names)


def _noise_volts(population, setup, sigma_v):
    """``sigma_v`` in volts: as given, or times the population's threshold scale in this run."""
    if not _is_number(sigma_v):
        return sigma_v
    m = population.membrane
    if m.threshold:
        threshold = setup.values.get((population.name, m.threshold), population.values.get(m.threshold))
        reference = np.max(np.abs(np.asarray(threshold / volt))) * volt
    else:
        reference = m.reference
    return float(sigma_v) * reference
