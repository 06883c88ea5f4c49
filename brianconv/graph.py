"""From a torch model to a small layer graph that every coding scheme reads.

The model is captured with :func:`torch.export.export`, which turns every way of writing an
operation (module, ``torch.nn.functional``, ``torch.*``, tensor method, in-place variant) into one
ATen operator; an already exported program (:class:`torch.export.ExportedProgram`, e.g. from
:func:`torch.export.load` of a ``.pt2`` file) is read as it is. One table in
:mod:`brianconv.frontend_ops` maps each ATen operator to a handler that emits :class:`Layer`
records in execution order:

* ``input`` — the network input, shape ``(C, H, W)`` or ``(F,)``;
* ``linear`` and ``conv`` — weighted layers (``Linear``, ``Conv2d``; a BatchNorm that directly
  follows one without activation is folded in; the bias is kept as a current);
* ``avgpool`` and ``maxpool`` — 2-d pooling (adaptive average pooling where the input size is a
  multiple of the output size, e.g. the global pooling of a squeeze-and-excitation block);
* ``affine`` — a per-channel ``scale * x + shift``: a BatchNorm anywhere else (after an
  activation, a pooling layer or on the input);
* ``add`` — element-wise sum of two layers (residual connections);
* ``mul`` — element-wise product of two layers, the second either of the same size or one value
  per channel (``(C,)``, ``(C, 1, 1)``), broadcast over the first's ``H x W`` (the gating of a
  squeeze-and-excitation block);
* ``cat`` — concatenation of layers along the channels (``dim=1`` of an ``(N, C, H, W)`` or
  ``(N, F)`` tensor), e.g. the branches of an Inception block.

``flatten``/``view``/``reshape`` keep the C, H, W-flattened neuron order and vanish, as do
dropout and ``Identity``. Activations become the ``activation`` attribute of the layer they follow
(:data:`ACTIVATIONS`); ``relu6``, ``hardtanh(0, a)`` and ``clamp(0, a)`` become
``"clipped_relu"`` with ``params["clip"] = a``. A softmax or log-softmax on the output is dropped
(it keeps the arg-max): the graph returns the logits and records the head in
:attr:`LayerGraph.head`. Anything else raises :class:`~brianconv.errors.ConversionError` naming the
operation, the line of ``forward`` it comes from, and what is supported.

Layer names are the torch module paths where the operation is a ``torch.nn`` layer (``"0"`` in an
``nn.Sequential``, ``"features.2"``, ``"se.expand"``) and the export's node name otherwise
(``"add"``, ``"mul"``, ``"cat"``).

Neuron order: every layer's neurons are numbered like ``tensor.reshape(-1)`` of one sample,
i.e. channel-major ``(C, H, W)``; :mod:`brianconv.connectivity` uses the same order.
"""

import builtins
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConversionError, InvalidValueError, ShapeError

__all__ = ["ACTIVATIONS", "Layer", "LayerGraph", "trace"]

#: Activation names recorded on layers; schemes say which of them they can represent.
ACTIVATIONS = ("relu", "clipped_relu", "sigmoid", "silu", "tanh", "gelu", "leaky_relu", "elu")


