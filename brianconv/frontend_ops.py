"""The ATen operators brianconv reads, one table from operator to handler.

(Longer than the ~400 lines of a module, 463 lines of which 8 are this docstring: it is one table
from ATen operator to handler, with a handler per operator family; splitting the table would scatter
the set of supported spellings.)

:func:`build_layers` walks a :class:`torch.export.ExportedProgram` once and turns each node into
a :class:`~brianconv.graph.Layer`, an attribute of the layer it follows (activation, folded
BatchNorm), or nothing (reshapes, dropout). The table :data:`HANDLERS` is keyed by ATen operator
packet (``torch.ops.aten.relu``): every overload of an operator shares its handler, and every
in-place variant (``relu_``, ``add_``, ``hardtanh_``, ...) is mapped to the same handler.
"""

import operator
import os
import re
from functools import partial

import numpy as np
import torch
import torch.fx

from .errors import ConversionError, InvalidValueError, ShapeError
from .graph import ACTIVATIONS, Layer, input_name, is_torch_layer

__all__ = ["HANDLERS", "SUPPORTED", "build_layers"]

aten = torch.ops.aten

#: Parametrised activations: ``name -> {argument: the value the layer graph applies}``. Other
#: values would make the graph's forward pass differ from the model's, so they are rejected.
_ACTIVATION_PARAMETERS = {"leaky_relu": {"negative_slope": 0.01}, "elu": {"alpha": 1.0, "scale": 1.0, "input_scale": 1.0},
                          "gelu": {"approximate": "none"}}
SUPPORTED = ("Linear, Conv2d, AvgPool2d, AdaptiveAvgPool2d (to a divisor of the input size), MaxPool2d, BatchNorm1d/2d "
             "(folded, or a per-channel affine layer), Flatten/view/reshape, Dropout/Identity (dropped), element-wise add, "
             "element-wise or per-channel mul, torch.cat along the channels, softmax/log_softmax as the output head, "
             "the activations " + ", ".join(ACTIVATIONS) + " (clipped_relu: relu6, hardtanh(0, a), clamp(0, a))")


def build_layers(program):
    """The layers of ``program`` in execution order, and the dropped output head (or None).

    Parameters
    ----------
    program : torch.export.ExportedProgram
        One user input of shape ``(B, *input_shape)``.

    Returns
    -------
    layers : list of Layer
    head : str or None
        ``"softmax"`` or ``"log_softmax"`` if one was dropped from the output.
    """
    return _Builder(program).build()


def _shape(node):
    """Shape of one sample of ``node``'s value (the batch axis dropped)."""
    return tuple(int(s) for s in node.meta["val"].shape[1:])


def _arguments(node):
    """``node``'s arguments by name, defaults of the operator's schema filled in."""
    values = {}
    for i, argument in enumerate(node.target._schema.arguments):
        if i < len(node.args) and not argument.kwarg_only:
            values[argument.name] = node.args[i]
        elif argument.name in node.kwargs:
            values[argument.name] = node.kwargs[argument.name]
        elif argument.has_default_value():
            values[argument.name] = argument.default_value
    return values


def _pair(value):
    value = list(value) if isinstance(value, (list, tuple)) else [value]
    return tuple(int(v) for v in (value * 2 if len(value) == 1 else value))


def _numpy(tensor):
    return tensor.detach().cpu().double().numpy().copy()


def _op_name(node):
    target = node.target
    return target.overloadpacket.__name__ if isinstance(target, torch._ops.OpOverload) else getattr(
        target, "__name__", str(target))


def _is_inplace(node):
    return isinstance(node.target, torch._ops.OpOverload) and node.target._schema.name.endswith("_")


