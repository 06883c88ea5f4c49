"""From a torch ``nn.Module`` to a small layer graph that every coding scheme reads.

The model is traced with :mod:`torch.fx`, so custom ``forward`` methods work as well as
``nn.Sequential``. The trace is reduced to a list of :class:`Layer` records in execution
order:

* ``input`` — the network input, shape ``(C, H, W)`` or ``(F,)``;
* ``linear`` and ``conv`` — weighted layers (BatchNorm folded in, bias kept as a current);
* ``avgpool`` and ``maxpool`` — pooling (``AdaptiveAvgPool2d`` where the input size is a multiple
  of the output size, e.g. the global pooling of a squeeze-and-excitation block);
* ``add`` — element-wise sum of two layers (residual connections);
* ``mul`` — element-wise product of two layers, the second either of the same size or one value
  per channel (``(C,)``, ``(C, 1, 1)``), broadcast over the first's ``H x W`` (the gating of a
  squeeze-and-excitation block).

``Flatten``/``view``/``reshape`` keep the C, H, W-flattened neuron order and vanish;
``Dropout`` and ``Identity`` vanish; activations (``ReLU`` and the others in
:data:`ACTIVATIONS`) become the ``activation`` attribute of the layer they follow. Anything else
raises :class:`~brianconv.errors.ConversionError` naming the module and what is supported.

Neuron order: every layer's neurons are numbered like ``tensor.reshape(-1)`` of one sample,
i.e. channel-major ``(C, H, W)``; :mod:`brianconv.connectivity` uses the same order.
"""

import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConversionError, InvalidValueError, ShapeError

__all__ = ["Layer", "LayerGraph", "trace", "ACTIVATIONS"]

#: Activation names recorded on layers; schemes say which of them they can represent.
ACTIVATIONS = {
    nn.ReLU: "relu", F.relu: "relu", torch.relu: "relu",
    nn.Sigmoid: "sigmoid", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
    nn.SiLU: "silu", F.silu: "silu",
    nn.Tanh: "tanh", torch.tanh: "tanh", F.tanh: "tanh",
    nn.GELU: "gelu", F.gelu: "gelu",
    nn.LeakyReLU: "leaky_relu", F.leaky_relu: "leaky_relu",
    nn.ELU: "elu", F.elu: "elu",
    nn.Softmax: "softmax", F.softmax: "softmax", torch.softmax: "softmax",
}
_PASS_THROUGH_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.Flatten)
_PASS_THROUGH_FUNCTIONS = {F.dropout, torch.flatten}
_PASS_THROUGH_METHODS = {"view", "reshape", "flatten", "contiguous"}
_ADD_FUNCTIONS = {operator.add, torch.add, operator.iadd}
_MUL_FUNCTIONS = {operator.mul, torch.mul, operator.imul}
#: Parametrised activations: ``name -> (parameter, the value the layer graph applies)``. Other
#: values would make the graph's forward pass differ from the model's, so they are rejected.
_ACTIVATION_PARAMETERS = {"leaky_relu": ("negative_slope", 0.01), "elu": ("alpha", 1.0),
                          "gelu": ("approximate", "none"), "softmax": ("dim", None)}
_SUPPORTED = ("Linear, Conv2d, AvgPool2d, AdaptiveAvgPool2d (to a divisor of the input size), MaxPool2d, "
              "BatchNorm1d/2d (folded), Flatten/view/reshape, Dropout/Identity (dropped), element-wise add, "
              "element-wise or per-channel mul, and the activations "
              + ", ".join(sorted(set(ACTIVATIONS.values()))))


