"""A complete coding scheme in under 100 lines: the :class:`~brianconv.schemes.Scheme` contract by example.

Non-leaky IF neurons with reset to zero code a ReLU activation ``a`` of scale ``lambda`` (weights
``W lambda_(l-1) / lambda_l``) as ``n = floor(T / ceil(theta / a~))`` spikes in ``T = duration`` steps (``a~ =
a / lambda``, threshold ``theta``), decoded as ``n theta lambda / T``. The analog input sets the first layer's
current once per image; the output integrates (time-averaged potential = logit). MLPs; not registered on import.
"""

from dataclasses import dataclass, replace

import numpy as np
from brian2 import ms, mV

from brianconv.description import NetworkDescription, Population, Projection
from brianconv.errors import InvalidValueError
from brianconv.schemes import Options, RunSetup, Scheme, SchemeState, dt_option, option, positive_number
from brianconv.schemes.base import population_names, projected_layers

#: Input: the normalised pixel x = x_image / lambda_0, sent once (step 0) to set the next layer's current.
INPUT = """
first = int(local_step == 0) : integer (shared)
x_scale : 1 (constant, shared)
image = (t_in_timesteps - window_start) // period_steps : integer (shared)
x_now = stimulus(image * period_steps * dt, i) / x_scale : 1
x : volt                          # x_now * v_unit, held for the synapses
"""
#: IF neuron, v in volts: per step v += (b + q / v_unit) * v_unit; spike and reset to zero at v >= v_th.
NEURON = """
last = int(local_step == period_steps - 1) : integer (shared)
dv/dt = started * (b * v_unit + q) / dt : volt
q : volt                          # analog input charge per step (first layer)
b : 1 (constant)                  # normalised bias
v_th : volt (constant, shared)    # threshold; also the charge one spike carries (times w)
"""
#: Output: integrates only (no threshold); y = v * lambda_L / (v_unit * steps so far) is the logit.
OUTPUT = NEURON + """
scale : 1 (constant, shared)
y : 1
"""
#: Spike reset to zero and the window reset, both before the synapses deliver the next image's input.
RESET = ("started == 1 and (v >= v_th or last == 1)", "v = 0 * volt\nq = q * (1 - last)")
READOUT = ("True", "y = v * scale / (v_unit * (local_step + 1))\nv = v * (1 - last)\nq = q * (1 - last)")


@dataclass(frozen=True)
class ExampleOptions(Options):
    """``convert(model, "example_if", duration=..., ...)``: each field's default and the values it accepts."""

    duration: int = option(256, integer=True, minimum=1)   # steps per image
    threshold: float = option(16.0, greater_than=0)       # theta, in normalised units
    dt: object = dt_option(1 * ms)


class ExampleIF(Scheme):
    """A non-leaky IF scheme; options :class:`ExampleOptions`, run-time parameter ``threshold_scale``."""

    name = "example_if"
    ops = frozenset({"input", "linear"})
    Options = ExampleOptions

    def describe(self, graph, calibration):   # calibrate(): the default, each layer's maximum
        T, scales, names, inp = int(self.options.duration), calibration.scales, population_names(graph), graph.input
        ns = {"v_unit": mV}   # volts per normalised unit
        populations = [Population(names[inp.name], inp.size, INPUT, layer=inp.name, role="input", namespace=ns,
                                  threshold="started == 1 and first == 1 and x_now != 0",
                                  events={"update": ("first == 1", "x = x_now * v_unit")},
                                  values=dict(x_scale=scales[inp.name]))]
        projections = []  # one per layer: W~ = W lambda_(l-1) / lambda_l, b~ = b / lambda_l
        for depth, (layer, source, connections) in enumerate(projected_layers(graph, names), start=1):
            ratio, out = scales[layer.inputs[0]] / scales[layer.name], layer is graph.output
            values = dict(b=layer.bias / scales[layer.name], **(dict(scale=scales[layer.name]) if out else
                                                                  dict(v_th=self.options.threshold * mV)))
            populations.append(Population(names[layer.name], layer.size, OUTPUT if out else NEURON, layer=layer.name,
                                          threshold=None if out else "started == 1 and v >= v_th", values=values,
                                          events={"update": READOUT if out else RESET}, window_start=depth,
                                          role="output" if out else "hidden", namespace=ns))
            projections.append(Projection(f"{source}_to_{names[layer.name]}", source, names[layer.name],
                                          replace(connections, weight=connections.weight * ratio),
                                          on_pre="q_post += w * x_pre" if depth == 1 else "v_post += w * v_th_pre"))
        return NetworkDescription(self.name, populations, projections, self.options.dt, T,
                                  populations[0].name, populations[-1].name, output_variable="y",
                                  readout_step=T - 1, state=SchemeState(self.options, dict(scales)))

    def setup(self, description, threshold_scale=1.0):
        """Run-time parameter: ``threshold_scale`` multiplies every hidden threshold (and what a spike carries)."""
        theta = description.state.options.threshold * positive_number("threshold_scale", threshold_scale) * mV
        values = {(p.name, "v_th"): theta for p in description.populations if p.role == "hidden"}
        return RunSetup(values, {p.name: p.window_start for p in description.populations},
                        readout_step=description.period_steps - 1, parameters=dict(threshold_scale=threshold_scale))

    def population_values(self, description, result, population):
        """``n theta lambda / T`` per neuron of a hidden population (needs ``spikes=[population]``)."""
        p = description.population(population)
        if p.role != "hidden" or population not in result.spikes:
            raise InvalidValueError(f"Decode hidden populations monitored with spikes=[{population!r}].")
        image, neuron, _ = result.spikes[population]
        counts = np.bincount(image * p.size + neuron, minlength=result.n_images * p.size).reshape(result.n_images, -1)
        theta = description.state.options.threshold * float(result.parameters["threshold_scale"])
        return counts * theta * description.state.scales[p.layer] / description.period_steps
