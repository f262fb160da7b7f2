"""Keras callbacks for watching a Siamese network learn."""

from keras_siamese.callbacks.embedding_plot import EmbeddingPlot, pca_project

__all__ = ["EmbeddingPlot", "pca_project"]