@dataclass
class Layer:
    """One node of the layer graph.

    Attributes
    ----------
    name : str
        Unique name (the torch module path where there is one).
    op : str
        ``"input"``, ``"linear"``, ``"conv"``, ``"avgpool"``, ``"maxpool"``, ``"add"``, ``"mul"``,
        ``"cat"`` or ``"affine"`` (per-channel ``scale * x + shift`` from ``params``, removed before a
        scheme sees the graph by :func:`brianconv.folding.fold_affine_layers`).
    inputs : list of str
        Names of the layers feeding this one (two for ``add`` and ``mul``, two or more for ``cat``).
    in_shape, out_shape : tuple of int
        Shape of one sample entering (the first input's) / leaving the layer, without the batch axis.
    weight, bias : np.ndarray or None
        float64 weights (``(out, in)`` or ``(C_out, C_in/groups, kH, kW)``) and biases, BatchNorm
        already folded in: one per output channel ``(C_out,)``, or one per neuron ``out_shape`` (a
        conv that reads a folded shift through zero padding, :mod:`brianconv.folding`).
    params : dict
        Geometry: ``kernel_size``, ``stride``, ``padding``, ``dilation``, ``groups`` as tuples/ints;
        ``second_size`` (int) of a ``mul``; ``axis`` (0, the channels of one sample) and ``sizes``
        (neurons per input) of a ``cat``; ``scale`` and ``shift`` (float64 ``(C,)``) of an
        ``affine``; ``clip`` (float, the upper bound) of a ``"clipped_relu"`` activation.
    activation : str or None
        The activation applied to this layer's output (one of :data:`ACTIVATIONS`), or None.
    """

    name: str
    op: str
    inputs: list
    in_shape: tuple
    out_shape: tuple
    weight: np.ndarray = None
    bias: np.ndarray = None
    params: dict = field(default_factory=dict)
    activation: str = None

    @property
    def size(self):
        """Number of neurons of this layer's output."""
        return int(np.prod(self.out_shape))

    @property
    def is_weighted(self):
        return self.op in ("linear", "conv")

    def neuron_bias(self):
        """The bias of every neuron, shape ``(size,)`` in the neuron order of ``out_shape``.

        ``bias`` may hold one value per output channel ``(C,)`` (repeated over the channel's
        positions) or one per neuron (shape ``out_shape``); no bias gives zeros.
        """
        if self.bias is None:
            return np.zeros(self.size)
        bias = np.asarray(self.bias)
        if bias.shape == tuple(self.out_shape):
            return bias.ravel()
        if bias.ndim == 1 and len(bias) == self.out_shape[0]:
            return np.repeat(bias, self.size // len(bias))
        raise ShapeError(f"Layer {self.name!r} has a bias of shape {bias.shape}; expected one value per output "
                         f"channel ({self.out_shape[0]},) or one per neuron {tuple(self.out_shape)}.")

    def pre_activation(self, *inputs):
        """This layer's output before its activation, for torch tensors ``(N, *in_shape)``."""
        if self.op == "linear":
            return F.linear(inputs[0].flatten(1), _tensor(self.weight), _tensor(self.bias))
        if self.op in ("conv", "avgpool", "maxpool", "affine"):  # the source may carry another shape (view/reshape)
            inputs = (inputs[0].reshape((inputs[0].shape[0],) + tuple(self.in_shape)),)
        p = self.params
        if self.op == "conv":
            per_channel = self.bias is None or np.ndim(self.bias) == 1
            out = F.conv2d(inputs[0], _tensor(self.weight), _tensor(self.bias) if per_channel else None,
                           p["stride"], p["padding"], p["dilation"], p["groups"])
            return out if per_channel else out + _tensor(self.bias)  # one bias per neuron
        if self.op == "avgpool":
            return F.avg_pool2d(inputs[0], p["kernel_size"], p["stride"], p["padding"],
                                count_include_pad=p["count_include_pad"])
        if self.op == "maxpool":
            return F.max_pool2d(inputs[0], p["kernel_size"], p["stride"], p["padding"])
        if self.op == "affine":
            shape = (1, -1) + (1,) * (len(self.in_shape) - 1)
            return inputs[0] * _tensor(p["scale"]).reshape(shape) + _tensor(p["shift"]).reshape(shape)
        if self.op == "add":
            return inputs[0].reshape(inputs[1].shape) + inputs[1]
        if self.op == "mul":
            return inputs[0].reshape((-1,) + tuple(self.out_shape)) * self.broadcast(inputs[1])
        if self.op == "cat":  # channel-major numbering: channel concatenation = concatenation of the flat inputs
            n = inputs[0].shape[0]
            return torch.cat([x.reshape(n, -1) for x in inputs], dim=1).reshape((n,) + tuple(self.out_shape))
        return inputs[0]

    def broadcast(self, second):
        """The second input of a ``mul``, ``(N, ...)``, broadcast to ``(N, *out_shape)``."""
        n = second.shape[0]
        if self.params["second_size"] == self.size:
            return second.reshape((n,) + tuple(self.out_shape))
        channels = self.out_shape[0]
        return second.reshape((n, channels) + (1,) * (len(self.out_shape) - 1)).expand((n,) + tuple(self.out_shape))

    def forward(self, *inputs):
        """This layer's output (activation applied) for torch tensors ``(N, *in_shape)``."""
        return self.activate(self.pre_activation(*inputs))

    def activate(self, pre):
        """This layer's activation applied to its pre-activation ``pre`` (torch tensor ``(N, *out_shape)``)."""
        return _apply_activation(self.activation, pre, self.params)


def _tensor(array):
    return None if array is None else torch.as_tensor(array, dtype=torch.float64)


_ACTIVATION_FUNCTIONS = {"relu": F.relu, "sigmoid": torch.sigmoid, "silu": F.silu, "tanh": torch.tanh,
                         "gelu": F.gelu, "leaky_relu": F.leaky_relu, "elu": F.elu}


def _apply_activation(name, x, params):
    """Activation ``name`` (see :data:`ACTIVATIONS`) of ``x``; ``params["clip"]`` bounds a clipped ReLU."""
    if name is None:
        return x
    if name == "clipped_relu":
        return torch.clamp(x, 0.0, params["clip"])
    return _ACTIVATION_FUNCTIONS[name](x)


def _ann_activation(layer, pre, inputs):
    """The ANN: each layer's own activation (:meth:`Layer.activate`)."""
    return layer.activate(pre)


class LayerGraph:
    """The ordered layers of a model, with a float64 torch forward pass for checks and calibration.

    Parameters
    ----------
    layers : list of Layer
        In execution order; ``layers[0]`` is the input, ``layers[-1]`` the output.
    head : str, optional
        The output head dropped while tracing (``"softmax"`` or ``"log_softmax"``): both keep the
        arg-max, so the graph's output are the logits before it.
    """

    head = None  # class default: graphs pickled before heads were recorded have none

    def __init__(self, layers, head=None):
        self.layers = list(layers)
        self.by_name = {layer.name: layer for layer in self.layers}
        self.head = head

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, name):
        return self.by_name[name]

    @property
    def input(self):
        return self.layers[0]

    @property
    def output(self):
        return self.layers[-1]

    def consumers(self, name):
        """The layers that read the output of layer ``name``."""
        return [layer for layer in self.layers if name in layer.inputs]

    def check_input(self, x):
        """Return ``x`` as a float64 array of shape ``(N, *input_shape)``, or raise a clear error."""
        x = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        shape = self.input.out_shape
        if x.shape[1:] != shape:
            if x.ndim >= 2 and int(np.prod(x.shape[1:])) == int(np.prod(shape)) and len(shape) == 1:
                x = x.reshape(len(x), -1)
            else:
                raise ShapeError(f"Input has shape {x.shape}; the model expects (N, {', '.join(map(str, shape))}). "
                                 "Pass a batch of samples with the shape the model was traced with.")
        if len(x) == 0:
            raise ShapeError("Input holds no samples (N = 0).")
        if not np.all(np.isfinite(x)):
            raise InvalidValueError(f"Input holds {np.size(x) - np.isfinite(x).sum()} NaN/Inf values; "
                                    "clean the data before converting or simulating.")
        return x

    def forward(self, x, record=False, chunk=256, activation=None):
        """Run the graph in float64 torch, layer by layer: the ANN, or a scheme's emulation of its network.

        Parameters
        ----------
        x : array or tensor, shape (N, *input_shape)
        record : bool
            Also return every layer's output (all N samples at once: mind the memory).
        chunk : int
            Without ``record``, samples are processed ``chunk`` at a time, so memory stays bounded.
        activation : callable, optional
            ``activation(layer, pre, inputs) -> values``: what ``layer`` passes on, an array or tensor
            of shape ``(N, *out_shape)``, given its pre-activation ``pre`` (float64 torch tensor; the
            input layer's is ``x``) and the values its inputs passed on (``inputs``, tensors in the
            order of ``layer.inputs``; empty for the input layer). Default: the layer's own activation
            (the ANN). The schemes pass their codes here (quantised values, spike codes, AMOS units)
            to compute what their spiking network computes; the function is called in graph order,
            with all samples at once when ``record`` is set.

        Returns
        -------
        np.ndarray of shape (N, n_out) (the logits if a softmax head was dropped), and with
        ``record`` a dict ``name -> (N, *out_shape)``.
        """
        x = self.check_input(x)
        if not record and len(x) > chunk:
            return np.concatenate([self.forward(x[start:start + chunk], activation=activation)
                                   for start in range(0, len(x), chunk)])
        carry = activation or _ann_activation
        values = {}
        with torch.no_grad():
            for layer in self.layers:
                inputs = tuple(values[name] for name in layer.inputs)
                pre = torch.as_tensor(x) if layer is self.input else layer.pre_activation(*inputs)
                values[layer.name] = torch.as_tensor(carry(layer, pre, inputs))
        out = values[self.output.name].flatten(1).numpy()
        if record:
            return out, {name: value.numpy() for name, value in values.items()}
        return out

    def summary(self):
        """One line per layer: name, op, output shape, activation (and the dropped head, if any)."""
        rows = [f"{layer.name:<24}{layer.op:<9}{layer.out_shape!s:<18}{layer.activation or ''}"
                for layer in self.layers]
        if self.head is not None:
            rows.append(f"(output head {self.head} dropped: the graph returns the logits)")
        return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# tracing