@dataclass
class Layer:
    """One node of the layer graph.

    Attributes
    ----------
    name : str
        Unique name (the torch module path where there is one).
    op : str
        ``"input"``, ``"linear"``, ``"conv"``, ``"avgpool"``, ``"maxpool"``, ``"add"`` or ``"mul"``.
    inputs : list of str
        Names of the layers feeding this one (two for ``add`` and ``mul``).
    in_shape, out_shape : tuple of int
        Shape of one sample entering / leaving the layer, without the batch axis.
    weight, bias : np.ndarray or None
        float64 weights (``(out, in)`` or ``(C_out, C_in/groups, kH, kW)``) and biases ``(out,)``,
        BatchNorm already folded in.
    params : dict
        Geometry: ``kernel_size``, ``stride``, ``padding``, ``dilation``, ``groups`` as tuples/ints.
    activation : str or None
        The activation applied to this layer's output (``"relu"``, ``"sigmoid"``, ...), or None.
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

    def pre_activation(self, *inputs):
        """This layer's output before its activation, for torch tensors ``(N, *in_shape)``."""
        if self.op == "linear":
            return F.linear(inputs[0].flatten(1), _tensor(self.weight), _tensor(self.bias))
        if self.op in ("conv", "avgpool", "maxpool"):  # the source may carry another shape (view/reshape)
            inputs = (inputs[0].reshape((inputs[0].shape[0],) + tuple(self.in_shape)),)
        if self.op == "conv":
            p = self.params
            return F.conv2d(inputs[0], _tensor(self.weight), _tensor(self.bias), p["stride"],
                            p["padding"], p["dilation"], p["groups"])
        if self.op == "avgpool":
            p = self.params
            return F.avg_pool2d(inputs[0], p["kernel_size"], p["stride"], p["padding"],
                                count_include_pad=p["count_include_pad"])
        if self.op == "maxpool":
            p = self.params
            return F.max_pool2d(inputs[0], p["kernel_size"], p["stride"], p["padding"])
        if self.op == "add":
            return inputs[0].reshape(inputs[1].shape) + inputs[1]
        if self.op == "mul":
            return inputs[0].reshape((-1,) + tuple(self.out_shape)) * self.broadcast(inputs[1])
        if self.op == "cat":  # channel concatenation: in channel-major order, of the flattened inputs
            return torch.cat([x.flatten(1) for x in inputs], 1).reshape((-1,) + tuple(self.out_shape))
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
        if self.activation == "clipped_relu":  # ReLU6, hardtanh(0, a), clamp(0, a): the clip is a parameter
            return torch.clamp(self.pre_activation(*inputs), 0, self.params["clip"])
        return _apply_activation(self.activation, self.pre_activation(*inputs))


def _tensor(array):
    return None if array is None else torch.as_tensor(array, dtype=torch.float64)


def _apply_activation(name, x):
    if name is None:
        return x
    functions = {"relu": F.relu, "sigmoid": torch.sigmoid, "silu": F.silu, "tanh": torch.tanh,
                 "gelu": F.gelu, "leaky_relu": F.leaky_relu, "elu": F.elu,
                 "softmax": lambda v: F.softmax(v, dim=1)}
    return functions[name](x)


class LayerGraph:
    """The ordered layers of a model, with a float64 torch forward pass for checks and calibration.

    Parameters
    ----------
    layers : list of Layer
        In execution order; ``layers[0]`` is the input, ``layers[-1]`` the output.
    """

    def __init__(self, layers):
        self.layers = list(layers)
        self.by_name = {layer.name: layer for layer in self.layers}

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

    def forward(self, x, record=False, chunk=256):
        """Run the graph in float64 torch.

        Parameters
        ----------
        x : array or tensor, shape (N, *input_shape)
        record : bool
            Also return every layer's output (all N samples at once: mind the memory).
        chunk : int
            Without ``record``, samples are processed ``chunk`` at a time, so memory stays bounded.

        Returns
        -------
        np.ndarray of shape (N, n_out), and with ``record`` a dict ``name -> (N, *out_shape)``.
        """
        x = self.check_input(x)
        if not record and len(x) > chunk:
            return np.concatenate([self.forward(x[start:start + chunk]) for start in range(0, len(x), chunk)])
        values = {self.input.name: torch.as_tensor(x)}
        with torch.no_grad():
            for layer in self.layers[1:]:
                values[layer.name] = layer.forward(*(values[name] for name in layer.inputs))
        out = values[self.output.name].flatten(1).numpy()
        if record:
            return out, {name: value.numpy() for name, value in values.items()}
        return out

    def summary(self):
        """One line per layer: name, op, output shape, activation."""
        rows = [f"{layer.name:<24}{layer.op:<9}{str(layer.out_shape):<18}{layer.activation or ''}"
                for layer in self.layers]
        return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# tracing
