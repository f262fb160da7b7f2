"""Data: pair, triplet and class-balanced datasets, and fixed pairs.

The datasets are `keras.utils.PyDataset`s that draw fresh random batches every
epoch from precomputed per-class indices, gathering only the rows of each
batch, so they work on arrays larger than memory (`np.memmap`) and keep pace
with the accelerator. Batch `i` of epoch `e` depends only on
`(seed, e, i)`: results do not change with the number of workers or with
multiprocessing. Besides arrays they read files, only those of each batch
(`from_directory` reads a folder of images), and augment batches with a
seed derived from `(seed, e, i)`. On TensorFlow, `fit` reads them through their own `tf.data`
pipeline (`as_tf_dataset()`), which yields the same batches.
"""

from keras_siamese.data.base import SampledDataset
from keras_siamese.data.class_balanced_dataset import ClassBalancedDataset
from keras_siamese.data.images import ImageLoader
from keras_siamese.data.pair_dataset import PairDataset
from keras_siamese.data.pairs import make_pairs
from keras_siamese.data.triplet_dataset import TripletDataset

__all__ = [
    "ClassBalancedDataset",
    "ImageLoader",
    "PairDataset",
    "SampledDataset",
    "TripletDataset",
    "make_pairs",
]
