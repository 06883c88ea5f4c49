"""Brian2 equations of the NIR neuron primitives (one table, no wiring).

Units: a NIR value ``1`` of a voltage (``v``, ``v_leak``, ``v_threshold``, ``v_reset``) is
``v_unit`` volts (1 mV by default); NIR time constants and delays are seconds; the input
``I`` of a node (the signal on its incoming edges: spikes, or the analog input) is
dimensionless. Hence the resistance ``r`` is in volts (per unit of input) where the equation
divides by a time constant (LIF, LI, CubaLIF, CubaLI) and in volt/second where it does not (IF,
I). ``b`` is the constant part of the input (the biases of the Affine and Conv2d nodes on the
way), ``I`` the part carried by spikes of the current step (set by the synapses, cleared every
step; see :mod:`brianconv.nir.importer` for the order of operations inside a step).

Every population also gets the time-axis flags :data:`STEP_FLAGS` and the shared variables of
:data:`brianconv.description.TIME_AXIS_EQUATIONS`.
"""

from dataclasses import dataclass

__all__ = ["STEP_FLAGS", "INPUT_EQUATIONS", "INPUT_THRESHOLD", "INPUT_HOLD", "INPUT_ON_PRE", "SPIKE_ON_PRE",
           "LIF_EQUATIONS", "LI_EQUATIONS", "IF_EQUATIONS", "I_EQUATIONS", "CUBA_LIF_EQUATIONS",
           "CUBA_LI_EQUATIONS", "THRESHOLD_EQUATIONS", "OUTPUT_EQUATIONS", "NeuronModel", "MODELS",
           "SPIKE_THRESHOLD", "RESET_SUBTRACT", "RESET_TO_VALUE", "CLEAR_INPUT"]

#: ``last`` is 1 in the last step of a population's window (its state is reset after it).
STEP_FLAGS = """
last = int(local_step == period_steps - 1) : integer (shared)
"""

#: Input node: the value ``x`` of input element ``i`` in the current step. The stimulus holds
#: ``frames`` frames of ``n_features`` values per image (``frames = 1``: one frame held for the
#: whole image period).
INPUT_EQUATIONS = STEP_FLAGS + """
frames : integer (constant, shared)
n_features : integer (constant, shared)
image = (t_in_timesteps - window_start) // period_steps : integer (shared)
x_now = stimulus(image * period_steps * dt, (local_step % frames) * n_features + i) : 1
x : 1                               # x_now, held for the synapses
"""
#: Every non-zero input element sends one event per step that carries its value ``x``.
INPUT_THRESHOLD = "started == 1 and x_now != 0"
INPUT_HOLD = "x = x_now"
INPUT_ON_PRE = "I_post += w * x_pre"
#: A spike is the signal value 1 during the step it is emitted (the discrete frameworks' spike).
SPIKE_ON_PRE = "I_post += w"

#: Input of a node: ``b`` (constant, biases on the way) and ``I`` (this step's spikes).
_INPUT = """
b : 1 (constant)                    # constant input (biases of Affine/Conv2d nodes on the way)
I : 1                               # input carried by this step's spikes (cleared every step)
"""

#: LIF (NIR): ``tau dv/dt = (v_leak - v) + r (b + I)``; spike when ``v > v_th``.
LIF_EQUATIONS = STEP_FLAGS + _INPUT + """
dv/dt = ((v_leak - v) + r * (b + I)) / tau : volt
tau : second (constant)
r : volt (constant)
v_leak : volt (constant)
v_th : volt (constant)
v_reset : volt (constant)
"""

#: LI (NIR leaky integrator): the LIF without threshold.
LI_EQUATIONS = STEP_FLAGS + _INPUT + """
dv/dt = ((v_leak - v) + r * (b + I)) / tau : volt
tau : second (constant)
r : volt (constant)
v_leak : volt (constant)
"""

#: IF (NIR): ``dv/dt = r (b + I)`` with ``r`` in volt/second; spike when ``v > v_th``.
IF_EQUATIONS = STEP_FLAGS + _INPUT + """
dv/dt = r * (b + I) : volt
r : volt / second (constant)
v_th : volt (constant)
v_reset : volt (constant)
"""

