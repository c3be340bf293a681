"""Run by spleeter 2.4.2's environment (TensorFlow 2.12.1), not by ours: writes the small
TensorFlow checkpoint that tests/test_tfbundle.py reads without TensorFlow.

    python tests/make_tf_bundle.py tests/data/tf_bundle

Saves a few variables of several dtypes and shapes with tf.compat.v1's Saver, as spleeter's
Estimator saves its checkpoints (model.index, model.data-00000-of-00001), and writes the same
values to values.npz beside them, as TensorFlow read them back.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def values(rng):
    return {
        "conv2d/kernel": rng.standard_normal((5, 5, 2, 3)).astype(np.float32),
        "batch_normalization/moving_variance": rng.uniform(0.5, 1.5, 3).astype(np.float32),
        "scalar": np.float32(2.5),
        "counts": np.arange(-3, 9, dtype=np.int32).reshape(3, 4),
        "global_step": np.int64(123456789012),
        "wide": rng.standard_normal((3, 50)).astype(np.float64),
        "flags": np.array([True, False, True]),
        "half": rng.standard_normal(5).astype(np.float16),
        "bytes": np.arange(200, 256, dtype=np.uint8),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def main(folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = values(np.random.default_rng(17))
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.get_variable(name, initializer=tf.constant(value)) for name, value in arrays.items()]
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(variables).save(session, str(folder / "model"), write_meta_graph=False)
    (folder / "checkpoint").unlink(missing_ok=True)  # the Saver's note of its latest save: not needed
    reader = tf.train.load_checkpoint(str(folder / "model"))
    np.savez(folder / "values.npz", **{name: reader.get_tensor(name) for name in arrays})


if __name__ == "__main__":
    main(*sys.argv[1:])