# ---------------------------------------------------------------------------------------------

def trace(model, input_shape):
    """Trace ``model`` into a :class:`LayerGraph`.

    Parameters
    ----------
    model : torch.nn.Module
        A trained model; it is put in ``eval`` mode (BatchNorm uses its running statistics).
    input_shape : tuple of int
        Shape of one sample, e.g. ``(1, 28, 28)`` or ``(784,)``.
    """
    if not isinstance(model, nn.Module):
        raise ConversionError(f"Expected a torch.nn.Module, got {type(model).__name__}.")
    model = model.eval()
    if torch.fx.Tracer().is_leaf_module(model, ""):  # a bare nn.Linear, nn.Conv2d, ...: trace it as a layer
        model = nn.Sequential(model)
    _check_parameters(model)
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types; say what to do
        raise ConversionError(f"torch.fx could not trace {type(model).__name__}: {exc}. Models must have "
                              "a forward pass without data-dependent control flow.") from exc
    shapes, static = _propagate_shapes(gm, input_shape)
    return _Builder(gm, shapes, static).build()


def _check_parameters(model):
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InvalidValueError(f"Parameter {name!r} of the model holds NaN or Inf values; "
                                    "retrain or load a valid checkpoint before converting.")


def _propagate_shapes(gm, input_shape):
    shapes = {}
    env = {}
    static = set()  # nodes computing sizes (x.size(0), x.shape[0], ...) rather than tensors
    dtype = next((p.dtype for p in gm.parameters() if p.is_floating_point()), torch.get_default_dtype())
    sample = torch.zeros((2,) + tuple(input_shape), dtype=dtype)  # a float64 model needs float64 inputs
    modules = dict(gm.named_modules())
    with torch.no_grad():
        for node in gm.graph.nodes:
            args = torch.fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
            try:
                if node.op == "placeholder":
                    env[node] = sample
                elif node.op == "call_module":
                    env[node] = modules[node.target](*args, **kwargs)
                elif node.op == "call_function":
                    env[node] = node.target(*args, **kwargs)
                elif node.op == "call_method":
                    env[node] = getattr(args[0], node.target)(*args[1:], **kwargs)
                elif node.op == "get_attr":
                    env[node] = getattr(gm, node.target)
                elif node.op == "output":
                    env[node] = args[0]
            except (RuntimeError, ValueError) as exc:
                raise ShapeError(f"The model does not accept inputs of shape {tuple(input_shape)}: "
                                 f"{node.name} failed with {exc}") from exc
            if isinstance(env[node], torch.Tensor):
                shapes[node] = tuple(env[node].shape[1:])
            elif node.op in ("call_function", "call_method") and _is_size(env[node]):
                static.add(node)
    return shapes, static


def _is_size(value):
    """True for ints, floats and tuples of them (what x.size(0) or x.shape[1:] return)."""
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) for v in value)