def _torch_layer(node):
    """``(path, class name)`` of the ``torch.nn`` layer ``node`` belongs to, or None (functional code)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path, cls = list(stack.values())[-1]
    cls = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
    return (path, cls.rsplit(".", 1)[-1]) if path and is_torch_layer(cls) else None


_TORCH_DIR = os.path.dirname(torch.__file__)
_FRAME = re.compile(r'\s*File "([^"]+)", line (\d+), in ')


def _source_line(node):
    """``'line N of "FILE": CODE'`` of the model code the node comes from (the innermost frame
    outside torch), or ``''`` when the program carries no such frame (e.g. code typed at a prompt)."""
    lines = (node.meta.get("stack_trace") or "").splitlines() + [""]
    frames = [(match[1], match[2], "" if _FRAME.match(code) else code.strip())
              for match, code in zip(map(_FRAME.match, lines), lines[1:]) if match]
    user = [frame for frame in frames if not frame[0].startswith(_TORCH_DIR)]
    if not user:
        return ""
    path, line, code = user[-1]
    return f'line {line} of "{path}"' + (f": {code}" if code else "")


def _describe(node):
    """How an error names ``node``: the torch layer or the operation, and the line of ``forward``."""
    layer = _torch_layer(node)
    what = f"operation {_op_name(node)!r} (node {node.name})"
    if layer is not None:
        what = f"module {layer[0]!r} ({layer[1]}), {what}"
    line = _source_line(node)
    return f"{what} at {line}" if line else what


class _Builder:
    """Walks the exported graph once and emits :class:`Layer` records."""

    def __init__(self, program):
        self.program = program
        signature = program.graph_signature
        names = {**signature.inputs_to_parameters, **signature.inputs_to_buffers,
                 **signature.inputs_to_lifted_tensor_constants}
        tensors = {**program.constants, **program.state_dict}
        self.tensors = {node: tensors[key] for node, key in names.items()}  # placeholder name -> tensor
        self.user_inputs = set(signature.user_inputs)
        self.layers = []
        self.names = set()
        self.alias = {}  # node -> name of the layer whose output it carries
        self.stale = set()  # nodes carrying a layer's value from before its activation/BatchNorm was folded in
        self.head = None

    def build(self):
        for node in self.program.graph.nodes:
            if node.op == "placeholder":
                if node.name in self.user_inputs:
                    self._emit(node, Layer(input_name(node.name), "input", [], _shape(node), _shape(node)))
            elif node.op == "output":
                self._output(node)
            elif node.op == "call_function":
                handler = HANDLERS.get(getattr(node.target, "overloadpacket", node.target))
                if handler is None:
                    raise ConversionError(f"Unsupported {_describe(node)}. Supported: {SUPPORTED}.")
                handler(self, node)
            else:
                raise ConversionError(f"Unsupported graph node {node.op} {node.name}: {_describe(node)}.")
        _check_finite(self.layers)
        return self.layers, self.head

    def _output(self, node):
        results = node.args[0]
        if len(results) != 1 or not isinstance(results[0], torch.fx.Node):
            raise ConversionError("The model must return a single tensor.")
        self._check_fresh(results[0], node)
        last = self.alias[results[0]]
        if last != self.layers[-1].name:
            raise ConversionError(f"The model's output {last!r} is not its last layer.")

    # -- helpers -------------------------------------------------------------------------------
    def _name(self, node):
        """The torch layer's module path, else the node name; made unique (``_1``, ``_2``, ...)."""
        layer = _torch_layer(node)
        base = layer[0] if layer is not None else node.name
        name, k = base, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        return name

    def _source(self, node, arg=None):
        arg = node.args[0] if arg is None else arg
        if not isinstance(arg, torch.fx.Node) or arg not in self.alias:
            raise ConversionError(f"{_describe(node)} takes an input brianconv cannot follow (a parameter or a "
                                  "constant computed in forward); only layer outputs can be inputs.")
        self._check_fresh(arg, node)
        return self.alias[arg]

    def _check_fresh(self, arg, node):
        if arg in self.stale:
            raise ConversionError(f"{_describe(node)} reads the output of layer {self.alias[arg]!r} from before "
                                  "its activation or BatchNorm, which brianconv folds into that layer; use only the "
                                  "activated output.")

    def _retire(self, name):
        """Nodes carrying layer ``name``'s current value go stale: its activation or BatchNorm follows."""
        self.stale.update(node for node, alias in self.alias.items() if alias == name)

    def _emit(self, node, layer):
        self.layers.append(layer)
        self.names.add(layer.name)
        self.alias[node] = layer.name
        if _is_inplace(node):  # x.add_(y): the node x now carries the new layer too
            self.alias[node.args[0]] = layer.name

    def _parameter(self, node, arg, what):
        if arg is None:
            return None
        if not isinstance(arg, torch.fx.Node) or arg.name not in self.tensors:
            raise ConversionError(f"{_describe(node)}: its {what} must be a parameter or buffer of the model, "
                                  "not a value computed in forward.")
        return self.tensors[arg.name]

    # -- handlers ------------------------------------------------------------------------------
    def _pass_through(self, node):
        shape_in, shape_out = node.args[0].meta["val"].shape, node.meta["val"].shape
        if shape_out[0] != shape_in[0] or shape_out.numel() != shape_in.numel():
            raise ConversionError(f"{_describe(node)} reshapes {tuple(shape_in)} to {tuple(shape_out)}; only reshapes "
                                  "that keep the batch axis first and every sample's values are supported.")
        self.alias[node] = self._source(node)

    def _skip(self, node):
        """Size arithmetic (``sym_size``) of a program exported with a dynamic batch: no layer."""

    def _getitem(self, node):
        if node.args[1] != 0 or node.args[0] not in self.alias:
            raise ConversionError(f"Unsupported {_describe(node)}. Supported: {SUPPORTED}.")
        self.alias[node] = self._source(node)

    def _activation(self, node, name):
        source = self._source(node)
        layer = self.layers[-1]
        if layer.name != source or layer.op == "input":
            raise ConversionError(f"{_describe(node)}: activation {name!r} must follow a layer (it follows {source!r}).")
        if layer.activation is not None:
            raise ConversionError(f"{_describe(node)}: two activations in a row ({layer.activation}, {name}).")
        for parameter, wanted in _ACTIVATION_PARAMETERS.get(name, {}).items():
            value = _arguments(node)[parameter]
            if value != wanted:
                raise ConversionError(f"{_describe(node)}: {name} with {parameter}={value!r} is not supported; "
                                      f"brianconv represents {name} with {parameter}={wanted!r} only.")
        if not _is_inplace(node):
            self._retire(layer.name)  # an in-place activation changes the earlier value too
        layer.activation = name
        self.alias[node] = layer.name
        return layer

    def _clipped_relu(self, node):
        """``relu6``, ``hardtanh(0, a)``, ``clamp(0, a)``, ``clamp_min(0)``, ``clamp(relu(x), max=a)``: a ReLU
        clipped at ``a`` (or not clipped)."""
        args = _arguments(node)
        op = _op_name(node).rstrip("_")
        low, high = {"relu6": (0.0, 6.0), "hardtanh": (args.get("min_val"), args.get("max_val")),
                     "clamp_min": (args.get("min"), None)}.get(op, (args.get("min"), args.get("max")))
        if low in (None, 0) and not isinstance(high, torch.fx.Node) and self._follows_relu(node):
            low = 0.0  # clamp(relu(x), max=a): one clipped ReLU, as relu(x) >= 0 already
            self.layers[-1].activation = None
        if any(isinstance(v, torch.fx.Node) for v in (low, high)) or low is None or float(low) != 0.0:
            raise ConversionError(f"{_describe(node)}: {op} with lower bound {low!r} is not supported; brianconv "
                                  "represents clipping only as ReLU(x) or min(ReLU(x), a): use a lower bound of 0.")
        if high is None or float(high) == float("inf"):
            return self._activation(node, "relu")
        if float(high) <= 0:
            raise ConversionError(f"{_describe(node)}: {op} with upper bound {high!r} is constant; use a bound > 0.")
        self._activation(node, "clipped_relu").params["clip"] = float(high)

    def _follows_relu(self, node):
        """True if ``node`` reads the ReLU output of the last layer."""
        layer = self.layers[-1]
        arg = node.args[0]
        return layer.activation == "relu" and self.alias.get(arg) == layer.name and arg not in self.stale

    def _head(self, node):
        args = _arguments(node)
        name = _op_name(node).lstrip("_")
        if not self._ends_the_network(node):
            raise ConversionError(f"{_describe(node)}: {name} is only supported as the output head (the last "
                                  "operation, dropped as it keeps the arg-max); remove it from the middle of the network.")
        shape = _shape(node)
        if len(shape) != 1 or args["dim"] not in (1, -1):
            raise ConversionError(f"{_describe(node)}: {name} over dim={args['dim']} of a {shape} output is not "
                                  "supported; apply it over the features (dim=1) of a flat (N, F) output.")
        self.head = name
        self.alias[node] = self._source(node)

    def _ends_the_network(self, node):
        """True if ``node``'s value reaches the output only through reshapes and other heads."""
        for user in node.users:
            if user.op == "output":
                continue
            handler = HANDLERS.get(getattr(user.target, "overloadpacket", None))
            if handler not in (_Builder._pass_through, _Builder._head) or not self._ends_the_network(user):
                return False
        return True

    def _add(self, node):
        args = _arguments(node)
        sources = [args["self"], args["other"]]
        if not all(isinstance(a, torch.fx.Node) and a in self.alias for a in sources) or args.get("alpha", 1) != 1:
            raise ConversionError(f"{_describe(node)}: only the sum of two layer outputs is supported.")
        names = [self._source(node, a) for a in sources]
        shapes = [_shape(a) for a in sources]
        if int(np.prod(shapes[0])) != int(np.prod(shapes[1])):
            raise ShapeError(f"{_describe(node)} adds tensors of shapes {shapes[0]} and {shapes[1]}.")
        self._emit(node, Layer(self._name(node), "add", names, shapes[1], _shape(node)))

    def _mul(self, node):
        sources = [a for a in node.args if isinstance(a, torch.fx.Node) and a in self.alias]
        if len(sources) != 2 or len(node.args) != 2 or node.kwargs:
            raise ConversionError(f"{_describe(node)}: only the product of two layer outputs is supported "
                                  "(multiply by a constant inside a Linear or Conv2d instead).")
        for a in sources:
            self._check_fresh(a, node)
        sizes = [int(np.prod(_shape(a))) for a in sources]
        if sizes[1] > sizes[0]:  # the per-channel factor goes second
            sources, sizes = sources[::-1], sizes[::-1]
        shape = _shape(node)
        per_channel = len(shape) == 3 and sizes[1] == shape[0]
        if sizes[0] != int(np.prod(shape)) or not (sizes[1] == sizes[0] or per_channel):
            raise ShapeError(f"{_describe(node)} multiplies tensors of shapes {_shape(sources[0])} and "
                             f"{_shape(sources[1])}; supported: equal sizes, or one value per channel of a "
                             "(C, H, W) map.")
        self._emit(node, Layer(self._name(node), "mul", [self.alias[a] for a in sources], _shape(sources[0]), shape,
                               params={"second_size": sizes[1]}))

    def _cat(self, node):
        args = _arguments(node)
        tensors, shape = list(args["tensors"]), _shape(node)
        if args["dim"] % (len(shape) + 1) != 1:
            raise ConversionError(f"{_describe(node)}: concatenation along dim={args['dim']} of {len(shape) + 1}-d "
                                  "tensors is not supported; brianconv concatenates along the channels (dim=1).")
        names = [self._source(node, a) for a in tensors]
        sizes = tuple(int(np.prod(_shape(a))) for a in tensors)
        self._emit(node, Layer(self._name(node), "cat", names, _shape(tensors[0]), shape,
                               params={"axis": 0, "sizes": sizes}))

    def _linear(self, node):
        args = _arguments(node)
        source = self._source(node, args["input"])
        weight = _numpy(self._parameter(node, args["weight"], "weight"))
        in_shape = _shape(args["input"])
        if int(np.prod(in_shape)) != weight.shape[1]:
            raise ShapeError(f"{_describe(node)} expects {weight.shape[1]} inputs but receives {in_shape}.")
        bias = self._parameter(node, args["bias"], "bias")
        bias = _numpy(bias) if bias is not None else np.zeros(weight.shape[0])
        self._emit(node, Layer(self._name(node), "linear", [source], in_shape, _shape(node), weight, bias))

    def _conv(self, node):
        args = _arguments(node)
        if args.get("transposed", False):
            raise ConversionError(f"Unsupported {_describe(node)}: transposed convolution. Supported: {SUPPORTED}.")
        weight = _numpy(self._parameter(node, args["weight"], "weight"))
        if weight.ndim != 4:
            raise ConversionError(f"Unsupported {_describe(node)}: a {weight.ndim - 2}-d convolution; brianconv "
                                  "converts Conv2d only.")
        kernel, dilation, padding = weight.shape[2:], _pair(args["dilation"]), args["padding"]
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if any((d * (k - 1)) % 2 for d, k in zip(dilation, kernel)):
                raise ConversionError(f"{_describe(node)}: padding='same' with an even kernel is asymmetric; "
                                      "pad explicitly.")
            padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel))
        bias = self._parameter(node, args["bias"], "bias")
        bias = _numpy(bias) if bias is not None else np.zeros(weight.shape[0])
        params = {"kernel_size": tuple(kernel), "stride": _pair(args["stride"]), "padding": _pair(padding),
                  "dilation": dilation, "groups": int(args["groups"])}
        self._emit(node, Layer(self._name(node), "conv", [self._source(node, args["input"])], _shape(args["input"]),
                               _shape(node), weight, bias, params))

    def _pool(self, node):
        args = _arguments(node)
        kind = "maxpool" if _op_name(node) == "max_pool2d" else "avgpool"
        if args["ceil_mode"] or (kind == "maxpool" and _pair(args["dilation"]) != (1, 1)):
            raise ConversionError(f"{_describe(node)}: ceil_mode and dilated pooling are not supported.")
        if kind == "avgpool" and args["divisor_override"] is not None:
            raise ConversionError(f"{_describe(node)}: divisor_override is not supported.")
        kernel = _pair(args["kernel_size"])
        params = {"kernel_size": kernel, "stride": _pair(args["stride"]) if args["stride"] else kernel,
                  "padding": _pair(args["padding"]), "count_include_pad": bool(args.get("count_include_pad", True))}
        self._emit(node, Layer(self._name(node), kind, [self._source(node)], _shape(node.args[0]), _shape(node),
                               params=params))

    def _adaptive_pool(self, node):
        in_shape, out_shape = _shape(node.args[0]), _shape(node)
        if any(i % o for i, o in zip(in_shape[1:], out_shape[1:])):
            raise ConversionError(f"{_describe(node)}: adaptive pooling from {in_shape[1:]} to {out_shape[1:]} "
                                  "has windows of different sizes; use an output size that divides the input size.")
        kernel = tuple(i // o for i, o in zip(in_shape[1:], out_shape[1:]))
        params = {"kernel_size": kernel, "stride": kernel, "padding": (0, 0), "count_include_pad": True}
        self._emit(node, Layer(self._name(node), "avgpool", [self._source(node)], in_shape, out_shape, params=params))

    def _batchnorm(self, node):
        """Fold into the weighted layer it directly follows (no activation between), else an ``affine`` layer."""
        args = _arguments(node)
        if args.get("training", False) or args["running_mean"] is None:
            raise ConversionError(f"{_describe(node)}: BatchNorm without running statistics (track_running_stats="
                                  "False, or a program exported in training mode) cannot be folded; keep the "
                                  "running statistics and export the model after model.eval().")
        mean = _numpy(self._parameter(node, args["running_mean"], "running mean"))
        var = _numpy(self._parameter(node, args["running_var"], "running variance"))
        gamma, beta = (self._parameter(node, args[k], k) for k in ("weight", "bias"))
        scale = (_numpy(gamma) if gamma is not None else np.ones_like(mean)) / np.sqrt(var + args["eps"])
        shift = (_numpy(beta) if beta is not None else np.zeros_like(mean)) - mean * scale
        source, layer = self._source(node), self.layers[-1]
        foldable = layer.is_weighted and layer.activation is None and _shape(node.args[0]) == layer.out_shape
        if layer.name == source and foldable:
            self._retire(layer.name)
            layer.weight = layer.weight * scale.reshape((-1,) + (1,) * (layer.weight.ndim - 1))
            layer.bias = layer.bias * scale + shift
            self.alias[node] = layer.name
        else:
            shape = _shape(node)
            self._emit(node, Layer(self._name(node), "affine", [source], shape, shape,
                                   params={"scale": scale, "shift": shift}))

    def _pad(self, node):
        mode = _arguments(node).get("mode", "constant")
        raise ConversionError(f"{_describe(node)}: explicit padding (mode {mode!r}, e.g. a Conv2d padding_mode other "
                              "than 'zeros') is not supported; use the zero padding of Conv2d.")


def _check_finite(layers):
    for layer in layers:
        values = {"weight": layer.weight, "bias": layer.bias, "scale": layer.params.get("scale"),
                  "shift": layer.params.get("shift")}
        for what, value in values.items():
            if value is not None and not np.all(np.isfinite(value)):
                raise InvalidValueError(f"Layer {layer.name!r} has NaN/Inf in its {what} (after BatchNorm folding); "
                                        "check the checkpoint and the BatchNorm running variance.")


def _with_inplace_variants(table):
    """``table`` plus, for every operator ``op`` with an in-place variant ``op_``, ``op_`` -> the same handler."""
    full = dict(table)
    for op, handler in table.items():
        if isinstance(op, torch._ops.OpOverloadPacket) and hasattr(aten, op.__name__ + "_"):
            full.setdefault(getattr(aten, op.__name__ + "_"), handler)
    return full


_B = _Builder
#: ATen operator packet (or ``operator.getitem``) -> handler ``(builder, node)``.
HANDLERS = _with_inplace_variants({
    aten.linear: _B._linear, aten.conv2d: _B._conv, aten.convolution: _B._conv,
    aten.max_pool2d: _B._pool, aten.avg_pool2d: _B._pool, aten.adaptive_avg_pool2d: _B._adaptive_pool,
    aten.batch_norm: _B._batchnorm, aten._native_batch_norm_legit_no_training: _B._batchnorm,
    operator.getitem: _B._getitem,  # item 0 of _native_batch_norm_legit_no_training
    aten.add: _B._add, aten.mul: _B._mul, aten.cat: _B._cat, aten.concat: _B._cat, aten.concatenate: _B._cat,
    aten.relu: partial(_B._activation, name="relu"), aten.sigmoid: partial(_B._activation, name="sigmoid"),
    aten.silu: partial(_B._activation, name="silu"), aten.tanh: partial(_B._activation, name="tanh"),
    aten.gelu: partial(_B._activation, name="gelu"), aten.leaky_relu: partial(_B._activation, name="leaky_relu"),
    aten.elu: partial(_B._activation, name="elu"),
    aten.relu6: _B._clipped_relu, aten.hardtanh: _B._clipped_relu, aten.clamp: _B._clipped_relu,
    aten.clip: _B._clipped_relu, aten.clamp_min: _B._clipped_relu,
    aten.softmax: _B._head, aten._softmax: _B._head, aten.log_softmax: _B._head, aten._log_softmax: _B._head,
    aten.flatten: _B._pass_through, aten.view: _B._pass_through, aten.reshape: _B._pass_through,
    aten._unsafe_view: _B._pass_through, aten.squeeze: _B._pass_through, aten.unsqueeze: _B._pass_through,
    aten.contiguous: _B._pass_through, aten.clone: _B._pass_through, aten.alias: _B._pass_through,
    aten.detach: _B._pass_through, aten.dropout: _B._pass_through, aten.feature_dropout: _B._pass_through,
    aten.alpha_dropout: _B._pass_through, aten.feature_alpha_dropout: _B._pass_through,
    aten.pad: _B._pad, aten.sym_size: _B._skip,
})
