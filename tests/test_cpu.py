"""Run as a CPU without AVX-512 (``PIANOLAB_CPU=avx2``, set with the rest of the Makefile's ``AVX2_ENV``):
each library really takes the path such a CPU takes, so the suite's tolerances are tested on both."""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(os.environ.get("PIANOLAB_CPU") != "avx2",
                                reason="only when run as a CPU without AVX-512 (make test-unit-avx2)")


def test_numpy_dispatches_no_avx512_kernel():
    from numpy._core._multiarray_umath import __cpu_features__ as on  # numpy 2: what dispatch may use

    assert not on.get("X86_V4") and not on.get("AVX512_SKX") and not on.get("AVX512_ICL")
    assert on.get("AVX2") and on.get("FMA3")  # and the AVX2 kernels are still used


def test_numba_compiles_for_haswell():
    from numba.core.registry import cpu_target

    # the target every kernel is compiled for, and the key of numba's on-disk cache
    _, cpu, features = cpu_target.target_context.codegen().magic_tuple()
    assert cpu == "haswell" and "+avx2" in features.split(",") and "avx512" not in features


def test_tensorflow_runs_without_onednn():
    """Without oneDNN, TensorFlow's CPU kernels have no gradient for a dilated ``tf.nn.conv1d``: the
    error chapter 4 once hit on such a CPU. Keras (``tf.nn.convolution``) and the chapter take another op."""
    import tensorflow as tf

    x, w = tf.ones((1, 8, 1)), tf.Variable(tf.ones((2, 1, 1)))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(tf.nn.conv1d(x, w, 1, "VALID", dilations=2))
    with pytest.raises(tf.errors.InvalidArgumentError, match="dilation rates larger than 1"):
        tape.gradient(y, w)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(tf.nn.convolution(x, w, padding="VALID", dilations=2))
    assert float(tf.reduce_sum(tape.gradient(y, w))) == 12.0  # 6 outputs, each tap sees a 1