# ---------------------------------------------------------------------------------------------

def trace(model, input_shape):
    """Trace ``model`` into a :class:`LayerGraph`.

    Parameters
    ----------
    model : torch.nn.Module or torch.export.ExportedProgram
        A trained model; a module is put in ``eval`` mode (BatchNorm uses its running statistics)
        and exported with :func:`torch.export.export`. An exported program (e.g.
        ``torch.export.load("model.pt2")``) must take one input of shape ``(B, *input_shape)``.
    input_shape : tuple of int
        Shape of one sample, e.g. ``(1, 28, 28)`` or ``(784,)``.

    Raises
    ------
    ConversionError
        For a model that cannot be exported or an operation brianconv cannot represent.
    ShapeError
        If the model does not accept samples of ``input_shape``.
    InvalidValueError
        For NaN/Inf parameters (also after BatchNorm folding).

    Examples
    --------
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU6(), nn.Linear(3, 2), nn.LogSoftmax(dim=1))
    >>> graph = trace(model, (1, 2, 2))
    >>> [(layer.name, layer.op, layer.activation) for layer in graph], graph.head
    ([('input_1', 'input', None), ('1', 'linear', 'clipped_relu'), ('3', 'linear', None)], 'log_softmax')
    >>> graph["1"].params["clip"]
    6.0
    """
    # frontend_ops builds Layer records, so it imports this module: import it here, not at the top
    from .frontend_ops import build_layers

    program = export(model, tuple(input_shape))
    layers, head = build_layers(program)
    return LayerGraph(layers, head=head)


