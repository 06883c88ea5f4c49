"""What an AMOS network computes, in numpy (:meth:`AMOS.reference`), and decoding of its spikes.

See :mod:`brianconv.schemes.amos`.
"""

import numpy as np

__all__ = ["sent_values"]


def _reference_values(graph, units, x):
    """What every layer sends for the images ``x``: torch float64 for the linear parts, the units for the gates."""
    def sent(layer, pre, inputs):
        if layer.op == "mul":  # the product unit of the two inputs (Eq. 7)
            return units[layer.name](np.stack([inputs[0].reshape((-1,) + tuple(layer.out_shape)).numpy(),
                                               layer.broadcast(inputs[1]).numpy()], axis=-1))
        z = pre.numpy()
        return units[layer.name](z) if layer.name in units else z

    return graph.forward(x, record=True, activation=sent)[1]


def _has_units(layer):
    """Whether ``layer`` sends through AMOS units (its activation's, a product's or a residual sum's)."""
    return layer.op in ("mul", "add") or (layer.activation is not None and layer.op != "cat")


def sent_values(result, description, population, unit, n_images):
    """What an AMOS population sends, ``y = sum_k d_k z_k`` per unit, shape (n_images, n_units), from its
    monitored spikes (``simulate(..., spikes=[population])``), and the spike count of every neuron and image.

    The simulation attributes each spike to the image its neuron evaluated
    (:meth:`AMOS.evaluation_lags`), so every image is complete, pipelined or not.
    """
    image, neuron, _ = result.spikes[population]
    size = description.population(population).size
    n = size // unit.K
    image = np.asarray(image)
    keep = (image >= 0) & (image < n_images)
    image, neuron = image[keep], np.asarray(neuron)[keep]
    counts = np.zeros((n_images, size), dtype=np.int64)
    np.add.at(counts, (image, neuron), 1)
    values = np.zeros((n_images, n))
    np.add.at(values, (image, neuron % n), unit.d[neuron // n])
    return values, counts
