"""Scheme ``"amos"``: at most one spike per neuron, every ANN gate replaced by K threshold neurons.

After Stöckl and Maass, *Recognizing images with at most one spike per neuron* (2020). Equation
numbers below are the paper's.

The AMOS unit (Eqs. 2-6)
------------------------
A gate ``f`` with input ``x = sum_j W_ij a_j + b_i`` is replaced by ``K`` McCulloch-Pitts
neurons. Neuron ``k`` (0-based here, ``k = 0 ... K-1``) outputs

    ``z_k = Theta(c_k x - H_k - T_k)``,  ``H_k = sum_{m<k} h_km z_m``      (Eqs. 2, 4)

and the unit sends ``y = sum_k d_k z_k`` (times the next layer's weight, Eq. 5) to the next
layer, so the next layer's neuron ``k'`` receives ``W_ij d_k c_k'`` from neuron ``k`` of unit
``j``. Parameters are held in a :class:`Unit`:

* ReLU, closed form (Sec. 1.2), scaled to ``(-inf, alpha]`` with ``alpha`` the layer's
  calibrated activation scale: ``c_k = 1``, ``T_k = d_k = h_{k'k} = alpha 2^-(k+1)``. The unit
  is a successive-approximation A/D converter: ``y = alpha floor(x 2^K / alpha) 2^-K`` for
  ``0 <= x < alpha`` (so ``0 <= ReLU(x) - y < alpha 2^-K``), 0 for ``x < 0`` and
  ``alpha (1 - 2^-K)`` above ``alpha``: the error is at most ``alpha 2^-K`` on ``(-inf, alpha]``.
* Sigmoid (K = 8) and SiLU/Swish (K = 12): trained by backpropagation with a triangle-shaped
  pseudo-derivative (``benchmarks/train_amos_units.py``) on ``x`` in ``[-8, 8]`` and shipped as
  ``brianconv/data/amos_<gate>.npz`` with their measured errors; they work on ANN units directly
  (no scaling). Outside the training domain their output stays at its edge value.

Neurons and time
----------------
Neurons are memoryless threshold gates evaluated once per image, in volts: ``v`` is the input
delivered during the previous step plus the constant ``v_rest = c_k b_i v_unit`` (the bias part
of ``c_k x``), and the neuron fires when ``v >= theta = T_k v_unit`` in its evaluation step. A
custom event ``clear`` restores ``v = v_rest`` in every step before the synapses deliver, so no
state carries over from one step to the next. Neuron ``k`` of layer ``l`` evaluates image ``n`` at
step ``S_l + n P + k`` (``P`` the image period); a spike sent in step ``s`` over a delay of ``D``
steps is read in step ``s + D + 1``. Hence:

* inhibition from neuron ``m`` to neuron ``k > m`` of the same unit: delay ``k - m - 1``;
* neuron ``k_s`` of the source layer to neuron ``k_t`` of the target: delay ``K_s - 1 + k_t - k_s``,
  with ``S_l = S_{l-1} + K_s``: every layer adds ``K`` steps of latency;
* the output layer is not an AMOS unit: it only sums ``W y + b`` (delay ``K_s - 1 - k_s``) and its
  ``v / v_unit`` at the end of step ``S_out + n P`` is the logit of image ``n``.

The input is analog, as the paper's first layer receives the image itself: input neuron ``i``
(one per pixel) sends one event per image if its value is non-zero, and the synapse to neuron
``k_t`` of the first layer (delay ``k_t``, weight ``W c_kt``) adds the value times the weight
(``S_1 = 1``). Brian2 reads a pre-synaptic variable when the spike is delivered, so each input
neuron keeps the values of its last ``K_1`` steps (``x_0 ... x_(K_1 - 1)``) and a synapse with
delay ``D`` reads ``x_D``, the value at the time the spike was sent.

Because no neuron keeps state between images, the network is pipelined (``pipeline=True``,
default): a new image enters every step (``P = 1``), and ``N`` images take ``N + sum_l K_l`` steps.
With ``pipeline=False`` an image passes through all layers before the next enters
(``P = S_out + 1``); the outputs are identical.

Spike attribution: neuron ``k`` answers image ``n`` ``lag = k`` steps after the image's window starts
(with ``P = 1``: in window ``n + k``). :meth:`AMOS.evaluation_lags` tells the simulation, so
monitored spikes (``SimulationResult.spikes``) carry their true image, and
:meth:`AMOS.population_values` / :func:`sent_values` decode them exactly for every image. The
per-image counts ``SimulationResult.spike_counts`` come from counters read at window edges: with
``P = 1`` those of hidden populations are shifted per neuron (their sum over a run is right except
for the last ``K - 1`` images, whose late spikes fall after the last window); with
``pipeline=False`` they are exact.

Populations: why one population of ``K n`` neurons per layer
-----------------------------------------------------------
Each layer is one ``NeuronGroup`` of ``K * n`` neurons, neuron ``k * n + i`` being neuron ``k`` of
unit ``i``, with per-neuron ``theta``, ``v_rest`` and ``lag`` (the step of its window in which it
evaluates: ``k``; ``2 k`` and ``2 k + 1`` in max-pools). Spikes between AMOS neurons carry a delay
per synapse (:attr:`~brianconv.description.Projection.delay_steps` as an array), so a layer needs
one feedforward and one inhibitory ``Synapses`` object, not one per ``(k_s, k_t)`` pair. Relays
(the input and dendrites) are the exception: their payload ``x_D`` depends on the delay ``D``, so
they get one projection per delay. Every ``Synapses`` object is several C++ files to compile:
this keeps the build time of a net with products (K = 40) in minutes.

Wiring
------
``wiring="auto"`` (default) picks ``"dendrite"`` for a net that max-pools (the only wiring that
computes a max-pool) and the paper's wiring otherwise (:func:`resolve_wiring`), so a model that
converts with an explicit wiring gets the same network from the default.

``wiring="paper"``: the paper's unit sends every source neuron's spike to every
target neuron of the unit at its own delay, so a layer with ``F`` ANN connections gets
``K_s K_t F`` synapses (``K^2`` times the ANN). :func:`synapse_count` computes it before building.

``wiring="dendrite"``: every target neuron of a unit receives the same sum ``sum W d_ks z`` (times
its own ``c_k``), so the sum is formed once, in a *dendrite* (one per unit, ``role="helper"``,
:data:`DENDRITE_EQUATIONS`): it integrates ``x = W y + b`` in volts like the output layer and
relays it one step later, as the payload of one event, to the unit's K neurons over synapses of
weight ``c_k`` and delay ``k`` (the same buffer mechanism as the input relay). A layer then
needs ``K_s F + K_t n`` synapses instead of ``K_s K_t F`` and one more step of latency; every
neuron still computes ``Theta(c_k x - H_k - T_k)`` on the same ``x``, so unit outputs are
identical (up to float rounding of the sum). Without an event (``x = 0``; for ReLU units
``x <= 0``) the neurons see ``x = 0``, which is exact. The AMOS neurons keep binary spikes and
at most one spike each; the dendrite's events are graded (counted as the helper's spikes).

Max-pooling (``wiring="dendrite"``)
-----------------------------------
A max-pool of ReLU units is computed exactly on their binary code. The ReLU unit is a
successive-approximation converter: bit ``k`` is ``[x - H_k >= T_k]`` with ``H_k`` from the
bits above it. Because ``x -> [x - H >= T]`` is monotone, bit ``k`` of the pool's maximum is
``OR_j [x_j - H_k >= T_k]`` with ``H_k`` from the *pool's* bits. So each (member ``j``, pool
``p``) pair gets K *candidate* neurons (the pooled layer's population: candidate ``k`` of pair
``e`` tests ``x_j - H_k >= T_k`` at lag ``2 k``, reading the dendrite of unit ``j``), and each
pool unit K neurons (pool neuron ``k`` fires at lag ``2 k + 1`` if any of its candidates ``k``
fired: weight 1, threshold 1/2) whose spikes inhibit the candidates ``k' > k`` of the same pool
by ``h_k'k``. The pool sends ``y(max_j x_j) = max_j y(x_j)``: the ANN's max-pool of the quantised
ReLU, no approximation. A max-pooled layer takes ``2 K`` steps instead of ``K``; neurons still
fire at most once per image. (Spikes of the candidates show the comparisons; decode the pool.)

Products (squeeze-and-excitation)
---------------------------------
A ``mul`` layer (:mod:`brianconv.graph`: two layers multiplied element-wise, or a map times one
gate per channel) becomes a layer of trained product units (K = 40, two inputs, Eq. 7), wired
like any unit layer from the neurons of *both* factors; its window starts after the later factor
has answered, and the delays (``S_t + lag_t - 1 - S_s - lag_s``) align the two. The unit was
trained on ``[-1, 1]^2``: its inputs are divided by the largest value each factor's units can send
(``alpha`` for ReLU units, the trained unit's largest output for sigmoid/SiLU,
:func:`_largest_sent`), and its output multiplied by both, so the product stays inside the
domain and its error is at most the unit's recorded maximum error times the two ranges.

That error is large where one factor spans a wide range: a ReLU map with ``alpha`` = 32 whose
typical values are near 3 gets an absolute error near 1 (``small_cnn_se`` loses 29 pp with it,
``benchmarks/results/amos_mnist_se_trained.txt``). ``product="code"`` multiplies the codes
instead: the factors already send binary codes ``y_a = sum d_a z_a`` and ``y_b = sum d_b z_b``, so
``y_a y_b = sum_{ka,kb} d_a[ka] d_b[kb] z_a[ka] z_b[kb]``: one coincidence neuron per pair
``(ka, kb)`` (weights 1 from both, threshold 3/2, :class:`CodeProduct`) fires iff both fired and
sends ``d_a[ka] d_b[kb]``. ``K_a K_b`` neurons per element (80 for ReLU K = 10 times sigmoid
K = 8, against 40), no trained parameters, no error beyond the factors' own codes, one step.

Residual sums and concatenation
-------------------------------
A residual ``add`` is a layer of units whose input is the sum of both terms' unit outputs
(identity weights): with ``wiring="dendrite"`` one dendrite sums both, with the paper's wiring
every neuron of both terms reaches the sum's neurons. Each term arrives over its own delays
(``S_t + lag_t - 1 - S_s - lag_s``, as for the two factors of a product), so a shallow term waits
for a deep one. Its units are those of its activation (ReLU; an ``add`` without activation of
non-negative terms is a ReLU unit too) and its error that of the unit on the exact sum. A ``cat``
has no units: each reader receives one projection per branch, at the branch's delays. A max-pool
of an ``add`` with ReLU works like that of a Linear/Conv2d layer. A Linear/Conv2d layer without
activation that only sums read (a ResNet block's second convolution and projection shortcut,
:func:`~.base.folds_into_reader`) has no units either: the sum's units receive its input
projections composed with its weights and its bias in their own, so they code the exact sum.

Clipped ReLU
------------
``min(max(x, 0), a)`` (ReLU6, hardtanh(0, a)) is the closed-form ReLU unit with
``alpha = min(lambda, a)``: the unit sends ``alpha (1 - 2^-K)`` above ``alpha``, so with
``alpha = a`` (the calibration reaches the clip) its error is at most ``a 2^-K`` for every ``x``.

Supported: Linear, Conv2d, average pooling (folded into the next projection), max-pooling of a
ReLU layer (dendrite wiring), products of two unit layers, residual sums, channel concatenation,
ReLU / clipped ReLU / sigmoid / SiLU on hidden layers, a Linear or Conv2d output layer without
activation.
"""

from .reference import sent_values
from .scheme import AMOS, PRODUCTS, AMOSOptions, AMOSState
from .units import UNIT_DIR, CodeProduct, Unit, code_product, load_unit, product_unit, relu_unit
from .wiring import (
    DENDRITE_EQUATIONS,
    INPUT_EQUATIONS,
    NEURON_EQUATIONS,
    OUTPUT_EQUATIONS,
    WIRINGS,
    resolve_wiring,
    synapse_count,
)

__all__ = ["AMOS", "AMOSOptions", "AMOSState", "Unit", "relu_unit", "resolve_wiring", "product_unit", "load_unit",
           "sent_values", "synapse_count", "NEURON_EQUATIONS", "INPUT_EQUATIONS", "DENDRITE_EQUATIONS",
           "OUTPUT_EQUATIONS", "UNIT_DIR", "WIRINGS", "PRODUCTS", "CodeProduct", "code_product"]
