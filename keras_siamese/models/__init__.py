"""Self-supervised models: an encoder with the heads of a published method."""

from keras_siamese.models.barlow_twins import BarlowTwins
from keras_siamese.models.byol import BYOL
from keras_siamese.models.simclr import SimCLR
from keras_siamese.models.simsiam import SimSiam
from keras_siamese.models.vicreg import VICReg

__all__ = ["BYOL", "BarlowTwins", "SimCLR", "SimSiam", "VICReg"]