#: I (NIR integrator): ``dv/dt = r (b + I)``, no threshold.
I_EQUATIONS = STEP_FLAGS + _INPUT + """
dv/dt = r * (b + I) : volt
r : volt / second (constant)
"""

#: CubaLI (NIR >= 1.1): ``tau_syn dI_syn/dt = -I_syn + w_in (b + I)``,
#: ``tau_mem dv/dt = (v_leak - v) + r I_syn``, no threshold.
CUBA_LI_EQUATIONS = STEP_FLAGS + _INPUT + """
dI_syn/dt = (w_in * (b + I) - I_syn) / tau_syn : 1
dv/dt = ((v_leak - v) + r * I_syn) / tau_mem : volt
tau_syn : second (constant)
tau_mem : second (constant)
w_in : 1 (constant)
r : volt (constant)
v_leak : volt (constant)
"""

#: CubaLIF (NIR): the CubaLI with a threshold; spike when ``v > v_th``, then reset.
CUBA_LIF_EQUATIONS = CUBA_LI_EQUATIONS + """v_th : volt (constant)
v_reset : volt (constant)
"""

#: Threshold (NIR): ``z = 1`` when the input ``b + I`` of this step exceeds ``theta`` (memoryless).
THRESHOLD_EQUATIONS = STEP_FLAGS + _INPUT + """
theta : 1 (constant)
"""

#: Output accumulator of a spiking source: ``y`` sums the signal reaching the NIR Output node over
#: the image's window (spike counts, weighted by an Affine on the way, plus its bias every step).
OUTPUT_EQUATIONS = STEP_FLAGS + """
b : 1 (constant)                    # constant part of the signal, added every step
y : 1                               # the signal summed since the window began
"""

SPIKE_THRESHOLD = "started == 1 and v > v_th"
RESET_SUBTRACT = "v = v - v_th"
RESET_TO_VALUE = "v = v_reset"
#: Run before the synapses of every step: this step's spikes have been integrated.
CLEAR_INPUT = "I = 0"


@dataclass(frozen=True)
class NeuronModel:
    """One NIR neuron primitive in Brian2.

    Attributes
    ----------
    equations : str
    spiking : bool
        True if it emits spikes (threshold and reset).
    state : tuple of str
        Variables set to 0 when a new image begins.
    parameters : dict
        ``NIR field -> (Brian2 variable, kind)`` with kind ``"voltage"``, ``"time"``,
        ``"resistance"`` (volt), ``"rate_resistance"`` (volt/second) or ``"number"``.
    """

    equations: str
    spiking: bool
    state: tuple
    parameters: dict


_V, _T = "voltage", "time"
#: NIR class name -> :class:`NeuronModel`.
MODELS = {
    "LIF": NeuronModel(LIF_EQUATIONS, True, ("v",), dict(tau=("tau", _T), r=("r", "resistance"),
                                                          v_leak=("v_leak", _V), v_threshold=("v_th", _V))),
    "LI": NeuronModel(LI_EQUATIONS, False, ("v",), dict(tau=("tau", _T), r=("r", "resistance"),
                                                        v_leak=("v_leak", _V))),
    "IF": NeuronModel(IF_EQUATIONS, True, ("v",), dict(r=("r", "rate_resistance"), v_threshold=("v_th", _V))),
    "I": NeuronModel(I_EQUATIONS, False, ("v",), dict(r=("r", "rate_resistance"))),
    "CubaLIF": NeuronModel(CUBA_LIF_EQUATIONS, True, ("v", "I_syn"),
                           dict(tau_syn=("tau_syn", _T), tau_mem=("tau_mem", _T), w_in=("w_in", "number"),
                                r=("r", "resistance"), v_leak=("v_leak", _V), v_threshold=("v_th", _V))),
    "CubaLI": NeuronModel(CUBA_LI_EQUATIONS, False, ("v", "I_syn"),
                          dict(tau_syn=("tau_syn", _T), tau_mem=("tau_mem", _T), w_in=("w_in", "number"),
                               r=("r", "resistance"), v_leak=("v_leak", _V))),
    "Threshold": NeuronModel(THRESHOLD_EQUATIONS, True, (), dict(threshold=("theta", "number"))),
}