def export(model, input_shape):
    """``model`` as a :class:`torch.export.ExportedProgram` for samples of ``input_shape``.

    A module is checked for NaN/Inf parameters, run once eagerly on a zero batch of two samples
    (so a wrong ``input_shape`` is a :class:`~brianconv.errors.ShapeError`) and exported; an
    exported program is checked against ``input_shape`` and returned as it is.
    """
    if isinstance(model, torch.export.ExportedProgram):
        _check_program_input(model, input_shape)
        _check_finite_parameters(list(model.state_dict.items()) + list(model.constants.items()))
        return model
    if not isinstance(model, nn.Module):
        raise ConversionError(f"Expected a torch.nn.Module or a torch.export.ExportedProgram, got "
                              f"{type(model).__name__}.")
    model = model.eval()
    if is_torch_layer(type(model)):  # a bare nn.Linear, nn.Conv2d, ...: trace it as a one-layer Sequential
        model = nn.Sequential(model)
    _check_finite_parameters(list(model.named_parameters()) + list(model.named_buffers()))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())
    sample = torch.zeros((2,) + tuple(input_shape), dtype=dtype)  # a float64 model needs float64 inputs
    try:
        with torch.no_grad():
            model(sample)
    except (RuntimeError, ValueError) as exc:
        raise ShapeError(f"The model does not accept inputs of shape {tuple(input_shape)}: {exc}") from exc
    try:
        return torch.export.export(model, (sample,))
    except Exception as exc:  # export raises many types; say what to do
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"torch.export could not capture {type(model).__name__}: {first}. The forward pass "
                              "must not branch on tensor values (if/while on data): compute both branches and "
                              "combine them, or move the branching out of the model.") from exc


def is_torch_layer(cls):
    """True for ``torch.nn`` layer classes (``nn.Conv2d``, ``nn.ReLU``, ...), False for containers and
    user modules; ``cls`` may be a class or its qualified name ``"torch.nn.modules.conv.Conv2d"``."""
    name = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
    return name.startswith("torch.nn.") and not name.startswith("torch.nn.modules.container.")


def input_name(name):
    """The input layer's name: the ``forward`` argument, with ``_1`` appended to a Python builtin
    (``input`` -> ``input_1``), as torch.fx named it, so layer names stay what they were."""
    return f"{name}_1" if hasattr(builtins, name) else name


def _check_program_input(program, input_shape):
    names = program.graph_signature.user_inputs
    if len(names) != 1:
        raise ConversionError(f"The exported program takes {len(names)} inputs; brianconv converts models with one "
                              "input tensor.")
    shape = tuple(next(node for node in program.graph.nodes if node.name == names[0]).meta["val"].shape)
    if tuple(int(s) for s in shape[1:]) != tuple(input_shape):
        raise ShapeError(f"The exported program takes inputs of shape {shape}, not (N, "
                         f"{', '.join(map(str, input_shape))}); pass input_shape={tuple(shape[1:])}.")


def _check_finite_parameters(named_tensors):
    for name, tensor in named_tensors:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InvalidValueError(f"Parameter {name!r} of the model holds NaN or Inf values; "
                                    "retrain or load a valid checkpoint before converting.")
