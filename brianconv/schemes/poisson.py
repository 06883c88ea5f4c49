"""Counter-based random numbers for the Poisson input of scheme ``"rate"`` (``input="poisson"``).

:func:`uniform_hash` maps ``(seed, image, neuron, step)`` to a uniform number in [0, 1) with the
SplitMix64 finaliser, in C++, Cython and numpy with bit-identical results: no Brian2 random state
is involved, so the spike trains are identical on every device, for every batch size and number
of workers, and in every run with the same seed.
"""

import numpy as np
from brian2 import check_units, declare_types, implementation

__all__ = ["uniform_hash"]

_GOLDEN = 0x9E3779B97F4A7C15
_CPP_HASH = """
static inline uint64_t _brianconv_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static inline double uniform_hash(int32_t seed, int32_t image, int32_t neuron, int32_t step) {
    const uint64_t g = 0x9E3779B97F4A7C15ULL;
    uint64_t z = _brianconv_mix((uint64_t)(uint32_t)seed + g);
    z = _brianconv_mix(z ^ ((uint64_t)(uint32_t)image + g));
    z = _brianconv_mix(z ^ ((uint64_t)(uint32_t)neuron + g));
    z = _brianconv_mix(z ^ ((uint64_t)(uint32_t)step + g));
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}
"""
_CYTHON_HASH = """
from libc.stdint cimport uint64_t, uint32_t
cdef inline uint64_t _brianconv_mix(uint64_t z):
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)

cdef inline double uniform_hash(int seed, int image, int neuron, int step):
    cdef uint64_t g = <uint64_t>0x9E3779B97F4A7C15ULL
    cdef uint64_t z = _brianconv_mix(<uint64_t><uint32_t>seed + g)
    z = _brianconv_mix(z ^ (<uint64_t><uint32_t>image + g))
    z = _brianconv_mix(z ^ (<uint64_t><uint32_t>neuron + g))
    z = _brianconv_mix(z ^ (<uint64_t><uint32_t>step + g))
    return <double>(z >> 11) * (1.0 / 9007199254740992.0)
"""


def _np_mix(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@implementation("cpp", _CPP_HASH)
@implementation("cython", _CYTHON_HASH)
@declare_types(seed="integer", image="integer", neuron="integer", step="integer", result="float")
@check_units(seed=1, image=1, neuron=1, step=1, result=1)
def uniform_hash(seed, image, neuron, step):
    """A uniform number in [0, 1) that depends only on its four integer arguments.

    SplitMix64's finaliser chained over ``(seed, image, neuron, step)``; the C++, Cython and
    numpy implementations give bit-identical results (53-bit resolution).

    >>> float(uniform_hash(0, 0, 0, 0)) == float(uniform_hash(0, 0, 0, 0))
    True
    """
    def word(value):
        return np.asarray(value, dtype=np.int64).astype(np.uint32).astype(np.uint64) + np.uint64(_GOLDEN)

    with np.errstate(over="ignore"):
        z = _np_mix(word(seed))
        for value in (image, neuron, step):
            z = _np_mix(z ^ word(value))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