class _Builder:
    """Walks the fx graph once and emits :class:`Layer` records."""

    def __init__(self, gm, shapes, static=()):
        self.gm = gm
        self.shapes = shapes
        self.static = set(static)  # size computations: no layer, only arguments of view/reshape
        self.modules = dict(gm.named_modules())
        self.layers = []
        self.alias = {}  # fx node -> name of the layer whose output it carries
        self.stale = set()  # nodes carrying a layer's value from before its activation/BatchNorm was folded in

    def build(self):
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self._emit(node, Layer(node.name, "input", [], self.shapes[node], self.shapes[node]))
            elif node.op == "output":
                result = node.args[0]
                if not isinstance(result, torch.fx.Node):
                    raise ConversionError("The model must return a single tensor.")
                self._check_fresh(result, node)
                last = self.alias[result]
                if last != self.layers[-1].name:
                    raise ConversionError(f"The model's output {last!r} is not its last layer.")
            else:
                self._visit(node)
        _check_finite(self.layers)
        return LayerGraph(self.layers)

    # -- helpers -------------------------------------------------------------------------------
    def _source(self, node):
        arg = node.args[0] if node.args else None
        if not isinstance(arg, torch.fx.Node) or arg not in self.alias:
            raise ConversionError(f"{self._describe(node)} takes an input brianconv cannot follow.")
        self._check_fresh(arg, node)
        return self.alias[arg]

    def _check_fresh(self, arg, node):
        if arg in self.stale:
            raise ConversionError(f"{self._describe(node)} reads the output of layer {self.alias[arg]!r} from before "
                                  "its activation or BatchNorm, which brianconv folds into that layer; use only the "
                                  "activated output.")

    def _retire(self, name):
        """Nodes carrying layer ``name``'s current value go stale: its activation or BatchNorm follows."""
        self.stale.update(node for node, alias in self.alias.items() if alias == name)

    def _describe(self, node):
        if node.op == "call_module":
            return f"module {node.target!r} ({type(self.modules[node.target]).__name__})"
        if node.op == "call_function":
            return f"function {getattr(node.target, '__name__', node.target)!r} (node {node.name})"
        return f"{node.op} {node.target!r} (node {node.name})"

    def _emit(self, node, layer):
        self.layers.append(layer)
        self.alias[node] = layer.name

    def _last(self, source, node, what):
        layer = self.layers[-1]
        if layer.name != source or layer.activation is not None:
            raise ConversionError(f"{self._describe(node)}: {what} must directly follow a Linear or Conv2d "
                                  "layer without activation in between.")
        return layer

    # -- dispatch ------------------------------------------------------------------------------
    def _visit(self, node):
        if node in self.static:
            return None  # x.size(0) and the like: only shapes the arguments of view/reshape
        if node.op == "call_module":
            module = self.modules[node.target]
            handler = _MODULE_HANDLERS.get(type(module))
            if handler is None:
                activation = ACTIVATIONS.get(type(module))
                if activation is not None:
                    return self._activation(node, activation)
                if isinstance(module, _PASS_THROUGH_MODULES):
                    return self._pass_through(node)
                raise ConversionError(f"Unsupported layer: {self._describe(node)}. Supported: {_SUPPORTED}.")
            return handler(self, node, module)
        if node.op == "call_function":
            if node.target in ACTIVATIONS:
                return self._activation(node, ACTIVATIONS[node.target])
            if node.target in _PASS_THROUGH_FUNCTIONS:
                return self._pass_through(node)
            if node.target in _ADD_FUNCTIONS:
                return self._add(node)
            if node.target in _MUL_FUNCTIONS:
                return self._mul(node)
            raise ConversionError(f"Unsupported operation: {self._describe(node)}. Supported: {_SUPPORTED}.")
        if node.op == "call_method":
            if node.target in _PASS_THROUGH_METHODS:
                return self._pass_through(node)
            if node.target in ("relu", "sigmoid", "tanh"):
                return self._activation(node, node.target)
            if node.target == "add":
                return self._add(node)
            if node.target == "mul":
                return self._mul(node)
            raise ConversionError(f"Unsupported tensor method .{node.target}() (node {node.name}). "
                                  f"Supported: {_SUPPORTED}.")
        raise ConversionError(f"Unsupported graph node {self._describe(node)}: parameters used directly "
                              "in forward() cannot be converted; wrap them in an nn.Module.")

    def _pass_through(self, node):
        self.alias[node] = self._source(node)

    def _activation(self, node, name):
        source = self._source(node)
        layer = self.layers[-1]
        if layer.name != source or layer.op == "input":
            raise ConversionError(f"{self._describe(node)}: activation {name!r} must follow a layer "
                                  f"(it follows {source!r}).")
        if layer.activation is not None:
            raise ConversionError(f"{self._describe(node)}: two activations in a row ({layer.activation}, {name}).")
        self._check_activation_parameter(node, name)
        module = self.modules.get(node.target) if node.op == "call_module" else None
        if not (getattr(module, "inplace", False) or node.kwargs.get("inplace", False)):
            self._retire(layer.name)  # an in-place activation changes the earlier value too
        layer.activation = name
        self.alias[node] = layer.name

    def _check_activation_parameter(self, node, name):
        if name not in _ACTIVATION_PARAMETERS:
            return
        parameter, default = _ACTIVATION_PARAMETERS[name]
        if node.op == "call_module":
            value = getattr(self.modules[node.target], parameter, default)
        else:
            value = node.kwargs.get(parameter, node.args[1] if len(node.args) > 1 else default)
        feature_axis = value in (None, 1) or (value == -1 and len(self.shapes[node]) == 1)
        if value != default and not (name == "softmax" and feature_axis):
            wanted = "dim=1 (the features)" if name == "softmax" else f"{parameter}={default!r}"
            raise ConversionError(f"{self._describe(node)}: {name} with {parameter}={value!r} is not supported; "
                                  f"brianconv represents {name} with {wanted} only.")

    def _add(self, node):
        sources = [a for a in node.args if isinstance(a, torch.fx.Node)]
        if len(sources) != 2 or len(node.args) != 2 or node.kwargs:
            raise ConversionError(f"{self._describe(node)}: only the sum of two layer outputs is supported.")
        for a in sources:
            if a not in self.alias:
                raise ConversionError(f"{self._describe(node)}: only the sum of two layer outputs is supported.")
            self._check_fresh(a, node)
        names = [self.alias[a] for a in sources]
        shapes = [self.shapes[a] for a in sources]
        if int(np.prod(shapes[0])) != int(np.prod(shapes[1])):
            raise ShapeError(f"{self._describe(node)} adds tensors of shapes {shapes[0]} and {shapes[1]}.")
        self._emit(node, Layer(node.name, "add", names, shapes[1], self.shapes[node]))

    def _mul(self, node):
        sources = [a for a in node.args if isinstance(a, torch.fx.Node) and a in self.alias]
        if len(sources) != 2 or len(node.args) != 2 or node.kwargs:
            raise ConversionError(f"{self._describe(node)}: only the product of two layer outputs is supported "
                                  "(multiply by a constant inside a Linear or Conv2d instead).")
        for a in sources:
            self._check_fresh(a, node)
        sizes = [int(np.prod(self.shapes[a])) for a in sources]
        if sizes[1] > sizes[0]:  # the per-channel factor goes second
            sources, sizes = sources[::-1], sizes[::-1]
        shape = self.shapes[node]
        per_channel = len(shape) == 3 and sizes[1] == shape[0]
        if sizes[0] != int(np.prod(shape)) or not (sizes[1] == sizes[0] or per_channel):
            raise ShapeError(f"{self._describe(node)} multiplies tensors of shapes {self.shapes[sources[0]]} and "
                             f"{self.shapes[sources[1]]}; supported: equal sizes, or one value per channel of a "
                             "(C, H, W) map.")
        self._emit(node, Layer(node.name, "mul", [self.alias[a] for a in sources], self.shapes[sources[0]], shape,
                               params=dict(second_size=sizes[1])))

    def _adaptive_pool(self, node, module):
        in_shape, out_shape = self.shapes[node.args[0]], self.shapes[node]
        if any(i % o for i, o in zip(in_shape[1:], out_shape[1:])):
            raise ConversionError(f"{self._describe(node)}: adaptive pooling from {in_shape[1:]} to {out_shape[1:]} "
                                  "has windows of different sizes; use an output size that divides the input size.")
        kernel = tuple(i // o for i, o in zip(in_shape[1:], out_shape[1:]))
        params = dict(kernel_size=kernel, stride=kernel, padding=(0, 0), count_include_pad=True)
        self._emit(node, Layer(node.target, "avgpool", [self._source(node)], in_shape, out_shape, params=params))

    def _linear(self, node, module):
        source = self._source(node)
        in_shape = self.shapes[node.args[0]]
        if int(np.prod(in_shape)) != module.in_features:
            raise ShapeError(f"{self._describe(node)} expects {module.in_features} inputs but receives {in_shape}.")
        bias = _numpy(module.bias) if module.bias is not None else np.zeros(module.out_features)
        self._emit(node, Layer(node.target, "linear", [source], in_shape, self.shapes[node],
                               _numpy(module.weight), bias))

    def _conv(self, node, module):
        if module.padding_mode != "zeros":
            raise ConversionError(f"{self._describe(node)}: padding mode {module.padding_mode!r} is not "
                                  "supported; use zero padding.")
        padding = module.padding
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            padding = tuple(d * (k - 1) // 2 for d, k in zip(module.dilation, module.kernel_size))
            if any((d * (k - 1)) % 2 for d, k in zip(module.dilation, module.kernel_size)):
                raise ConversionError(f"{self._describe(node)}: padding='same' with an even kernel is asymmetric; "
                                      "pad explicitly.")
        bias = _numpy(module.bias) if module.bias is not None else np.zeros(module.out_channels)
        params = dict(kernel_size=tuple(module.kernel_size), stride=tuple(module.stride), padding=tuple(padding),
                      dilation=tuple(module.dilation), groups=module.groups)
        self._emit(node, Layer(node.target, "conv", [self._source(node)], self.shapes[node.args[0]],
                               self.shapes[node], _numpy(module.weight), bias, params))

    def _pool(self, node, module):
        kind = "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool"
        pair = nn.modules.utils._pair
        if getattr(module, "ceil_mode", False) or (kind == "maxpool" and pair(module.dilation) != (1, 1)):
            raise ConversionError(f"{self._describe(node)}: ceil_mode and dilated pooling are not supported.")
        if kind == "avgpool" and module.divisor_override is not None:
            raise ConversionError(f"{self._describe(node)}: divisor_override is not supported.")
        stride = module.stride if module.stride is not None else module.kernel_size
        params = dict(kernel_size=pair(module.kernel_size), stride=pair(stride), padding=pair(module.padding),
                      count_include_pad=getattr(module, "count_include_pad", True))
        self._emit(node, Layer(node.target, kind, [self._source(node)], self.shapes[node.args[0]],
                               self.shapes[node], params=params))

    def _batchnorm(self, node, module):
        layer = self._last(self._source(node), node, "BatchNorm")
        if layer.op not in ("linear", "conv"):
            raise ConversionError(f"{self._describe(node)}: BatchNorm must follow a Linear or Conv2d layer, "
                                  f"not {layer.op}.")
        scale, shift = _batchnorm_affine(module)
        self._retire(layer.name)
        shape = (-1,) + (1,) * (layer.weight.ndim - 1)
        layer.weight = layer.weight * scale.reshape(shape)
        layer.bias = layer.bias * scale + shift
        self.alias[node] = layer.name


def _batchnorm_affine(module):
    """BatchNorm in eval mode as ``y = scale * x + shift`` per channel."""
    if module.running_mean is None:
        raise ConversionError("BatchNorm without running statistics (track_running_stats=False) cannot be folded.")
    var = _numpy(module.running_var)
    mean = _numpy(module.running_mean)
    gamma = _numpy(module.weight) if module.affine else np.ones_like(mean)
    beta = _numpy(module.bias) if module.affine else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + module.eps)
    return scale, beta - mean * scale


def _numpy(tensor):
    return tensor.detach().cpu().double().numpy().copy()


def _check_finite(layers):
    for layer in layers:
        for what in ("weight", "bias"):
            value = getattr(layer, what)
            if value is not None and not np.all(np.isfinite(value)):
                raise InvalidValueError(f"Layer {layer.name!r} has NaN/Inf in its {what} (after BatchNorm folding); "
                                        "check the checkpoint and the BatchNorm running variance.")


_MODULE_HANDLERS = {
    nn.Linear: _Builder._linear,
    nn.Conv2d: _Builder._conv,
    nn.AvgPool2d: _Builder._pool,
    nn.MaxPool2d: _Builder._pool,
    nn.AdaptiveAvgPool2d: _Builder._adaptive_pool,
    nn.BatchNorm1d: _Builder._batchnorm,
    nn.BatchNorm2d: _Builder._batchnorm,
}
