"""Index arrays (pre, post, weight) for every layer type, written once for all schemes.

Neurons of a layer are numbered like ``tensor.reshape(-1)`` of one sample: for a feature map
of shape ``(C, H, W)`` neuron ``(c, y, x)`` has index ``(c * H + y) * W + x``. The arrays
returned here define a synapse from ``pre[k]`` to ``post[k]`` with weight ``weight[k]`` such
that, for any input vector ``x`` (flattened the same way),

    ``y[post] = sum over k with post[k] = post of weight[k] * x[pre[k]]``

equals the torch layer's output without bias and activation (for ``maxpool`` the sum becomes a
maximum over the same synapses). Everything is vectorised with numpy: a convolution with
millions of synapses takes well under a second.
"""

from dataclasses import dataclass

import numpy as np

from .errors import ConversionError

__all__ = ["Connections", "make_connections", "connections_for", "linear", "conv2d", "pool2d", "one_to_one", "channel_broadcast",
           "compose", "BLOCK", "blocks"]


@dataclass
class Connections:
    """Synapses of one projection.

    Attributes
    ----------
    pre, post : np.ndarray of int32, shape (n_synapses,)
        Source and target neuron indices.
    weight : np.ndarray of float64, shape (n_synapses,)
        The layer's weight on each synapse (1 for max-pooling); float32 in a description made with
        ``precision="float32"``, which stores them so in both processes.
    n_pre, n_post : int
        Sizes of the source and target populations.
    """

    pre: np.ndarray
    post: np.ndarray
    weight: np.ndarray
    n_pre: int
    n_post: int

    def __len__(self):
        return len(self.pre)

    def fan_out(self):
        """Number of outgoing synapses of every source neuron, shape (n_pre,)."""
        return _count(self.pre, self.n_pre)

    def fan_in(self):
        """Number of incoming synapses of every target neuron, shape (n_post,)."""
        return _count(self.post, self.n_post)

    def dense(self):
        """The equivalent ``(n_post, n_pre)`` weight matrix (for tests on small layers)."""
        matrix = np.zeros((self.n_post, self.n_pre))
        np.add.at(matrix, (self.post, self.pre), self.weight)
        return matrix

    def apply(self, x):
        """``y = W x`` for a batch ``x`` of shape (N, n_pre), using the synapse list (sum)."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        y = np.zeros((len(x), self.n_post))
        for start in range(0, len(self.pre), 1 << 22):
            sl = slice(start, start + (1 << 22))
            np.add.at(y.T, self.post[sl], (x[:, self.pre[sl]] * self.weight[sl]).T)
        return y


#: Synapses a blocked pass over a projection's arrays handles at once (its temporaries: a few MB).
BLOCK = 1 << 20


def blocks(array, block=BLOCK):
    """``(start, array[start:start + block])`` for consecutive blocks of ``array`` (views, no copies)."""
    for start in range(0, len(array), block):
        yield start, array[start:start + block]


def _count(indices, size):
    """``np.bincount(indices, minlength=size)`` (int64), counted a block at a time: bincount copies
    its input to int64, 8 bytes per synapse of a whole projection at once."""
    counts = np.zeros(size, dtype=np.int64)
    for _, part in blocks(indices):
        counts += np.bincount(part, minlength=size)
    return counts


def make_connections(pre, post, weight, n_pre, n_post):
    """:class:`Connections` from index and weight arrays (made contiguous int32 / float64)."""
    return Connections(np.ascontiguousarray(pre, dtype=np.int32), np.ascontiguousarray(post, dtype=np.int32),
                       np.ascontiguousarray(weight, dtype=np.float64), int(n_pre), int(n_post))


def linear(weight, n_pre=None):
    """All-to-all synapses of a Linear layer with ``weight`` of shape ``(out, in)``."""
    n_out, n_in = weight.shape
    if n_pre is not None and n_pre != n_in:
        raise ConversionError(f"Linear layer expects {n_in} inputs but its source has {n_pre} neurons.")
    post, pre = np.meshgrid(np.arange(n_out), np.arange(n_in), indexing="ij")
    return make_connections(pre.ravel(), post.ravel(), weight.ravel(), n_in, n_out)


def _window_indices(in_hw, out_hw, kernel, stride, padding, dilation):
    """For each kernel offset (ky, kx): flat output positions and flat input positions that are valid.

    Yields ``(ky, kx, out_flat, in_flat)`` with int arrays of equal length.
    """
    (hi, wi), (ho, wo) = in_hw, out_hw
    oy, ox = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
    for ky in range(kernel[0]):
        for kx in range(kernel[1]):
            iy = oy * stride[0] - padding[0] + ky * dilation[0]
            ix = ox * stride[1] - padding[1] + kx * dilation[1]
            valid = (iy >= 0) & (iy < hi) & (ix >= 0) & (ix < wi)
            yield ky, kx, (oy * wo + ox)[valid], (iy * wi + ix)[valid]


def conv2d(weight, in_shape, out_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Synapses of a Conv2d layer.

    Parameters
    ----------
    weight : np.ndarray, shape (C_out, C_in / groups, kH, kW)
    in_shape, out_shape : tuple (C, H, W)
        Shapes of one input sample and one output sample.
    stride, padding, dilation : pairs of int
    groups : int
        Channel groups (``groups == C_in == C_out`` is a depthwise convolution).
    """
    c_out, c_in_group, kh, kw = weight.shape
    c_in, hi, wi = in_shape
    _, ho, wo = out_shape
    if c_in != c_in_group * groups or c_out % groups:
        raise ConversionError(f"Conv2d weight {weight.shape} with groups={groups} does not fit an input "
                              f"with {c_in} channels.")
    out_per_group = c_out // groups
    co = np.arange(c_out, dtype=np.int64)
    ci = (co // out_per_group)[:, None] * c_in_group + np.arange(c_in_group)[None, :]  # (C_out, C_in/g)
    windows = list(_window_indices((hi, wi), (ho, wo), (kh, kw), stride, padding, dilation))
    total = sum(c_out * c_in_group * len(out_flat) for _, _, out_flat, _ in windows)
    # filled offset by offset, so that only one kernel offset's temporaries exist at a time
    pre, post = np.empty(total, dtype=np.int32), np.empty(total, dtype=np.int32)
    weights = np.empty(total, dtype=np.float64)
    start = 0
    for ky, kx, out_flat, in_flat in windows:
        block = (c_out, c_in_group, len(out_flat))  # synapses of this offset, in this order
        stop = start + int(np.prod(block))
        pre[start:stop].reshape(block)[...] = ci[:, :, None] * (hi * wi) + in_flat[None, None, :]
        post[start:stop].reshape(block)[...] = co[:, None, None] * (ho * wo) + out_flat[None, None, :]
        weights[start:stop].reshape(block)[...] = weight[:, :, ky, kx][:, :, None]
        start = stop
    return make_connections(pre, post, weights, c_in * hi * wi, c_out * ho * wo)


def pool2d(in_shape, out_shape, kernel_size, stride, padding=(0, 0), average=True, count_include_pad=True):
    """Synapses of an average or max pooling layer (each channel pooled separately).

    For ``average=True`` the weights are ``1 / (kernel area)`` (or ``1 / valid positions`` with
    ``count_include_pad=False``); for max-pooling they are 1 and the scheme takes the maximum.
    """
    c, hi, wi = in_shape
    _, ho, wo = out_shape
    windows = list(_window_indices((hi, wi), (ho, wo), kernel_size, stride, padding, (1, 1)))
    out_flat = np.concatenate([w[2] for w in windows])
    in_flat = np.concatenate([w[3] for w in windows])
    channel = np.arange(c)[:, None]
    pre = (channel * (hi * wi) + in_flat[None, :]).ravel()
    post = (channel * (ho * wo) + out_flat[None, :]).ravel()
    if not average:
        weight = np.ones(len(pre))
    elif count_include_pad:
        weight = np.full(len(pre), 1.0 / (kernel_size[0] * kernel_size[1]))
    else:
        counts = np.bincount(out_flat, minlength=ho * wo)
        weight = np.tile(1.0 / counts[out_flat], c)
    return make_connections(pre, post, weight, c * hi * wi, c * ho * wo)


def one_to_one(n, weight=1.0):
    """Neuron ``i`` to neuron ``i`` (the two inputs of a residual ``add``)."""
    return make_connections(np.arange(n), np.arange(n), np.full(n, weight), n, n)


def channel_broadcast(out_shape):
    """Value ``c`` of a per-channel source (``C`` neurons) to every neuron of channel ``c`` of a
    ``(C, H, W)`` map (the gate of a squeeze-and-excitation block)."""
    n = int(np.prod(out_shape))
    post = np.arange(n)
    return make_connections(post // (n // out_shape[0]), post, np.ones(n), out_shape[0], n)


def connections_for(layer, source_size=None):
    """The :class:`Connections` of every input of ``layer`` (a :class:`~brianconv.graph.Layer`).

    Returns
    -------
    list of Connections
        One per entry of ``layer.inputs``, in the same order.
    """
    p = layer.params
    if layer.op == "linear":
        return [linear(layer.weight, source_size)]
    if layer.op == "conv":
        return [conv2d(layer.weight, layer.in_shape, layer.out_shape, p["stride"], p["padding"],
                       p["dilation"], p["groups"])]
    if layer.op in ("avgpool", "maxpool"):
        return [pool2d(layer.in_shape, layer.out_shape, p["kernel_size"], p["stride"], p["padding"],
                       average=layer.op == "avgpool", count_include_pad=p.get("count_include_pad", True))]
    if layer.op == "add":
        return [one_to_one(layer.size), one_to_one(layer.size)]
    if layer.op == "mul":
        second = one_to_one(layer.size) if p["second_size"] == layer.size else channel_broadcast(layer.out_shape)
        return [one_to_one(layer.size), second]
    raise ConversionError(f"Layer {layer.name!r} of type {layer.op!r} has no synapses.")


def compose(first, second):
    """The single projection equal to ``second`` applied after ``first`` (both linear).

    Used to fold linear layers without neurons of their own (average pooling) into the next
    projection: ``compose(pool, conv).apply(x) == conv.apply(pool.apply(x))``.
    """
    from scipy import sparse

    if first.n_post != second.n_pre:
        raise ConversionError(f"Cannot compose projections of sizes {first.n_pre}->{first.n_post} and "
                              f"{second.n_pre}->{second.n_post}.")
    a = sparse.csr_matrix((first.weight, (first.post, first.pre)), shape=(first.n_post, first.n_pre))
    b = sparse.csr_matrix((second.weight, (second.post, second.pre)), shape=(second.n_post, second.n_pre))
    product = (b @ a).tocoo()
    order = np.lexsort((product.row, product.col))
    return make_connections(product.col[order], product.row[order], product.data[order], first.n_pre, second.n_post)
